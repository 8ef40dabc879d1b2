"""Named experiments: a YAML file of params overrides, run as a DVC experiment and snapshot.

    python -m zorkppo.experiment experiments/no-walkthrough.yaml      # run, snapshot, README
    python -m zorkppo.experiment experiments/no-walkthrough.yaml --flags   # the -S flags only
    python -m zorkppo.experiment experiments/no-walkthrough.yaml --seed 1  # one run seed only

An experiment file holds its `name`, the `params` it overrides (nested as in params.yaml),
and optionally `seeds`: the run seeds (`seed`) it is run with, one DVC experiment each. The
overrides are checked against the typed params before anything runs, so a typo fails at
once. Each run is `dvc exp run -n NAME-seed-N -S key=value ...` in the workspace; its results
(metrics, learning curve, charts, the params it ran with, and run.json: commit, seconds,
each stage's seconds, command) are then copied into reports/NAME/seed-N/, and README's
`results:NAME` section is rendered from every seed there (zorkppo.results_table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from zorkppo import paths
from zorkppo.config import PARAMS_FILE, Params, parse_params
from zorkppo.errors import UserError, exit_on_user_error

# What a run leaves in the workspace that its snapshot keeps.
SNAPSHOT_FILES = (
    paths.EVAL_REPORTS / "metrics.json",
    paths.EVAL_REPORTS / "scores.png",
    paths.PPO_CURVE,
    paths.PPO_CURVE_PNG,
    PARAMS_FILE,
)


@dataclass(frozen=True)
class Experiment:
    name: str
    overrides: dict  # dotted key -> value
    seeds: tuple[int, ...]
    params: Params  # params.yaml with the overrides (the first seed's)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"ppo": {"kl": {"up": 1.5}}} -> {"ppo.kl.up": 1.5}"""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_overrides(tree: dict, overrides: dict) -> dict:
    """A copy of `tree` (nested params) with dotted-key overrides written in."""
    merged = json.loads(json.dumps(tree))
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = merged
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return merged


def load_experiment(path: str | Path, params_path: str | Path = PARAMS_FILE) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiment file {path} not found: see experiments/ for the ones there")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"name", "params", "seeds"}
    if unknown or "name" not in spec:
        raise UserError(
            f"{path}: needs `name` and `params` (and may have `seeds`), got {sorted(spec)}"
        )
    overrides = flatten(spec.get("params") or {})
    seeds = tuple(spec.get("seeds") or [yaml.safe_load(Path(params_path).read_text())["seed"]])
    base = yaml.safe_load(Path(params_path).read_text())
    merged = with_overrides(base, {**overrides, "seed": seeds[0]})
    return Experiment(
        spec["name"], overrides, seeds, parse_params(merged, f"{path} over {params_path}")
    )


def only_seeds(experiment: Experiment, seeds: list[int] | None) -> Experiment:
    """The experiment restricted to `seeds` (None: all of them); a seed it lacks is an error."""
    if not seeds:
        return experiment
    unknown = sorted(set(seeds) - set(experiment.seeds))
    if unknown:
        raise UserError(
            f"--seed {unknown[0]}: experiment {experiment.name} runs seeds "
            f"{list(experiment.seeds)}; pick one of them or add it to the file's `seeds`"
        )
    kept = tuple(seed for seed in experiment.seeds if seed in seeds)
    # params are the first seed's run: keep them so for the first seed kept
    return replace(
        experiment, seeds=kept, params=experiment.params.model_copy(update={"seed": kept[0]})
    )


def dvc_flags(overrides: dict) -> list[str]:
    """`-S key=value` for each override, the value in YAML flow style (lists as [a,b])."""
    flags = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").strip()
        flags += ["-S", f"{key}={text}"]
    return flags


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return done.stdout.strip() + ("+uncommitted changes" if dirty else "")


def torch_threads() -> int:
    """The threads torch runs the stages on here (they inherit this environment): PPO's
    figures depend on them (docs/reproducibility.md)."""
    import torch

    return torch.get_num_threads()


def snapshot(target: Path, run: dict) -> None:
    """The workspace's last run into `target`, with run.json (commit, seconds, stage seconds,
    command, torch threads)."""
    missing = [str(p) for p in SNAPSHOT_FILES if not p.is_file()]
    if missing:
        raise UserError(f"no run to snapshot: {', '.join(missing)} missing (run the experiment)")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for source in SNAPSHOT_FILES:
        shutil.copyfile(source, target / source.name)
    (target / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")


STAGE_LINE = re.compile(r"^Running stage '([^']+)':")


def stage_seconds(lines: list[tuple[float, str]], ended: float) -> dict[str, int]:
    """Each stage's wall seconds from dvc's output lines, each with the time it was read: a
    stage runs from its "Running stage 'NAME':" line to the next stage's, the last one to
    `ended`. A stage dvc found up to date prints no such line and is not listed."""
    starts = [(t, match[1]) for t, line in lines if (match := STAGE_LINE.match(line))]
    bounds = [t for t, _ in starts] + [ended]
    return {name: round(bounds[i + 1] - t) for i, (t, name) in enumerate(starts)}


def run_dvc(command: list[str]) -> tuple[int, dict[str, int]]:
    """`command` run with its output passed through as it comes; its exit status and the
    wall seconds of each stage it ran (stage_seconds)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the stages' lines when they happen
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append((time.perf_counter(), line))
    return process.returncode, stage_seconds(lines, time.perf_counter())


def run_experiment(experiment: Experiment, dvc: str = "dvc") -> None:
    from zorkppo.results_table import update_readme

    for seed in experiment.seeds:
        flags = dvc_flags({**experiment.overrides, "seed": seed})
        command = [dvc, "exp", "run", "-n", f"{experiment.name}-seed-{seed}", *flags]
        print("experiment:", shlex.join(command), flush=True)
        commit, started = git_commit(), time.perf_counter()
        returncode, stages = run_dvc(command)
        if returncode != 0:
            raise UserError(
                f"experiment {experiment.name} (seed {seed}) failed: see dvc's output above"
            )
        run = {"commit": commit, "seconds": round(time.perf_counter() - started),
               "command": shlex.join(command[1:]), "torch_threads": torch_threads(),
               "stage_seconds": stages}  # fmt: skip
        snapshot(paths.REPORTS / experiment.name / f"seed-{seed}", run)
        # its own section only: the workspace's reports/eval now hold this experiment's
        # run, not the default pipeline's that README's `results` section shows
        update_readme(Path("README.md"), only=f"results:{experiment.name}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", help="an experiment file (experiments/*.yaml)")
    parser.add_argument("--flags", action="store_true", help="print the dvc -S flags and stop")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable")
    parser.add_argument(
        "--seed", type=int, action="append",
        help="run only this run seed of the experiment's `seeds` (repeatable): seeds run "
        "apart, e.g. one per clone or machine, then their snapshots are gathered",
    )  # fmt: skip
    args = parser.parse_args(argv)
    experiment = only_seeds(load_experiment(args.experiment), args.seed)
    if args.flags:
        print(shlex.join(dvc_flags(experiment.overrides)))
        return
    run_experiment(experiment, args.dvc)


if __name__ == "__main__":
    main()
