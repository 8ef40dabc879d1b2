"""Stage `collect`: agents play Zork I; their turns go to data/trajectories.parquet."""

from __future__ import annotations

import time
from collections import defaultdict

from zorkppo import paths
from zorkppo.collect import collect_trajectories
from zorkppo.config import params_from_cli
from zorkppo.errors import UserError, exit_on_user_error
from zorkppo.io import write_json
from zorkppo.records import TRAJECTORIES, write_table
from zorkppo.rom import installed_rom


def summarize(rows: list[dict]) -> dict:
    """Per source: episodes, rows, final scores and rooms seen (deterministic, for metrics)."""
    by_episode: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_episode[row["episode_id"]].append(row)
    sources: dict[str, dict] = {}
    for episode in by_episode.values():
        s = sources.setdefault(
            episode[0]["source"], {"episodes": 0, "rows": 0, "scores": [], "locations": []}
        )
        s["episodes"] += 1
        s["rows"] += len(episode)
        s["scores"].append(episode[-1]["score"])
        s["locations"].append(len({r["location"] for r in episode}))
    return {
        source: {
            "episodes": s["episodes"],
            "rows": s["rows"],
            "mean_final_score": sum(s["scores"]) / len(s["scores"]),
            "max_final_score": max(s["scores"]),
            "mean_unique_locations": sum(s["locations"]) / len(s["locations"]),
        }
        for source, s in sources.items()
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    params = params_from_cli(__doc__, argv)
    rom = installed_rom(paths.ROM)

    started = time.perf_counter()
    rows, cache = collect_trajectories(
        rom,
        episodes_per_source=params.collect.episodes.model_dump(),
        max_steps=params.collect.max_steps,
        seed=params.seed,
        game_seed=params.game.seed,
        workers=params.collect.workers,
    )
    if not rows:
        raise UserError(
            "collect played no turns (every collect.episodes count is 0, or human play read "
            "nothing): set collect.episodes.walkthrough/random/explorer above 0"
        )
    write_table(rows, paths.TRAJECTORIES, TRAJECTORIES)
    summary = summarize(rows)
    write_json({"total_rows": len(rows), "sources": summary}, paths.COLLECT_REPORT)

    elapsed = time.perf_counter() - started
    for source, s in summary.items():
        print(
            f"collect: {source:12s} {s['episodes']:3d} episodes {s['rows']:5d} rows "
            f"mean score {s['mean_final_score']:.1f}"
        )
    print(
        f"collect: {len(rows)} rows in {elapsed:.1f} s; valid-action cache "
        f"{cache['hits']} hits / {cache['misses']} misses ({cache['hit_rate']:.1%})"
    )


if __name__ == "__main__":
    main()
