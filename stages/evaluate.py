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
    if ev.game_seeds:
        protocol_info.update(unseen_game_seeds=ev.game_seeds, seed_episodes=ev.seed_episodes)
    protocol = protocol_line(protocol_info, ev.agents)

    names = [agent_and_mode(agent)[0] for agent in ev.agents]
    require_agent_models(names)
    loaded: dict[str, object] = {}  # one model agent's policy at a time (a 7B model is large)

    def policy_of(name: str):
        if name in DECODINGS:
            return None
        if name not in loaded:  # `base` then `base:generate` reuse one
            loaded.clear()
            loaded[name] = load_agent_policy(name, params, device)
        return loaded[name]

    # Each agent on the protocol's game seed, then on each unseen one (eval.game_seeds):
    # agents outside, so that each model is loaded once.
    game_seeds = [params.game.seed, *ev.game_seeds]
    all_rows, transcripts = [], {}
    by_seed: dict[int, dict] = {game_seed: {} for game_seed in game_seeds}
    for agent, name in zip(ev.agents, names, strict=True):
        for game_seed in game_seeds:
            episodes = ev.episodes if game_seed == params.game.seed else ev.seed_episodes
            with VecGames(zork_factory(str(rom), game_seed), episodes) as games:
                walkthrough = games.call("walkthrough", only=[0])[0]
                metrics = by_seed[game_seed][agent] = {}
                for decoding in DECODINGS.get(name, ("greedy", "sample")):
                    started = time.perf_counter()
                    choose = agent_chooser(agent, params, decoding, walkthrough, policy_of(name))
                    count = episodes if decoding == "sample" else 1
                    rows = play(
                        agent, games, choose, count, ev.max_steps, params.prompt.history_turns
                    )
                    for row in rows:
                        row.update(decoding=decoding, game_seed=game_seed)
                    m = metrics[decoding] = summarize(rows)
                    all_rows += rows
                    if game_seed == params.game.seed:
                        transcripts |= transcripts_of(agent, decoding, rows, protocol)
                    print(
                        f"evaluate: game seed {game_seed:3d} {agent:14s} {decoding:6s} score "
                        f"{m['score_mean']:6.1f} ± {m['score_std']:5.1f} (highest reached "
                        f"{m['reached_mean']:.1f}, {m['episodes']} episodes) valid "
                        f"{m['valid_command_rate']:.0%} deaths {m['deaths']} "
                        f"({time.perf_counter() - started:.1f} s)"
                    )

    # Outputs only once every agent has played: a failure midway leaves the last run's intact.
    with atomic_dir(paths.EVAL_REPORTS / "transcripts") as folder:
        for name, text in transcripts.items():
            (folder / name).write_text(text)
    write_table(all_rows, paths.EVAL_REPORTS / "episodes.parquet", EPISODES)
    main_seed = by_seed.pop(params.game.seed)
    bar_chart(main_seed, paths.EVAL_REPORTS / "scores.png", protocol[:110] + "...")
    curves = ppo_curves()
    if curves:
        curve_chart(curves, paths.EVAL_REPORTS / "ppo_curve.png", "PPO training on Zork I")
    report = {"protocol": protocol_info, "agents": main_seed}
    if by_seed:  # the unseen game seeds, each agent on each
        report["game_seeds"] = {str(seed): agents for seed, agents in by_seed.items()}
    write_json(report, paths.EVAL_REPORTS / "metrics.json")


def transcripts_of(agent: str, decoding: str, rows: list[dict], protocol: str) -> dict:
    """The best and median episode of a run, as Markdown (a greedy run has one episode)."""
    return {
        f"{agent}_{decoding}_{which}.md": transcript_markdown(
            f"{agent} ({decoding})", which, episode, protocol
        )
        for which, episode in pick_episodes(rows).items()
        if not (decoding == "greedy" and which == "median")
    }


if __name__ == "__main__":
    main()
