"""Finished runs side by side: the figures a paired study reads (docs/journal).

    python -m zorkppo.compare /tmp/control /tmp/arm            # PPO, "past 40"
    python -m zorkppo.compare /tmp/control /tmp/arm --agent sft --above 44

Each argument is a project workspace where `dvc repro evaluate` ran. From it:
- reports/eval/metrics.json: the agent's greedy and sampled final score on the evaluation's
  game seed and on each unseen game seed, and the unseen seeds' sampled mean;
- reports/eval/episodes.parquet, the agent's sampled episodes on every game seed: how many
  died, died to the grue, lit the lamp, typed `put down all` (and in how many turns), and
  scored above `--above`;
- data/rollouts/, when there: PPO's training episodes ended, of them died, and the turns
  that stood above `--above`.
Printed as one markdown table, a column per run. The grue, the lamp and `put down all` are
Zork's: this reads what happened, nothing in training uses it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from zorkppo import paths
from zorkppo.errors import UserError, exit_on_user_error
from zorkppo.evaluate import EPISODES
from zorkppo.records import ROLLOUTS, read_table

LAMP_ON = re.compile(r"\b(?:turn on|light)\b.*\b(?:lamp|lantern)\b")
DROP_ALL = {"put down all", "drop all"}


def score_figures(metrics: dict, agent: str) -> dict[str, str]:
    """Greedy and sampled final scores of `agent` on the evaluation's seed and the unseen ones."""
    if agent not in metrics["agents"]:
        raise UserError(f"agent {agent!r} is not in this evaluation: pick one of eval.agents")
    seed = metrics["protocol"]["game_seed"]
    ours = metrics["agents"][agent]
    figures = {
        f"seed {seed} greedy": f"{ours['greedy']['score_mean']:.0f}",
        f"seed {seed} sampled": f"{ours['sample']['score_mean']:.1f} ± {ours['sample']['score_std']:.1f}",
    }
    unseen = {int(s): runs[agent] for s, runs in metrics.get("game_seeds", {}).items()}
    for s, runs in sorted(unseen.items()):
        figures[f"seed {s} greedy / sampled"] = (
            f"{runs['greedy']['score_mean']:.0f} / {runs['sample']['score_mean']:.1f}"
        )
    if unseen:
        means = [runs["sample"]["score_mean"] for runs in unseen.values()]
        figures["unseen sampled mean"] = f"{sum(means) / len(means):.1f}"
    return figures


def episode_figures(rows: pd.DataFrame, agent: str, above: int) -> dict[str, str]:
    """Counts over `agent`'s sampled evaluation episodes (every game seed), "k / episodes"."""
    ours = rows[(rows.agent == agent) & (rows.decoding == "sample")].sort_values("step")
    episodes = [g for _, g in ours.groupby(["game_seed", "episode"])]
    last = [g.iloc[-1] for g in episodes]

    def share(count: int) -> str:
        return f"{count} / {len(episodes)}"

    return {
        "evaluation episodes died": share(sum(bool(r.died) for r in last)),
        "of them to the grue": share(sum(bool(r.died) and "grue" in r.reply.lower() for r in last)),
        "lit the lamp": share(sum(g.action.str.contains(LAMP_ON).any() for g in episodes)),
        "typed `put down all`": share(sum(g.action.isin(DROP_ALL).any() for g in episodes)),
        "turns of `put down all`": f"{int(ours.action.isin(DROP_ALL).sum())} / {len(ours)}",
        f"scored above {above}": share(sum(int(g.score.max()) > above for g in episodes)),
    }


def training_figures(rollouts: pd.DataFrame, above: int) -> dict[str, str]:
    """PPO's training games: episodes that ended, those that died, turns above `above`."""
    ended = rollouts[rollouts.done]
    return {
        "training episodes ended / died": f"{len(ended)} / {int((ended.death != 0).sum())}",
        f"training turns above {above}": str(int((rollouts.game_score > above).sum())),
    }


def run_figures(workspace: Path, agent: str, above: int) -> dict[str, str]:
    metrics_path = workspace / paths.EVAL_REPORTS / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(f"{metrics_path} not found: run `dvc repro evaluate` in {workspace}")
    figures = score_figures(json.loads(metrics_path.read_text()), agent)
    rows = read_table(workspace / paths.EVAL_REPORTS / "episodes.parquet", EPISODES).to_pandas()
    figures |= episode_figures(rows, agent, above)
    files = sorted((workspace / paths.ROLLOUTS).glob("iteration_*.parquet"))
    if files:
        rollouts = pd.concat([read_table(f, ROLLOUTS).to_pandas() for f in files])
        figures |= training_figures(rollouts, above)
    return figures


def markdown_table(columns: dict[str, dict[str, str]]) -> str:
    """One row per figure (in first-seen order), one column per run; "-" where a run lacks it."""
    names = list(dict.fromkeys(name for figures in columns.values() for name in figures))
    lines = [
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    lines += [
        f"| {name} | " + " | ".join(figures.get(name, "-") for figures in columns.values()) + " |"
        for name in names
    ]
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspaces", nargs="+", type=Path)
    parser.add_argument("--agent", default="ppo", help="the evaluated agent to read")
    parser.add_argument("--above", type=int, default=40, help="count scores above this")
    args = parser.parse_args(argv)
    names = [ws.name for ws in args.workspaces]
    columns = {
        (ws.name if names.count(ws.name) == 1 else str(ws)): run_figures(ws, args.agent, args.above)
        for ws in args.workspaces
    }
    print(markdown_table(columns))


if __name__ == "__main__":
    main()
