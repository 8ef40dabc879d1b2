"""The ppo stage on the tiny pipeline: artifacts, determinism, and exact resume after SIGKILL."""

import contextlib
import io
import signal
import time

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import ppo_outputs, run_ppo, with_quantized_model

from zorkppo.config import EvalParams, parse_params
from zorkppo.curve import curve_episodes, read_curve
from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import agent_chooser, load_agent_policy, play, summarize
from zorkppo.records import ROLLOUTS, read_table

PPO = {
    "num_envs": 2,
    "rollout_turns": 3,
    "iterations": 3,
    "ppo_epochs": 1,
    "minibatch_size": 4,
    "max_new_tokens": 4,
    "curve": {"every": 2, "episodes": 1, "max_steps": 3},  # points at iterations 0, 2 and 3
}


@pytest.fixture(scope="module")
def ppo_project(tiny_pipeline):
    return with_quantized_model(tiny_pipeline, PPO)


outputs = ppo_outputs


@pytest.fixture(scope="module")
def first_run(ppo_project):
    out = run_ppo(ppo_project)
    return out, outputs(ppo_project)


def test_ppo_stage_writes_its_artifacts(ppo_project, first_run):
    out, files = first_run
    assert "iteration 3/3" in out and "resuming" not in out
    names = {f.split("/")[-1] for f in files}
    expected = {
        "adapter_model.safetensors",
        "value_head.safetensors",
        "checkpoint.pt",
        "metrics.json",
    }
    assert expected | {f"iteration_000{i}.parquet" for i in range(3)} <= names
    table = read_table(ppo_project / "data/rollouts/iteration_0001.parquet", ROLLOUTS).to_pandas()
    assert len(table) == PPO["num_envs"] * PPO["rollout_turns"] and set(table.iteration) == {1}
    assert (
        pq.read_schema(ppo_project / "data/rollouts/iteration_0001.parquet").metadata[
            b"zorkppo.schema"
        ]
        == f"rollouts/{ROLLOUTS.version}".encode()
    )
    curve = (ppo_project / "reports/ppo/plots/metrics/score/current.tsv").read_text().splitlines()
    assert curve[0] == "step\tcurrent" and len(curve) == 1 + PPO["iterations"]
    for name in (
        "kl_coef",
        "clip_range",
        "entropy",
        "explained_variance",
        "invalid_command_rate",
    ):
        assert (ppo_project / f"reports/ppo/plots/metrics/{name}.tsv").is_file(), name
    assert not (
        ppo_project / "reports/ppo/plots/metrics/env_steps_per_s.tsv"
    ).exists()  # wall-clock: untracked
    timing = (ppo_project / "reports/timing/ppo_env_steps_per_s.tsv").read_text().splitlines()
    assert (
        timing[0] == "step\tenv_steps_per_s\tupdate_samples_per_s"
        and len(timing) == 1 + PPO["iterations"]
    )
    points = read_curve(ppo_project / "reports/ppo/curve.tsv")
    turns = PPO["num_envs"] * PPO["rollout_turns"]
    assert [(p["iteration"], p["env_steps"]) for p in points] == [
        ("0", "0"),
        ("2", str(2 * turns)),
        ("3", str(3 * turns)),
    ]
    # the last point is the trained policy measured as the evaluate stage measures an agent
    params = parse_params(yaml.safe_load((ppo_project / "params.yaml").read_text()))
    params = params.model_copy(
        update={"eval": EvalParams(episodes=1, max_steps=3, max_new_tokens=4, temperature=0.7)}
    )
    with contextlib.chdir(ppo_project):
        policy = load_agent_policy("ppo", params, torch.device("cpu"))
    with VecGames(zork_factory(str(ppo_project / "data/roms/zork1.z5"), 12), 1) as games:
        evaluated = {
            decoding: play(
                "ppo", games, agent_chooser("ppo", params, decoding, [], policy), 1, 3, 2
            )
            for decoding in ("greedy", "sample")
        }
        curve_played = curve_episodes(
            policy, games, params.ppo, params.prompt.history_turns, params.seed
        )
    measured = {decoding: summarize(rows) for decoding, rows in evaluated.items()}
    assert float(points[-1]["greedy_score"]) == measured["greedy"]["score_mean"]
    assert float(points[-1]["sampled_score_mean"]) == measured["sample"]["score_mean"]
    # the test model scores 0 in 3 turns, so the scores alone cannot tell two ways of playing
    # apart: the commands typed can (mode and generator seed; checked: a curve drawn with
    # seed + 1 fails here). Its distributions are too peaked to tell temperatures apart.
    for decoding, rows in evaluated.items():
        assert [r["action"] for r in curve_played[decoding]] == [r["action"] for r in rows]
    assert evaluated["greedy"] != evaluated["sample"]  # sampling typed something else
    assert files["reports/ppo/learning_curve.png"].startswith(b"\x89PNG")


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
    # Nothing lost, nothing repeated, and bit-identical to the uninterrupted run: every
    # artifact byte for byte; the checkpoint by content (a pickle's object sharing differs
    # after a restore, so its bytes may too).
    resumed = outputs(ppo_project)
    checkpoint_bytes = "models/ppo/checkpoint.pt"
    assert {k: v for k, v in resumed.items() if k != checkpoint_bytes} == {
        k: v for k, v in first_run[1].items() if k != checkpoint_bytes
    }
    after, before = (
        torch.load(io.BytesIO(x[checkpoint_bytes]), weights_only=False)
        for x in (resumed, first_run[1])
    )
    for key in ("iteration", "history", "complete", "fingerprint", "curve"):
        assert after[key] == before[key], key
    for key in ("update_step", "controller"):
        assert after["run"][key] == before["run"][key], key
    assert after["streams"]["rng"] == before["streams"]["rng"]
    assert torch.equal(after["streams"]["generator"], before["streams"]["generator"])
    assert all(torch.equal(after["adapter"][k], before["adapter"][k]) for k in before["adapter"])
    curve = (ppo_project / "reports/ppo/plots/metrics/score/current.tsv").read_text().splitlines()
    assert len(curve) == 1 + PPO["iterations"]


