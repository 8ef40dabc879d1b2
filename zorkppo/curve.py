"""PPO's learning curve: every `ppo.curve.every` iterations the policy plays evaluation
episodes (the evaluate stage's protocol, in PPO's action mode) in games of its own.

Each point holds the greedy score, the sampled scores (mean, std, max) and the mean final
score of the training episodes that ended since the previous point, against the
environment steps PPO has taken. The sampled episodes reuse one seed at every point, so
two points differ by the policy, not by the dice.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import torch

from zorkppo.evaluate import play, policy_chooser, summarize
from zorkppo.plots import curve_chart
from zorkppo.records import atomic_path

COLUMNS = (
    "iteration",
    "env_steps",
    "greedy_score",
    "sampled_score_mean",
    "sampled_score_std",
    "sampled_score_max",
    "sampled_deaths",
    "training_episodes",
    "training_episode_score_mean",
)


def due(iteration: int, every: int, iterations: int) -> bool:
    """Points before training (iteration 0), every `every` iterations, and at the end."""
    return every > 0 and (iteration % every == 0 or iteration == iterations)


def curve_episodes(policy, games, cfg, history_turns: int, seed: int) -> dict[str, list[dict]]:
    """The rows (evaluate's table) of 1 greedy and `cfg.curve.episodes` sampled episodes
    played by the current policy, chosen as the evaluate stage chooses (`policy_chooser`)."""

    def rows(generator, episodes: int) -> list[dict]:
        choose = policy_chooser(policy, cfg.action_mode, cfg.max_candidates, generator, seed)
        return play("ppo", games, choose, episodes, cfg.curve.max_steps, history_turns)

    greedy = rows(None, 1)
    trained_temperature, policy.temperature = policy.temperature, cfg.curve.temperature
    try:
        sampled = rows(torch.Generator().manual_seed(seed), cfg.curve.episodes)
    finally:
        policy.temperature = trained_temperature
    return {"greedy": greedy, "sample": sampled}


def curve_point(
    policy, games, cfg, history_turns: int, seed: int, iteration: int, episode_scores: list[int]
) -> dict:
    """Play 1 greedy and `cfg.curve.episodes` sampled episodes with the current policy."""
    played = curve_episodes(policy, games, cfg, history_turns, seed)
    greedy, sampled = summarize(played["greedy"]), summarize(played["sample"])
    return {
        "iteration": iteration,
        "env_steps": iteration * cfg.num_envs * cfg.rollout_turns,
        "greedy_score": greedy["score_mean"],
        "sampled_score_mean": sampled["score_mean"],
        "sampled_score_std": sampled["score_std"],
        "sampled_score_max": sampled["score_max"],
        "sampled_deaths": sampled["deaths"],
        "training_episodes": len(episode_scores),
        "training_episode_score_mean": statistics.fmean(episode_scores) if episode_scores else "",
    }


def write_curve(points: list[dict], path: Path) -> None:
    """A TSV (dvc plots: x env_steps); only the header when the curve is off."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for point in points:
            writer.writerow({k: _fmt(point[k]) for k in COLUMNS})


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def read_curve(path: Path) -> list[dict]:
    return parse_curve(path.read_text()) if path.is_file() else []


def parse_curve(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


def curve_series(points: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The curve's lines for the plot: x is environment steps."""
    series = {
        "evaluation, sampled (mean)": "sampled_score_mean",
        "evaluation, greedy": "greedy_score",
        "training episodes (mean final score)": "training_episode_score_mean",
    }
    return {
        label: [(int(p["env_steps"]), float(p[key])) for p in points if p[key] != ""]
        for label, key in series.items()
    }


def plot_curve(points: list[dict], path: Path, title: str) -> None:
    curve_chart(curve_series(points), path, title, xlabel="environment steps (PPO turns)")
