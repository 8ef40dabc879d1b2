"""README's results table, generated from reports/eval/metrics.json (never typed by hand).

python -m zorkppo.results_table          # rewrite the table between the markers in README.md
python -m zorkppo.results_table --check  # exit 1 if README.md's table is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zorkppo.config import EVAL_AGENTS
from zorkppo.evaluate import protocol_line

START, END = "<!-- results:start -->", "<!-- results:end -->"
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
        protocol_line(metrics["protocol"]),
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


def replace_section(readme: str, table: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} section to fill")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", default="reports/eval/metrics.json")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument(
        "--check", action="store_true", help="only check that README.md is up to date"
    )
    args = parser.parse_args(argv)
    readme = Path(args.readme).read_text()
    updated = replace_section(readme, render(json.loads(Path(args.metrics).read_text())))
    if args.check:
        if updated != readme:
            print(
                f"{args.readme}: results table is out of date: run python -m zorkppo.results_table",
                file=sys.stderr,
            )
            return 1
        return 0
    Path(args.readme).write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
