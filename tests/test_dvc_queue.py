"""A queued sweep as README shows it: `dvc exp run --queue` of two PPO learning rates on tiny
params, `dvc queue start`, and both results in `dvc exp show --json`."""

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import GIT, TINY_DVC_PIPELINE, copy_project, deep_merge, dvc_env, run

DVC = str(Path(sys.executable).with_name("dvc"))


def leaf_params(exp: dict) -> dict:
    return exp["data"]["params"]["params.yaml"]["data"]


@pytest.mark.slow
def test_queued_sweep_runs_both_experiments(tmp_path, rom_path):
    root = copy_project(tmp_path / "proj")
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, TINY_DVC_PIPELINE)))
    env = dvc_env(rom_path)
    run([DVC, "repro"], root, env)  # the baseline: queued runs reuse its stages from the cache
    run([*GIT, "add", "-A"], root, env)
    run([*GIT, "commit", "-qm", "baseline"], root, env)

    queued = run(
        [DVC, "exp", "run", "--queue", "-S", "ppo.learning_rate=0.0001,0.001"], root, env
    ).stdout
    assert queued.count("Queued experiment") == 2, queued  # a grid over the comma
    run([DVC, "queue", "start", "-j", "1"], root, env)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run([DVC, "queue", "status"], root, env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    run([DVC, "queue", "stop", "--kill"], root, env)
    assert "Failed" not in status, status

    shown = json.loads(run([DVC, "exp", "show", "--json"], root, env).stdout)
    experiments = [
        rev
        for baseline in shown
        for exp in baseline.get("experiments") or []
        for rev in exp["revs"]
    ]
    rates = sorted(leaf_params(exp)["ppo"]["learning_rate"] for exp in experiments)
    assert rates == [0.0001, 0.001], json.dumps(shown)[:2000]
    for exp in experiments:
        metrics = exp["data"]["metrics"]["reports/eval/metrics.json"]["data"]
        assert "ppo" in metrics["agents"]
