"""Shared fixtures: the ROM (from $ZORK_ROM or ../shared/roms) and a throwaway project dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def find_rom() -> Path | None:
    candidates = [
        os.environ.get("ZORK_ROM", ""),
        ROOT.parent / "shared/roms/zork1.z5",
        ROOT / "data/roms/zork1.z5",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def rom_path() -> Path:
    rom = find_rom()
    if rom is None:
        message = "zork1.z5 not found: set ZORK_ROM to a local copy"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has the ROM; a missing one is a broken setup
        pytest.skip(message)
    return rom


class Project(type(Path())):
    """A temp project root; write_params() sets its params.yaml."""

    def write_params(self, params: dict) -> Path:
        path = self / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return path


@pytest.fixture
def project(tmp_path, rom_path, monkeypatch) -> Project:
    """A temp project root (the cwd) holding a verified ROM at data/roms/zork1.z5."""
    (tmp_path / "data/roms").mkdir(parents=True)
    shutil.copyfile(rom_path, tmp_path / "data/roms/zork1.z5")
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path)


SKIP_IN_COPY = {".venv", ".git", "data", "models", "reports", ".pytest_cache", ".ruff_cache"}


GIT = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]  # commits in temp repos


def run(command, cwd, env=None, ok=True):
    """A command's CompletedProcess (text); with `ok`, asserts it succeeded, showing its output."""
    import subprocess

    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def copy_project(dest: Path) -> Path:
    """The project's code and pipeline files, committed in a fresh git repo at `dest` (no artifacts)."""
    import subprocess

    def ignore(directory, names):
        skip = set(SKIP_IN_COPY) if Path(directory) == ROOT else set()
        return {n for n in names if n in skip or n in {"cache", "tmp", "__pycache__"}}

    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    # a first commit, as a clone has: dvclive (in the stages) fails in a repo with none
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", "project"], cwd=dest, check=True)
    return dest


TINY_PIPELINE = {
    "seed": 1,
    "collect": {
        "episodes": {"walkthrough": 1, "random": 1, "explorer": 1},
        "max_steps": 8,
        "workers": 2,
    },
    "split": {"heldout_fraction": 0.3},
    "model": {
        "tiny": {
            "vocab_size": 400,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_layers": 2,
            "num_heads": 2,
            "max_positions": 512,
            "pretrain_steps": 5,
            "pretrain_batch_size": 4,
            "pretrain_seq_len": 32,
        }
    },
    "prompt": {"history_turns": 2, "max_prompt_tokens": 128},
    # 2 epochs: the first update runs at the warm-up's learning rate 0
    "sft": {"epochs": 2, "batch_size": 8, "max_new_tokens": 4},
}


# Every stage on tiny params, for `dvc repro` of the whole pipeline in a test (~1-2 minutes).
TINY_DVC_PIPELINE = {
    **TINY_PIPELINE,
    "ppo": {
        "num_envs": 2,
        "rollout_turns": 2,
        "iterations": 1,
        "ppo_epochs": 1,
        "minibatch_size": 4,
        "max_new_tokens": 4,
    },
    "eval": {"episodes": 1, "max_steps": 3, "max_new_tokens": 4, "agents": ["random", "ppo"]},
}


def deep_merge(params: dict, overrides: dict) -> dict:
    """`params` with `overrides` written over it, section by section (dvc needs every key)."""
    merged = dict(params)
    for key, value in overrides.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if both_dicts else value
    return merged


def dvc_env(rom_path: Path) -> dict:
    """`dvc` and its stages run by this interpreter's environment, the ROM from rom_path."""
    import sys

    return {
        **os.environ,
        "ZORK_ROM": str(rom_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory, rom_path):
    """A temp project where collect, base and sft have run on tiny params (cwd is NOT changed)."""
    import contextlib

    from stages import base, collect, sft

    root = Project(tmp_path_factory.mktemp("pipeline"))
    (root / "data/roms").mkdir(parents=True)
    shutil.copyfile(rom_path, root / "data/roms/zork1.z5")
    root.write_params(TINY_PIPELINE)
    with contextlib.chdir(root):
        for stage in (collect, base, sft):
            stage.main([])
    return root


def run_ppo(root, wait=True, launcher=False):
    """The ppo stage in `root` as a subprocess: `python -m stages.ppo`, or through
    `zorkppo.launch` (replicas per params.yaml's `processes`). Returns its output, or the
    running process when not waiting."""
    import subprocess
    import sys

    module = ["zorkppo.launch", "stages.ppo"] if launcher else ["stages.ppo"]
    process = subprocess.Popen(
        [sys.executable, "-m", *module],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if not wait:
        return process
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    return out


def ppo_outputs(root) -> dict[str, bytes]:
    """Every file the ppo stage declares in dvc.yaml (all must be bit-identical across runs)."""
    files = [
        f
        for d in ("data/rollouts", "models/ppo", "reports/ppo")
        for f in sorted((root / d).rglob("*"))
    ]
    return {str(f.relative_to(root)): f.read_bytes() for f in files if f.is_file()}


def with_quantized_model(root: Project, ppo: dict, **top_level) -> Project:
    """`root` (a tiny_pipeline) with these ppo params (and top-level keys), quantized."""
    import contextlib

    from stages import quantize

    params = yaml.safe_load((root / "params.yaml").read_text())
    params.update(ppo=ppo, **top_level)
    root.write_params(params)
    with contextlib.chdir(root):
        quantize.main([])
    return root
