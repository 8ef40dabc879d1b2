"""Data-parallel PPO: game turns/s and update samples/s with 1, 2, ... processes.

    python -m bench.replicas                       # processes 1 and 2, the default ppo games
    python -m bench.replicas --processes 1,2,4 --iterations 3

Each variant runs the real ppo stage (`python -m zorkppo.launch stages.ppo`, torchrun for
more than one process) in a temporary folder holding the project's code, params.yaml
with `processes` and the ppo sizes set, the ROM, and the quantized model from
models/quantized (run `dvc repro quantize` first). Games and global minibatch are the same
for every variant: N processes each play num_envs / N games and take minibatch / N rows.
Rates are every replica's turns (samples) over rank 0's wall time, per iteration; the
first iteration is reported apart (it pays the start-up). On a CPU the processes share
the cores: 2 processes on 2 cores are not 2 GPUs (each replica gets 1 torch thread, as
torchrun sets it, against 2 for the single process).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import ROOT, rom_path, table, write_report


def prepare(folder: Path, processes: int, args) -> None:
    for name in ("zorkppo", "stages"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "models/quantized", folder / "models/quantized")
    (folder / "data/roms").mkdir(parents=True)
    shutil.copyfile(args.rom, folder / "data/roms/zork1.z5")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["processes"] = processes
    params["ppo"].update(
        num_envs=args.games,
        rollout_turns=args.turns,
        iterations=args.iterations,
        curve={**params["ppo"]["curve"], "every": 0},
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def run_variant(processes: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        folder = Path(tmp)
        prepare(folder, processes, args)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "zorkppo.launch", "stages.ppo"],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(folder)},
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if result.returncode:
            raise SystemExit(f"processes={processes} failed:\n{result.stdout}\n{result.stderr}")
        rows = (folder / "reports/timing/ppo_env_steps_per_s.tsv").read_text().splitlines()[1:]
    timing = [[float(x) for x in row.split("\t")] for row in rows]
    later = timing[1:] or timing
    return {
        "processes": processes,
        "games_per_process": args.games // processes,
        "first_turns_per_s": timing[0][1],
        "turns_per_s": statistics.median(t[1] for t in later),
        "first_update_samples_per_s": timing[0][2],
        "update_samples_per_s": statistics.median(t[2] for t in later),
        "stage_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--games", type=int, default=8, help="ppo.num_envs (all processes)")
    parser.add_argument("--turns", type=int, default=8, help="ppo.rollout_turns")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rom", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.rom = rom_path(args.rom)
    if not (ROOT / "models/quantized").is_dir():
        raise SystemExit("models/quantized missing: run `dvc repro quantize` first")
    results = [run_variant(int(n), args) for n in args.processes.split(",")]
    base = results[0]
    for r in results:
        r["turns_speedup"] = r["turns_per_s"] / base["turns_per_s"]
        r["update_speedup"] = r["update_samples_per_s"] / base["update_samples_per_s"]
    table(results, title="PPO data-parallel replicas (rates: median over iterations 2+)")
    path = write_report(
        "replicas", {"variants": results}, args, Path(args.out) if args.out else None
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
