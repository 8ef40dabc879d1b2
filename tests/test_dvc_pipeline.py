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