def test_evaluate_stage_reports_and_is_deterministic(ppo_project, first_run):
    import json

    from stages import evaluate

    params = yaml.safe_load((ppo_project / "params.yaml").read_text())
    params["eval"] = {
        "episodes": 2,
        "max_steps": 4,
        "max_new_tokens": 4,
        "agents": [
            "random", "explorer", "walkthrough", "base", "base:constrained", "sft", "quantized",
            "ppo",
        ],
        "game_seeds": [1],  # unseen: every agent plays it too
        "seed_episodes": 1,
    }  # fmt: skip
    ppo_project.write_params(params)
    report = ppo_project / "reports/eval"
    tracked = [
        "metrics.json",
        "episodes.parquet",
        "scores.png",
        "ppo_curve.png",
        "transcripts/ppo_sample_best.md",
        "transcripts/ppo_greedy_best.md",
    ]
    runs = []
    for _ in range(2):
        with contextlib.chdir(ppo_project):
            evaluate.main([])
        runs.append({name: (report / name).read_bytes() for name in tracked})
    assert runs[0] == runs[1]
    metrics = json.loads(runs[0]["metrics.json"])
    assert list(metrics["agents"]) == [
        "base",
        "base:constrained",
        "explorer",
        "ppo",
        "quantized",
        "random",
        "sft",
        "walkthrough",
    ]
    assert (
        metrics["protocol"]["max_steps"] == 4
        and metrics["agents"]["walkthrough"]["greedy"]["score_max"] == 5  # N, N, U, Get egg
    )
    for agent in ("base", "base:constrained", "sft", "quantized", "ppo"):
        runs_of = metrics["agents"][agent]  # greedy: one episode; sampled: eval.episodes
        assert runs_of["greedy"]["episodes"] == 1 and runs_of["sample"]["episodes"] == 2
    # an agent with its own mode plays in it: constrained, every command is a valid action
    assert metrics["agents"]["base:constrained"]["sample"]["valid_command_rate"] == 1.0
    # the unseen game seed: every agent, seed_episodes sampled episodes; the walkthrough's
    # first 4 commands do not depend on the game's randomness
    unseen = metrics["game_seeds"]["1"]
    assert list(unseen) == list(metrics["agents"])
    assert unseen["ppo"]["sample"]["episodes"] == 1 and unseen["ppo"]["greedy"]["episodes"] == 1
    assert unseen["walkthrough"]["greedy"]["score_max"] == 5
    rows = pq.read_table(report / "episodes.parquet").to_pandas()
    assert set(rows.game_seed) == {12, 1} and len(rows[rows.game_seed == 1].episode.unique()) <= 2
    assert list(metrics["agents"]["random"]) == list(metrics["agents"]["explorer"]) == ["sample"]
    # the explorer looks ahead and never walks into death: it leaves West of House in 4 turns
    assert metrics["agents"]["explorer"]["sample"]["unique_locations_mean"] > 1
    assert runs[0]["scores.png"].startswith(b"\x89PNG")
    transcript = runs[0]["transcripts/ppo_sample_best.md"].decode()
    assert transcript.startswith("# ppo (sample): best episode")
    assert "1 greedy episode" in transcript and "2 sampled at temperature" in transcript
    assert "random and explorer 2 episodes" in transcript
