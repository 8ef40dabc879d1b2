"""Data-parallel PPO over 2 processes (gloo on this CPU), started by torchrun for real.

The reductions on their own, then the ppo stage through `python -m zorkppo.launch`: the
replicas end with bit-identical weights, the outputs cover both replicas' games, and a
kill -9 of the launcher mid-run resumes to the uninterrupted run's exact outputs.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, ppo_outputs, run_ppo, with_quantized_model

PPO = {  # 2 games and minibatches of 4 rows: one game and 2 rows per replica
    "num_envs": 2,
    "rollout_turns": 3,
    "iterations": 3,
    "ppo_epochs": 1,
    "minibatch_size": 4,
    "max_new_tokens": 4,
}

REPLICA_SCRIPT = """
import json, sys, torch
from zorkppo import ppo
from zorkppo.distributed import close_replicas, init_replicas
from zorkppo.trainer import same_state_over_replicas

replicas, _ = init_replicas(torch.device("cpu"))
torch.manual_seed(replicas.rank)
x = torch.randn(5) * (replicas.rank + 1) + replicas.rank
everything = torch.cat(replicas.gather(x))
mine = slice(5 * replicas.rank, 5 * replicas.rank + 5)
# ppo.baseline state: 4 games, 2 per replica; states shared across the replicas' games
states = [["a", "b", "a", "c"], ["b", "b", "a", "c"]]
returns = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
fallback = torch.full((2, 4), -1.0)
games = slice(2 * replicas.rank, 2 * replicas.rank + 2)
records = [[{"state_hash": s} for s in row[games]] for row in states]
weight = torch.nn.Parameter(torch.zeros(3))
weight.grad = torch.full((3,), float(replicas.rank + 1))
replicas.average_gradients([weight])
try:
    replicas.check_identical([torch.tensor([replicas.rank])], "ranks")
    differ = ""
except RuntimeError as exc:
    differ = str(exc)
result = {
    "normalized": ppo.normalize(x, moments=replicas.moments(x)).tolist(),
    "expected": ppo.normalize(everything)[mine].tolist(),
    "grad": weight.grad.tolist(),
    "state": same_state_over_replicas(records, fallback[:, games], returns[:, games], replicas).tolist(),
    "state_expected": ppo.same_state_advantages(returns, states, fallback)[:, games].tolist(),
    "sum": replicas.sum([1.0, float(replicas.rank)]),
    "mean": replicas.mean(float(replicas.rank)),
    "broadcast": replicas.broadcast({"rank": replicas.rank}),
    "differ": differ,
}
with open(f"{sys.argv[1]}/rank{replicas.rank}.json", "w") as f:
    json.dump(result, f)
close_replicas(replicas)
"""


def python_module(*args, cwd, timeout=600) -> subprocess.CompletedProcess:
    """`python -m ARGS` in `cwd`, importing this checkout's code; output captured."""
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun(*args, cwd, timeout=600):
    return python_module("torch.distributed.run", "--standalone", *args, cwd=cwd, timeout=timeout)


