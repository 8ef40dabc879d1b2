"""Wall time per stage of the tiny default pipeline, from scratch, in a temporary copy.

    python -m bench.pipeline                 # every dvc.yaml stage with `dvc repro -s -f <stage>`
    python -m bench.pipeline --method python # run each stage's cmd directly (no DVC)
    python -m bench.pipeline --experiment experiments/smol-no-walkthrough.yaml --timeout 7200 \
        --target-minutes 120                 # an experiment's params (one seed), from scratch:
                                             # reports/bench/pipeline_<name>.json

The copy holds what a fresh checkout would (tracked + untracked-but-not-ignored files, as
`git ls-files` lists them) minus .git, data, models, reports, bench and dvc.lock, plus the
empty data/ models/ reports/ placeholders; it becomes its own git repository with one
commit (dvclive, used by sft and ppo, fails in a repository without one). The ROM reaches the
`rom` stage through $ZORK_ROM, as `make repro` passes it. Stages run in dvc.yaml order
(which is topological), each after the ones it depends on, with the project's .venv first
on PATH. A module in stages/ that is not a dvc.yaml stage (none at present; every stage
of the README's pipeline is) runs afterwards with `python -m stages.<name>` and is
reported separately (`--extra none` skips it).

Target: the whole default pipeline in <= 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import ROOT, rom_path, table, write_report

PIPELINE_ORDER = ("rom", "collect", "base", "sft", "quantize", "ppo", "evaluate")  # README
EXCLUDE_TOP = {".git", ".venv", "data", "models", "reports", "bench", "dvc.lock"}
PLACEHOLDERS = ("data/.gitkeep", "data/.gitignore", "models/.gitkeep", "reports/.gitkeep")


def project_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        files = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    keep = [f for f in files if f.split("/", 1)[0] not in EXCLUDE_TOP and "__pycache__" not in f]
    return keep + [f for f in PLACEHOLDERS if (ROOT / f).is_file()]


def make_copy(dest: Path) -> int:
    files = project_files()
    for f in files:
        src = ROOT / f
        if not src.is_file():  # deleted in the work tree but still in the index
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)
    for d in ("data", "models", "reports"):
        (dest / d).mkdir(exist_ok=True)
    # its own repository with one commit: dvclive (sft, ppo) refuses a repository with no commit
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run(
        [*git, "commit", "-q", "--no-gpg-sign", "-m", "bench copy"], cwd=dest, check=True
    )
    return len(files)


def dvc_stages(project: Path) -> list[tuple[str, str]]:
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    return [(name, stage["cmd"]) for name, stage in spec.get("stages", {}).items()]


def run_stage(
    name: str, command: list[str] | str, cwd: Path, env: dict, timeout: int, log
) -> tuple[float, int, str]:
    """Run one stage in its own process group (killed whole on timeout or Ctrl-C)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        shell=isinstance(command, str), start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        rc, output = 124, f"{output}\ntimed out after {timeout} s"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    seconds = time.perf_counter() - started
    log.write(f"$ {command}\n{output}\n[rc {rc}, {seconds:.1f} s]\n\n")
    log.flush()
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    own = [ln for ln in lines if ln.startswith(f"{name}:")]  # the stage's own summary line
    last = own or [ln for ln in lines if "Warning" not in ln and "warn(" not in ln]
    return seconds, rc, (last[-1][:120] if last else "")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rom", default=None)
    parser.add_argument("--method", choices=["dvc", "python"], default="dvc")
    parser.add_argument(
        "--stages", default=None, help="comma-separated subset of dvc.yaml stages (default all)"
    )
    parser.add_argument(
        "--extra",
        default="auto",
        help="'auto' (README stages missing from dvc.yaml), 'none', or names",
    )
    parser.add_argument("--experiment", default=None, help="an experiments/*.yaml to apply first")
    parser.add_argument("--params-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key in the copy, e.g. ppo.iterations=2 (repeatable)")  # fmt: skip
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per stage")
    parser.add_argument("--target-minutes", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load_at_start = list(os.getloadavg())
    rom = str(Path(rom_path(args.rom)).resolve())
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "ZORK_ROM": rom, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    project = tmp / "project"
    project.mkdir()
    rows = []
    try:
        copied = make_copy(project)
        if args.experiment:
            _apply_experiment(project / "params.yaml", Path(args.experiment).resolve())
        _apply_overrides(project / "params.yaml", args.params_set)
        stages = dvc_stages(project)
        if args.stages:
            wanted = args.stages.split(",")
            stages = [s for s in stages if s[0] in wanted]
        in_dvc = {name for name, _ in dvc_stages(project)}
        if args.extra == "auto":
            extra = [
                s
                for s in PIPELINE_ORDER
                if s not in in_dvc and (project / "stages" / f"{s}.py").is_file()
            ]
        elif args.extra == "none":
            extra = []
        else:
            extra = args.extra.split(",")
        print(
            f"copied {copied} files to {project}; dvc.yaml stages: {', '.join(n for n, _ in stages)}; "
            f"extra (not in dvc.yaml): {', '.join(extra) or 'none'}; method {args.method}",
            flush=True,
        )
        log_path = tmp / "pipeline.log"
        failed = False
        with log_path.open("w") as log:
            plan = [(name, cmd, True) for name, cmd in stages] + [
                (n, f"python -m stages.{n}", False) for n in extra
            ]
            for name, cmd, from_dvc in plan:
                if failed:
                    rows.append(
                        {
                            "stage": name,
                            "in_dvc_yaml": from_dvc,
                            "seconds": None,
                            "rc": None,
                            "last_line": "skipped",
                        }
                    )
                    continue
                if from_dvc and args.method == "dvc":
                    command = [str(venv_bin / "dvc"), "repro", "-s", "-f", name]
                else:
                    command = cmd
                seconds, rc, last = run_stage(name, command, project, env, args.timeout, log)
                rows.append(
                    {
                        "stage": name,
                        "in_dvc_yaml": from_dvc,
                        "seconds": seconds,
                        "rc": rc,
                        "last_line": last,
                    }
                )
                print(f"  {name:<10} {seconds:7.1f} s  rc {rc}  {last}", flush=True)
                failed = rc != 0
        if failed:
            print(f"a stage failed; its output is in {log_path} (kept)")
            args.keep = True
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    dvc_total = sum(r["seconds"] or 0 for r in rows if r["in_dvc_yaml"])
    total = sum(r["seconds"] or 0 for r in rows)
    complete = all(r["rc"] == 0 for r in rows)
    table(
        rows,
        ["stage", "in_dvc_yaml", "seconds", "rc", "last_line"],
        f"pipeline stages ({args.method}), fresh copy",
    )
    met = complete and total <= 60 * args.target_minutes
    print(
        f"total: {total:.1f} s ({total / 60:.1f} min); dvc.yaml stages only: {dvc_total:.1f} s; "
        f"target <= {args.target_minutes:g} min: {'MET' if met else 'NOT MET'}"
        + ("" if complete else " (a stage failed or was skipped)")
        + (f"; copy kept at {project}" if args.keep else "")
    )
    name = "pipeline" + (f"_{Path(args.experiment).stem}" if args.experiment else "")
    write_report(
        name,
        {
            "rows": rows,
            "total_s": total,
            "dvc_yaml_total_s": dvc_total,
            "complete": complete,
            "target_minutes": args.target_minutes,
            "target_met": met,
            "load_average_at_start": load_at_start,
        },
        args,
        args.out,
    )


def _apply_experiment(params_path: Path, experiment: Path) -> None:
    """The experiment's overrides (its first seed) into the copy's params.yaml, as
    `python -m zorkppo.experiment` passes them to `dvc exp run -S`."""
    from zorkppo.experiment import load_experiment, with_overrides

    loaded = load_experiment(experiment, params_path)
    overrides = {**loaded.overrides, "seed": loaded.seeds[0]}
    tree = with_overrides(yaml.safe_load(params_path.read_text()), overrides)
    params_path.write_text(yaml.safe_dump(tree, sort_keys=False))


def _apply_overrides(params_path: Path, overrides: list[str]) -> None:
    if not overrides:
        return
    params = yaml.safe_load(params_path.read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


if __name__ == "__main__":
    main()
