"""Stage `evaluate`: baselines and every model play Zork I under one protocol; reports and plots."""

from __future__ import annotations

import csv
import time

import torch

from zorkppo import paths
from zorkppo.config import params_from_cli
from zorkppo.envs import VecGames, zork_factory
from zorkppo.errors import exit_on_user_error
from zorkppo.evaluate import (
    EPISODES,
    bar_chart,
    curve_chart,
    load_agent_policy,
    pick_episodes,
    play_episodes,
    policy_chooser,
    random_chooser,
    require_agent_models,
    summarize,
    transcript_markdown,
    walkthrough_chooser,
)
from zorkppo.io import write_json
from zorkppo.model import resolve_device, seed_everything
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
    protocol = (
        f"Protocol: {ev.episodes} episodes of at most {ev.max_steps} steps per agent, game seed "
        f"{params.game.seed}, run seed {params.seed}, {ev.decoding} decoding ({ev.action_mode} mode), "
        f"model profile `{params.model.profile}`, walkthrough data in training: "
        f"{'yes' if walkthrough_data else 'no'}."
    )

    require_agent_models(ev.agents)
    all_rows, metrics, transcripts = [], {}, {}
    with VecGames(zork_factory(str(rom), params.game.seed), ev.episodes) as games:
        for agent in ev.agents:
            started = time.perf_counter()
            if agent == "random":
                choose = random_chooser(params.seed)
            elif agent == "walkthrough":
                choose = walkthrough_chooser(games.call("walkthrough", only=[0])[0])
            else:
                policy = load_agent_policy(agent, params, device)
                generator = (
                    None if ev.decoding == "greedy" else torch.Generator().manual_seed(params.seed)
                )
                choose = policy_chooser(
                    policy, policy.tokenizer, generator, ev.action_mode, ev.max_candidates
                )
            rows = play_episodes(agent, games, choose, ev.max_steps, params.prompt.history_turns)
            metrics[agent] = summarize(rows)
            all_rows += rows
            for which, episode in pick_episodes(rows).items():
                transcripts[f"{agent}_{which}.md"] = transcript_markdown(
                    agent, which, episode, protocol
                )
            m = metrics[agent]
            print(
                f"evaluate: {agent:12s} score {m['score_mean']:6.1f} ± {m['score_std']:5.1f} (max {m['score_max']}) "
                f"valid {m['valid_command_rate']:.0%} deaths {m['deaths']} ({time.perf_counter() - started:.1f} s)"
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
    protocol_info = {
        "episodes": ev.episodes,
        "max_steps": ev.max_steps,
        "game_seed": params.game.seed,
        "seed": params.seed,
        "decoding": ev.decoding,
        "action_mode": ev.action_mode,
        "model_profile": params.model.profile,
        "walkthrough_data_in_training": walkthrough_data,
    }
    write_json({"protocol": protocol_info, "agents": metrics}, paths.EVAL_REPORTS / "metrics.json")


if __name__ == "__main__":
    main()