def test_replicas_reduce_like_one_process(tmp_path):
    script = tmp_path / "replica.py"
    script.write_text(REPLICA_SCRIPT)
    result = torchrun("--nproc-per-node", "2", script, tmp_path, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        # advantages normalized with the global mean and std equal one process's on all rows
        assert rank["normalized"] == pytest.approx(rank["expected"], abs=1e-5)
        assert rank["grad"] == [1.5, 1.5, 1.5]  # (1 + 2) / 2 on both
        # the state baseline over both replicas' games equals one process's on all of them
        assert sum(rank["state"], []) == pytest.approx(sum(rank["state_expected"], []))
        assert rank["sum"] == [2.0, 1.0] and rank["mean"] == 0.5
        assert rank["broadcast"] == {"rank": 0}
        assert rank["differ"].startswith("ranks differ between replicas")
    # game 0's "a" (1) against game 2's two "a" turns (3, 7): 1 - 5 = -4, across the replicas
    assert ranks[0]["state"][0][0] == pytest.approx(-4.0)


def launch(root, wait=True):
    return run_ppo(root, wait=wait, launcher=True)


def test_launcher_rejects_an_uneven_split_in_one_line(tiny_pipeline, tmp_path):
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params.update(processes=3, ppo={**PPO, "num_envs": 4})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = python_module("zorkppo.launch", "stages.ppo", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        "error: ppo.num_envs is 4: it must split evenly over 3 processes "
        "(set it to a multiple of 3, or change processes)\n"
    )


@pytest.fixture(scope="module")
def two_replicas(tiny_pipeline):
    """The tiny pipeline's quantized model, and PPO set to run on 2 processes."""
    return with_quantized_model(tiny_pipeline, PPO, processes=2)


def processes_in(root) -> list[int]:
    """Processes working in `root`: torchrun starts each replica in a session of its own, so
    the launcher's process group does not reach them; their working folder does."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd") == str(root):
                found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


outputs = ppo_outputs


@pytest.fixture(scope="module")
def uninterrupted(two_replicas):
    out = launch(two_replicas)
    return out, outputs(two_replicas)


def test_two_replicas_train_one_model_on_both_replicas_games(two_replicas, uninterrupted):
    out, files = uninterrupted
    assert "2 replicas end with identical weights" in out, out  # checked by sha256 on each
    assert "iteration 3/3" in out and out.count("iteration 3/3") == 1  # rank 0 alone reports
    metrics = json.loads(files["reports/ppo/metrics.json"])
    for iteration in range(PPO["iterations"]):
        table = pd.read_parquet(two_replicas / f"data/rollouts/iteration_{iteration:04d}.parquet")
        assert len(table) == PPO["num_envs"] * PPO["rollout_turns"]
        assert sorted(set(table.env)) == [0, 1]  # replica 0's game and replica 1's
    # the metrics are over both replicas' turns, not rank 0's alone
    assert metrics["score"]["turn_mean"] == pytest.approx(table.game_score.mean())
    assert metrics["invalid_command_rate"] == pytest.approx(1 - table.world_changed.mean())
    state = torch.load(two_replicas / "models/ppo/checkpoint.pt", weights_only=False)
    assert state["complete"] and len(state["replicas"]) == 2  # each replica's streams


def test_kill_9_of_the_launcher_resumes_to_the_uninterrupted_outputs(two_replicas, uninterrupted):
    checkpoint = two_replicas / "models/ppo/checkpoint.pt"
    checkpoint.unlink()
    before = set(processes_in(two_replicas))  # e.g. this test process's own forkserver
    process = launch(two_replicas, wait=False)
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)  # torchrun itself; its replicas must not outlive it
    process.wait()
    deadline = time.time() + 60
    while set(processes_in(two_replicas)) - before and time.time() < deadline:
        time.sleep(0.2)
    assert set(processes_in(two_replicas)) <= before, "replicas or games outlived the launcher"
    interrupted = torch.load(checkpoint, weights_only=False)
    assert not interrupted["complete"] and interrupted["iteration"] < PPO["iterations"]

    out = launch(two_replicas)
    assert "resuming at iteration" in out, out
    resumed = outputs(two_replicas)
    name = "models/ppo/checkpoint.pt"  # compared by content (pickle sharing may differ)
    assert {k: v for k, v in resumed.items() if k != name} == {
        k: v for k, v in uninterrupted[1].items() if k != name
    }
    after, before = (
        torch.load(io.BytesIO(x[name]), weights_only=False) for x in (resumed, uninterrupted[1])
    )
    for key in ("iteration", "history", "complete", "fingerprint"):
        assert after[key] == before[key], key
    for key in ("update_step", "controller"):
        assert after["run"][key] == before["run"][key], key
    for mine, theirs in zip(after["replicas"], before["replicas"], strict=True):
        mine, theirs = mine["streams"], theirs["streams"]
        assert mine["rng"] == theirs["rng"] and torch.equal(mine["generator"], theirs["generator"])
    assert all(torch.equal(after["adapter"][k], before["adapter"][k]) for k in before["adapter"])


def test_sft_on_two_replicas_takes_one_process_updates_and_ends_identical(two_replicas):
    """Last in this module: it rewrites models/sft (the PPO tests above use models/quantized)."""
    params = yaml.safe_load((two_replicas / "params.yaml").read_text())
    params["sft"] = {**params["sft"], "epochs": 2, "check_every": 1}  # a stop check at epoch 1
    runs = {}
    for processes in (1, 2):
        params["processes"] = processes
        two_replicas.write_params(params)
        out = python_module("zorkppo.launch", "stages.sft", cwd=two_replicas)
        assert out.returncode == 0, out.stdout + out.stderr
        metrics = json.loads((two_replicas / "reports/sft/metrics.json").read_text())
        losses = (two_replicas / "reports/sft/plots/metrics/train/loss.tsv").read_text()
        runs[processes] = (out.stdout, metrics, losses.splitlines())
    (_, one, one_curve), (two_out, two, two_curve) = runs[1], runs[2]
    assert "2 replicas end with identical weights" in two_out  # sha256 of LoRA on each
    # sft.batch_size is the global batch: 2 x batch_size/2 rows make the same updates
    assert two["updates"] == one["updates"] >= 2 and len(two_curve) == len(one_curve)
    assert two["after"]["examples"] == one["after"]["examples"]
    assert (two_replicas / "models/sft/adapter_model.safetensors").is_file()
    assert not (two_replicas / "models/.sft-checkpoints").exists()
