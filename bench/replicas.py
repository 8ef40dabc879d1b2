"""Data-parallel SFT and PPO: update samples/s (and PPO game turns/s) with 1, 2, ... processes.

    python -m bench.replicas                       # processes 1 and 2; sft, then ppo
    python -m bench.replicas --stages ppo --processes 1,2,4 --iterations 3

SFT: the sft stage on the default trajectories and base model (models/base), `--sft-epochs`
epochs without stop checks; its rate is updates x sft.batch_size over the stage's time as
it prints it (loading and held-out scoring before and after included; every replica scores). PPO:
each variant runs the real ppo stage (`python -m zorkppo.launch stages.ppo`, torchrun for
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


def prepare(folder: Path, stage: str, processes: int, args) -> None:
    for name in ("zorkppo", "stages"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "data/roms").mkdir(parents=True)
    shutil.copyfile(args.rom, folder / "data/roms/zork1.z5")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["processes"] = processes
    if stage == "sft":
        shutil.copytree(ROOT / "models/base", folder / "models/base")
        shutil.copyfile(ROOT / "data/trajectories.parquet", folder / "data/trajectories.parquet")
        params["sft"].update(epochs=args.sft_epochs, check_every=0)
    else:
        shutil.copytree(ROOT / "models/quantized", folder / "models/quantized")
    params["ppo"].update(
        num_envs=args.games,
        rollout_turns=args.turns,
        iterations=args.iterations,
        curve={**params["ppo"]["curve"], "every": 0},
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def run_variant(stage: str, processes: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        folder = Path(tmp)
        prepare(folder, stage, processes, args)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "zorkppo.launch", f"stages.{stage}"],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(folder)},
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if result.returncode:
            raise SystemExit(f"{stage} processes={processes}:\n{result.stdout}\n{result.stderr}")
        if stage == "sft":
            return sft_rates(result.stdout, processes, wall, folder)
        rows = (folder / "reports/timing/ppo_env_steps_per_s.tsv").read_text().splitlines()[1:]
    timing = [[float(x) for x in row.split("\t")] for row in rows]
    later = timing[1:] or timing
    return {
        "stage": "ppo",
        "processes": processes,
        "games_per_process": args.games // processes,
        "first_turns_per_s": timing[0][1],
        "turns_per_s": statistics.median(t[1] for t in later),
        "first_update_samples_per_s": timing[0][2],
        "update_samples_per_s": statistics.median(t[2] for t in later),
        "stage_wall_s": wall,
    }


def sft_rates(out: str, processes: int, wall: float, folder: Path) -> dict:
    line = next(x for x in out.splitlines() if " updates in " in x)  # "..., N updates in S s"
    updates, seconds = int(line.split(" updates in ")[0].split()[-1]), float(line.split()[-2])
    batch = yaml.safe_load((folder / "params.yaml").read_text())["sft"]["batch_size"]
    return {
        "stage": "sft",
        "processes": processes,
        "updates": updates,
        "update_samples_per_s": updates * batch / seconds,
        "stage_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="sft,ppo", help="comma-separated: sft, ppo")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--sft-epochs", type=int, default=3)
    parser.add_argument("--games", type=int, default=8, help="ppo.num_envs (all processes)")
    parser.add_argument("--turns", type=int, default=8, help="ppo.rollout_turns")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rom", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.rom = rom_path(args.rom)
    if not (ROOT / "models/quantized").is_dir():
        raise SystemExit("models/quantized missing: run `dvc repro quantize` first")
    results = []
    for stage in args.stages.split(","):
        variants = [run_variant(stage, int(n), args) for n in args.processes.split(",")]
        for r in variants:
            r["update_speedup"] = r["update_samples_per_s"] / variants[0]["update_samples_per_s"]
            if stage == "ppo":
                r["turns_speedup"] = r["turns_per_s"] / variants[0]["turns_per_s"]
        title = "SFT" if stage == "sft" else "PPO (rates: median over iterations 2+)"
        table(variants, title=f"{title}, data-parallel replicas")
        results += variants
    path = write_report(
        "replicas", {"variants": results}, args, Path(args.out) if args.out else None
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
