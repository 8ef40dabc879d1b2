"""README's results tables, generated from metrics files (never typed by hand).

Sections between markers in README.md:
- `results`: the default run, reports/eval/metrics.json;
- `results:NAME`: an experiment (zorkppo.experiment), from its snapshots
  reports/NAME/seed-N/ (metrics.json, curve.tsv, run.json): one table for one seed; for
  several, each agent's mean over the seeds with the spread between them.

python -m zorkppo.results_table             # rewrite every section
python -m zorkppo.results_table --check     # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

from zorkppo import paths
from zorkppo.config import EVAL_AGENTS, agent_and_mode
from zorkppo.curve import parse_curve
from zorkppo.evaluate import protocol_line

DEFAULT_METRICS = paths.EVAL_REPORTS / "metrics.json"
COLUMNS = [
    "agent",
    "greedy: final score",
    "sampled: final score (mean ± std)",
    "sampled: highest score reached (mean)",
    "sampled: best final",
    "moves",
    "rooms",
    "valid commands",
    "deaths",
]


class WorkingTree:
    """Files as they are on disk."""

    def read(self, path: Path) -> str | None:
        return path.read_text() if path.is_file() else None

    def names(self, folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class Committed:
    """Files as a git revision holds them (paths from the repository's root)."""

    def __init__(self, repo: Path = Path("."), revision: str = "HEAD"):
        self.repo, self.revision = repo, revision

    def _git(self, *args) -> str | None:
        done = subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    def read(self, path: Path) -> str | None:
        return self._git("show", f"{self.revision}:{path.as_posix()}")

    def names(self, folder: Path) -> list[str]:
        listing = self._git("ls-tree", "--name-only", f"{self.revision}:{folder.as_posix()}")
        return sorted(listing.split()) if listing else []


def _order(agents) -> list[str]:
    """Baselines first, then the model agents in pipeline order (each in the protocol's mode,
    then in any other mode it was played in)."""
    return sorted(agents, key=lambda entry: (EVAL_AGENTS.index(agent_and_mode(entry)[0]), entry))


def render(metrics: dict) -> str:
    """One row per agent: the greedy episode's score, then the sampled episodes' figures
    (a deterministic agent, the walkthrough, has only the former and fills the rest from it)."""
    lines = [
        protocol_line(metrics["protocol"], metrics["agents"]),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for agent in _order(metrics["agents"]):
        runs = metrics["agents"][agent]
        greedy, sampled = runs.get("greedy"), runs.get("sample")
        m = sampled or greedy
        cells = [
            agent,
            f"{greedy['score_mean']:.0f}" if greedy else "-",
            f"{sampled['score_mean']:.1f} ± {sampled['score_std']:.1f}" if sampled else "-",
            f"{sampled['reached_mean']:.1f}" if sampled and "reached_mean" in sampled else "-",
            str(sampled["score_max"]) if sampled else "-",
            f"{m['moves_mean']:.0f}",
            f"{m['unique_locations_mean']:.1f}",
            f"{m['valid_command_rate']:.0%}",
            str(m["deaths"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_curve(points: list[dict], where: str) -> str:
    lines = [
        "",
        f"Learning curve (`{where}`): the PPO policy every few iterations, 1 greedy and the "
        "sampled episodes of `ppo.curve`, and the training episodes that ended in between.",
        "",
        "| PPO iteration | environment steps | greedy | sampled (mean ± std) | sampled max "
        "| deaths | training episodes (mean score) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in points:
        training = p["training_episode_score_mean"]
        lines.append(
            f"| {p['iteration']} | {p['env_steps']} | {float(p['greedy_score']):.0f} | "
            f"{float(p['sampled_score_mean']):.1f} ± {float(p['sampled_score_std']):.1f} | "
            f"{p['sampled_score_max']} | {p['sampled_deaths']} | "
            + (f"{p['training_episodes']} ({float(training):.1f})" if training else "0")
            + " |"
        )
    return "\n".join(lines)


def render_seed_curves(curves: dict[str, list[dict]], where: str) -> str:
    """The learning curves of several run seeds side by side, at the iterations all share."""
    by_seed = {seed: {int(p["iteration"]): p for p in points} for seed, points in curves.items()}
    shared = sorted(set.intersection(*(set(points) for points in by_seed.values())))
    names = ", ".join(by_seed)
    lines = [
        "",
        f"Learning curves (`{where}`): the PPO policy every few iterations, 1 greedy and the "
        f"sampled episodes of `ppo.curve`, for run seeds {names}.",
        "",
        f"| PPO iteration | environment steps | greedy ({names}) | sampled mean ({names}) "
        "| sampled, mean over the seeds |",
        "|---|---|---|---|---|",
    ]
    for iteration in shared:
        points = [seed_points[iteration] for seed_points in by_seed.values()]
        sampled = [float(p["sampled_score_mean"]) for p in points]
        lines.append(
            f"| {iteration} | {points[0]['env_steps']} | "
            + " / ".join(f"{float(p['greedy_score']):.0f}" for p in points)
            + " | "
            + " / ".join(f"{v:.1f}" for v in sampled)
            + f" | {statistics.fmean(sampled):.1f} |"
        )
    return "\n".join(lines)


def threads(n: int) -> str:
    return f"{n} torch thread" + ("s" if n != 1 else "")


def run_line(runs: dict[str, dict]) -> str:
    """Which commit each seed ran on (and was evaluated at, where its evaluation was re-run
    on the trained models after a fix), how long it took and on how many torch threads
    (PPO's figures depend on them), and a run's `note` if it has one
    (a run whose stages were run one by one says how). A run with a `warm_start` (the run
    whose collect data, SFT and quantized models it reused) trained only PPO on them, so
    the line no longer says the runs are from scratch."""
    parts = [
        f"seed {seed}: commit `{run['commit'][:7]}`"
        + (" with uncommitted changes" if "+" in run["commit"] else "")
        + (
            f", PPO and evaluation only, on the warm start of {run['warm_start']}"
            if "warm_start" in run
            else ""
        )
        + (f", evaluated at `{run['evaluated_at'][:7]}`" if "evaluated_at" in run else "")
        + f", {run['seconds'] / 60:.0f} min"
        + (f", {threads(run['torch_threads'])}" if "torch_threads" in run else "")
        + (f" ({run['note']})" if "note" in run else "")
        for seed, run in runs.items()
    ]
    scratch = "" if any("warm_start" in run for run in runs.values()) else "from scratch, "
    return f"Runs ({scratch}on a 2-core CPU): " + "; ".join(parts) + "."


def render_seeds(seeds: dict[str, dict]) -> str:
    """Each agent's figures as the mean over the run seeds (`seed`), and the spread between
    the seeds' means (the std of the per-seed means, which is what another seed would move)."""
    first = next(iter(seeds.values()))
    every_seed = dict(first["protocol"], seed=[int(seed) for seed in seeds])
    lines = [
        protocol_line(every_seed, first["agents"])
        + " Each figure is the mean over the run seeds, ± the std between the seeds' means.",
        "",
        "| agent | greedy: final score | sampled: final score | sampled: final score per seed "
        "| sampled: highest score reached | sampled: best final | deaths (all seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for agent in _order(first["agents"]):
        runs = [m["agents"][agent] for m in seeds.values()]
        greedy = [r["greedy"]["score_mean"] for r in runs if "greedy" in r]
        sampled = [r["sample"]["score_mean"] for r in runs if "sample" in r]
        reached = [
            r["sample"]["reached_mean"] for r in runs if "reached_mean" in r.get("sample", {})
        ]

        def spread(values, digits):
            if not values:
                return "-"
            std = statistics.pstdev(values) if len(values) > 1 else 0.0
            return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"

        cells = [
            agent,
            spread(greedy, 1),
            spread(sampled, 1),
            " / ".join(f"{v:.1f}" for v in sampled) or "-",
            spread(reached, 1),
            str(max((r["sample"]["score_max"] for r in runs if "sample" in r), default="-")),
            str(sum((r.get("sample") or r["greedy"])["deaths"] for r in runs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _score(runs: dict) -> float:
    """An agent's score on one game seed: its sampled mean, or its greedy episode's
    (the walkthrough replays deterministically)."""
    return (runs.get("sample") or runs["greedy"])["score_mean"]


def render_game_seeds(seeds: list[dict]) -> str:
    """Each agent's final score on the protocol's game seed and on each unseen one (sampled
    mean; the walkthrough's replay), averaged over the run seeds."""
    first = seeds[0]
    protocol = first["protocol"]
    unseen = [str(s) for s in protocol["unseen_game_seeds"]]
    lines = [
        "",
        f"On other game seeds (the game's randomness: thief, troll, grue): every agent also "
        f"played {protocol['seed_episodes']} sampled episodes on each game seed it never "
        "trained on (the walkthrough: its replay); final score, mean over the episodes"
        + (" and the run seeds" if len(seeds) > 1 else "")
        + ".",
        "",
        f"| agent | game seed {protocol['game_seed']} (training) | "
        + " | ".join(f"seed {s}" for s in unseen)
        + " | unseen seeds, mean |",
        "|---|---|" + "---|" * len(unseen) + "---|",
    ]
    for agent in _order(first["agents"]):
        main = statistics.fmean(_score(m["agents"][agent]) for m in seeds)
        per_seed = [
            statistics.fmean(_score(m["game_seeds"][s][agent]) for m in seeds) for s in unseen
        ]
        cells = [agent, f"{main:.1f}", *(f"{v:.1f}" for v in per_seed)]
        lines.append("| " + " | ".join(cells + [f"{statistics.fmean(per_seed):.1f}"]) + " |")
    return "\n".join(lines)


def render_experiment(name: str, source) -> str | None:
    """README's section for an experiment, from every seed's snapshot; None if it has none."""
    folder = paths.REPORTS / name
    seeds, runs, curves = {}, {}, {}
    for entry in source.names(folder):
        if not entry.startswith("seed-"):
            continue
        seed = entry.removeprefix("seed-")
        metrics = source.read(folder / entry / "metrics.json")
        if metrics is None:
            continue
        seeds[seed] = json.loads(metrics)
        runs[seed] = json.loads(source.read(folder / entry / "run.json") or "{}")
        curves[seed] = source.read(folder / entry / "curve.tsv")
    if not seeds:
        return None
    seeds = dict(sorted(seeds.items(), key=lambda item: int(item[0])))
    if len(seeds) == 1:
        (seed,) = seeds
        text = render(seeds[seed])
        if curves[seed]:
            text += "\n" + render_curve(
                parse_curve(curves[seed]), f"{folder}/seed-{seed}/curve.tsv"
            )
    else:
        text = render_seeds(seeds)
        if all(curves.values()):
            text += "\n" + render_seed_curves(
                {seed: parse_curve(curves[seed]) for seed in seeds}, f"{folder}/seed-N/curve.tsv"
            )
    if all("game_seeds" in m for m in seeds.values()):
        text += "\n" + render_game_seeds(list(seeds.values()))
    if all(runs.values()):
        text += "\n\n" + run_line({seed: runs[seed] for seed in seeds})
    return text


def sections(readme: str) -> list[str]:
    return re.findall(r"<!-- (results(?::[\w-]+)?):start -->", readme)


def updated_readme(readme: str, source=None, only: str | None = None) -> str:
    """`readme` with every results section (or only the one named `only`) rendered from
    `source` (default: the working tree; Committed() reads what git holds)."""
    source = source or WorkingTree()
    for section in sections(readme):
        if only is not None and section != only:
            continue
        if section == "results":
            metrics = source.read(DEFAULT_METRICS)
            table = None
            if metrics is not None:
                metrics = json.loads(metrics)
                table = render(metrics)
                if "game_seeds" in metrics:
                    table += "\n" + render_game_seeds([metrics])
        else:
            table = render_experiment(section.split(":", 1)[1], source)
        if table is not None:
            readme = replace_section(readme, table, section)
    return readme


def replace_section(readme: str, table: str, section: str = "results") -> str:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} section to fill")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def update_readme(path: Path = Path("README.md"), only: str | None = None) -> None:
    path.write_text(updated_readme(path.read_text(), only=only))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readme", default="README.md")
    parser.add_argument(
        "--check", action="store_true", help="only check that README.md is up to date"
    )
    args = parser.parse_args(argv)
    readme = Path(args.readme).read_text()
    updated = updated_readme(readme)
    if args.check:
        if updated != readme:
            print(
                f"{args.readme}: results tables are out of date: run python -m zorkppo.results_table",
                file=sys.stderr,
            )
            return 1
        return 0
    Path(args.readme).write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
