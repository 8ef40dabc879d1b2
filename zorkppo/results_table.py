"""README's results tables, generated from metrics files (never typed by hand).

Two sections: the default run (reports/eval/metrics.json) and the no-walkthrough headline
run, a snapshot in reports/no_walkthrough/ (its metrics, learning curve and params) taken
right after `make no-walkthrough` has run the experiment in the workspace.

python -m zorkppo.results_table             # rewrite both tables between their markers
python -m zorkppo.results_table --check     # exit 1 if README.md is out of date
python -m zorkppo.results_table --snapshot  # copy the workspace's run to reports/no_walkthrough/
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from zorkppo import paths
from zorkppo.config import EVAL_AGENTS
from zorkppo.curve import read_curve
from zorkppo.evaluate import protocol_line

SNAPSHOT = paths.REPORTS / "no_walkthrough"
# README section -> (metrics file, learning curve or None)
SECTIONS = {
    "results": (paths.EVAL_REPORTS / "metrics.json", None),
    "results:no-walkthrough": (SNAPSHOT / "metrics.json", SNAPSHOT / "curve.tsv"),
}
COLUMNS = [
    "agent",
    "greedy score",
    "sampled score (mean ± std)",
    "sampled max",
    "moves",
    "rooms",
    "valid commands",
    "deaths",
]


def render(metrics: dict) -> str:
    """One row per agent: the greedy episode's score, then the sampled episodes' figures
    (a deterministic agent, the walkthrough, has only the former and fills the rest from it)."""
    lines = [
        protocol_line(metrics["protocol"], metrics["agents"]),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    order = [a for a in EVAL_AGENTS if a in metrics["agents"]] + sorted(
        set(metrics["agents"]) - set(EVAL_AGENTS)
    )
    for agent in order:
        runs = metrics["agents"][agent]
        greedy, sampled = runs.get("greedy"), runs.get("sample")
        m = sampled or greedy
        cells = [
            agent,
            f"{greedy['score_mean']:.0f}" if greedy else "-",
            f"{sampled['score_mean']:.1f} ± {sampled['score_std']:.1f}" if sampled else "-",
            str(sampled["score_max"]) if sampled else "-",
            f"{m['moves_mean']:.0f}",
            f"{m['unique_locations_mean']:.1f}",
            f"{m['valid_command_rate']:.0%}",
            str(m["deaths"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_curve(points: list[dict]) -> str:
    lines = [
        "",
        "Learning curve (`reports/no_walkthrough/curve.tsv`, `learning_curve.png`): the PPO "
        "policy every few iterations, 1 greedy and the sampled episodes of `ppo.curve`, "
        "and the training episodes that ended in between.",
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


def snapshot(target: Path = SNAPSHOT) -> None:
    """The workspace's last run (metrics, curve, params) into `target`, for the README."""
    sources = [
        paths.EVAL_REPORTS / "metrics.json",
        paths.PPO_CURVE,
        paths.PPO_CURVE_PNG,
        paths.EVAL_REPORTS / "scores.png",
        Path("params.yaml"),
    ]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise SystemExit(f"no run to snapshot: {', '.join(missing)} missing (run the experiment)")
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copyfile(source, target / source.name)


def updated_readme(readme: str, sections=tuple(SECTIONS)) -> str:
    for section in sections:
        metrics, curve = SECTIONS[section]
        if not metrics.is_file():
            continue
        table = render(json.loads(metrics.read_text()))
        if curve is not None and curve.is_file():
            table += "\n" + render_curve(read_curve(curve))
        readme = replace_section(readme, table, section)
    return readme


def replace_section(readme: str, table: str, section: str = "results") -> str:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} section to fill")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readme", default="README.md")
    parser.add_argument(
        "--check", action="store_true", help="only check that README.md is up to date"
    )
    parser.add_argument(
        "--snapshot", action="store_true", help=f"first copy the workspace's run to {SNAPSHOT}/"
    )
    args = parser.parse_args(argv)
    sections = tuple(SECTIONS)
    if args.snapshot:  # the workspace holds the experiment now: leave the default table alone
        snapshot()
        sections = ("results:no-walkthrough",)
    readme = Path(args.readme).read_text()
    updated = updated_readme(readme, sections)
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
