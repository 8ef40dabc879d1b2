"""The ppo stage on the tiny pipeline: artifacts, determinism, and exact resume after SIGKILL."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import ROOT

from stages import quantize
from zorkppo.records import ROLLOUTS, read_table

PPO = {
    "num_envs": 2,
    "rollout_turns": 3,
    "iterations": 3,
    "ppo_epochs": 1,
    "minibatch_size": 4,
    "max_new_tokens": 4,
    "max_prompt_tokens": 96,
}


@pytest.fixture(scope="module")
def ppo_project(tiny_pipeline):
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["ppo"] = PPO
    tiny_pipeline.write_params(params)
    with contextlib.chdir(tiny_pipeline):
        quantize.main([])
    return tiny_pipeline


def run_ppo(root, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.ppo"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if wait:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out
        return out
    return process


def outputs(root) -> dict[str, bytes]:
    files = sorted((root / "data/rollouts").glob("*.parquet")) + [
        root / "models/ppo/adapter/adapter_model.safetensors",
        root / "models/ppo/value_head.safetensors",
    ]
    return {f.name: f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def first_run(ppo_project):
    out = run_ppo(ppo_project)
    return out, outputs(ppo_project)


def test_ppo_stage_writes_its_artifacts(ppo_project, first_run):
    out, files = first_run
    assert "iteration 3/3" in out and "resuming" not in out
    assert sorted(files) == [
        "adapter_model.safetensors",
        "iteration_0000.parquet",
        "iteration_0001.parquet",
        "iteration_0002.parquet",
        "value_head.safetensors",
    ]
    table = read_table(ppo_project / "data/rollouts/iteration_0001.parquet", ROLLOUTS).to_pandas()
    assert len(table) == PPO["num_envs"] * PPO["rollout_turns"] and set(table.iteration) == {1}
    assert (
        pq.read_schema(ppo_project / "data/rollouts/iteration_0001.parquet").metadata[
            b"zorkppo.schema"
        ]
        == b"rollouts/1"
    )
    curve = (ppo_project / "reports/ppo/plots/metrics/score/current.tsv").read_text().splitlines()
    assert curve[0] == "step\tcurrent" and len(curve) == 1 + PPO["iterations"]
    for name in (
        "kl_coef",
        "clip_range",
        "entropy",
        "explained_variance",
        "invalid_command_rate",
        "env_steps_per_s",
    ):
        assert (ppo_project / f"reports/ppo/plots/metrics/{name}.tsv").is_file(), name


def test_rerun_after_completion_starts_over_and_is_deterministic(ppo_project, first_run):
    out = run_ppo(ppo_project)
    assert "resuming" not in out
    assert outputs(ppo_project) == first_run[1]


def test_sigkill_mid_run_resumes_from_the_last_checkpoint(ppo_project, first_run):
    checkpoint = ppo_project / "models/ppo/checkpoint.pt"
    checkpoint.unlink()
    process = run_ppo(ppo_project, wait=False)
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = torch.load(checkpoint, weights_only=False)
    assert not interrupted["complete"] and interrupted["iteration"] < PPO["iterations"]

    out = run_ppo(ppo_project)
    assert "resuming at iteration" in out, out
    resumed_at = int(out.split("resuming at iteration ")[1].split()[0])
    assert 1 <= resumed_at < PPO["iterations"]
    # Nothing lost, nothing repeated, and bit-identical to the uninterrupted run.
    assert outputs(ppo_project) == first_run[1]
    curve = (ppo_project / "reports/ppo/plots/metrics/score/current.tsv").read_text().splitlines()
    assert len(curve) == 1 + PPO["iterations"]
