"""`dvc repro` of rom+collect on tiny params: no-op when nothing changed, bit-identical when forced."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import copy_project

DVC = str(Path(sys.executable).with_name("dvc"))


def dvc(*args, cwd, env):
    result = subprocess.run([DVC, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_repro_is_cached_and_deterministic(tmp_path, rom_path):
    root = copy_project(tmp_path / "proj")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["collect"] = {
        "episodes": {"walkthrough": 1, "random": 1, "explorer": 1, "human": 0},
        "max_steps": 5,
        "workers": 2,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "ZORK_ROM": str(rom_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    dvc("repro", "collect", cwd=root, env=env)
    out = dvc("repro", "collect", cwd=root, env=env)
    assert "didn't change, skipping" in out and "Running stage" not in out

    trajectories = root / "data/trajectories.parquet"
    first = md5(trajectories)
    dvc("repro", "-f", "collect", cwd=root, env=env)
    second = md5(trajectories)
    dvc("repro", "-f", "collect", cwd=root, env=env)
    assert first == second == md5(trajectories)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["collect"]["outs"]}
    assert outs["data/trajectories.parquet"] == first


def project_imports(module_file: Path, root: Path, seen: set[Path]) -> set[Path]:
    """Project source files a module imports, directly or through other project modules
    (imports inside functions included: a lazy import is still code the stage runs)."""
    import ast

    for node in ast.walk(ast.parse(module_file.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            path = module_source(root, name)
            if name.split(".")[0] in ("zorkppo", "stages") and path and path not in seen:
                seen.add(path)
                project_imports(path, root, seen)
    return seen


def module_source(root: Path, name: str) -> Path | None:
    """A dotted module's file: `a/b.py`, or a package's `a/b/__init__.py`; None if neither."""
    stem = root / name.replace(".", "/")
    for path in (stem.with_name(stem.name + ".py"), stem / "__init__.py"):
        if path.is_file():
            return path
    return None


def listed(path: str, deps: list[str]) -> bool:
    """Whether a dvc.yaml dep names this file or a folder holding it."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


# Read by every stage but never deciding an output: params are tracked by value (dvc.yaml
# `params`), error texts and output paths are not results.
NOT_RESULTS = {
    "zorkppo/__init__.py",  # the package docstring
    "zorkppo/config.py",
    "zorkppo/errors.py",
    "zorkppo/paths.py",
}


def test_every_stage_lists_the_code_it_runs():
    """A stage whose code changed must rerun: dvc.yaml deps hold every project module the
    stage's command imports, however indirectly."""
    root = Path(__file__).resolve().parents[1]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        # `python -m MODULE [MODULE]`: the launcher and the stage module it starts
        modules = stage["cmd"].split("-m ")[1].split()
        needed = set()
        for entry in (module_source(root, m) for m in modules):
            needed |= {str(p.relative_to(root)) for p in project_imports(entry, root, {entry})}
        unlisted = sorted(p for p in needed - NOT_RESULTS if not listed(p, stage["deps"]))
        if unlisted:
            missing[name] = unlisted
    assert not missing, f"dvc.yaml deps lack code the stages run: {missing}"
