"""Stage `evaluate`: baselines and every model play Zork I under one protocol; reports and plots."""

from __future__ import annotations

import csv
import time

from zorkppo import paths
from zorkppo.config import agent_and_mode, params_from_cli
from zorkppo.envs import VecGames, zork_factory
from zorkppo.errors import exit_on_user_error
from zorkppo.evaluate import (
    EPISODES,
    agent_chooser,
    load_agent_policy,
    pick_episodes,
    play,
    protocol_line,
    require_agent_models,
    summarize,
    transcript_markdown,
)
from zorkppo.io import write_json
from zorkppo.model import resolve_device, seed_everything
from zorkppo.plots import bar_chart, curve_chart
from zorkppo.records import atomic_dir, write_table
from zorkppo.rom import installed_rom


def ppo_curves() -> dict[str, list[tuple[int, float]]]:
    series = {}
    for name, label in (
        ("score/current", "game score (mean over games)"),
        ("reward/mean", "shaped reward per turn"),
    ):
        path = paths.PPO_REPORTS / "plots/metrics" / f"{name}.tsv"
        if path.is_file():
            with open(path) as f:
                series[label] = [
                    (int(r["step"]) + 1, float(r[name.split("/")[-1]]))
                    for r in csv.DictReader(f, delimiter="\t")
                ]
    return series


# Model agents play twice: greedy (one episode: game and policy are both deterministic, so
# more episodes would replay it) and sampled at eval.temperature (eval.episodes episodes).
# The random and explorer baselines sample (seeded); the walkthrough is deterministic.
DECODINGS = {"random": ("sample",), "explorer": ("sample",), "walkthrough": ("greedy",)}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    params = params_from_cli(__doc__, argv)
    ev = params.eval
    rom = installed_rom(paths.ROM)
    seed_everything(params.seed)
    device = resolve_device(params.model.device)
    walkthrough_data = (
        "walkthrough" in params.sft.sources and params.collect.episodes.walkthrough > 0
    )
    protocol_info = {
        "episodes": ev.episodes,
        "greedy_episodes": 1,
        "max_steps": ev.max_steps,
        "game_seed": params.game.seed,
        "seed": params.seed,
        "temperature": ev.temperature,
        "action_mode": ev.action_mode,
        "model_profile": params.model.profile,
        "walkthrough_data_in_training": walkthrough_data,
    }
    protocol = protocol_line(protocol_info, ev.agents)

    names = [agent_and_mode(agent)[0] for agent in ev.agents]
    require_agent_models(names)
    all_rows, metrics, transcripts, policies = [], {}, {}, {}
    with VecGames(zork_factory(str(rom), params.game.seed), ev.episodes) as games:
        walkthrough = games.call("walkthrough", only=[0])[0]
        for agent, name in zip(ev.agents, names, strict=True):
            if name not in DECODINGS and name not in policies:  # `base` and `base:generate`
                policies[name] = load_agent_policy(name, params, device)
            metrics[agent] = {}
            for decoding in DECODINGS.get(name, ("greedy", "sample")):
                started = time.perf_counter()
                choose = agent_chooser(agent, params, decoding, walkthrough, policies.get(name))
                episodes = ev.episodes if decoding == "sample" else 1
                rows = play(
                    agent, games, choose, episodes, ev.max_steps, params.prompt.history_turns
                )
                for row in rows:
                    row["decoding"] = decoding
                m = metrics[agent][decoding] = summarize(rows)
                all_rows += rows
                for which, episode in pick_episodes(rows).items():
                    if decoding == "greedy" and which == "median":
                        continue  # one greedy episode: best and median are the same game
                    transcripts[f"{agent}_{decoding}_{which}.md"] = transcript_markdown(
                        f"{agent} ({decoding})", which, episode, protocol
                    )
                print(
                    f"evaluate: {agent:12s} {decoding:6s} score {m['score_mean']:6.1f} ± "
                    f"{m['score_std']:5.1f} (max {m['score_max']}, {m['episodes']} episodes) "
                    f"valid {m['valid_command_rate']:.0%} deaths {m['deaths']} "
                    f"({time.perf_counter() - started:.1f} s)"
                )

    # Outputs only once every agent has played: a failure midway leaves the last run's intact.
    with atomic_dir(paths.EVAL_REPORTS / "transcripts") as folder:
        for name, text in transcripts.items():
            (folder / name).write_text(text)
    write_table(all_rows, paths.EVAL_REPORTS / "episodes.parquet", EPISODES)
    bar_chart(metrics, paths.EVAL_REPORTS / "scores.png", protocol[:110] + "...")
    curves = ppo_curves()
    if curves:
        curve_chart(curves, paths.EVAL_REPORTS / "ppo_curve.png", "PPO training on Zork I")
    write_json({"protocol": protocol_info, "agents": metrics}, paths.EVAL_REPORTS / "metrics.json")


if __name__ == "__main__":
    main()
