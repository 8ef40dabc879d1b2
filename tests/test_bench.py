"""The benchmarks stay runnable: tiny settings, real code paths, JSON written (no timings checked)."""

import json

import pytest

from bench import gpu, rollout


def test_gpu_bench_dry_run_runs_one_ppo_iteration_per_setting(tmp_path):
    gpu.main(
        [
            "--dry-run",
            "--variants",
            "int8,bf16",
            "--checkpointing",
            "off,on",
            "--out",
            str(tmp_path),
        ]
    )
    report = json.loads((tmp_path / "gpu_dry_run.json").read_text())
    rows = report["rows"]
    assert [(r["variant"], r["gradient_checkpointing"]) for r in rows] == [
        ("int8", False),
        ("int8", True),
        ("bf16", False),
        ("bf16", True),
    ]
    assert all(r["finite_loss"] and r["updates"] >= 1 and "error" not in r for r in rows)
    assert report["machine"]["device"] == "cpu"


def test_rollout_bench_compares_batched_and_per_game(tmp_path, rom_path):
    rollout.main(
        ["--rom", str(rom_path), "--sizes", "1,2", "--turns", "1", "--repeats", "1",
         "--walkthrough-steps", "4", "--random-steps", "4", "--out", str(tmp_path)]
    )  # fmt: skip
    rows = json.loads((tmp_path / "rollout.json").read_text())["rows"]
    methods = {(r["N"], r["method"]) for r in rows}
    assert {
        (2, "batched act_generate"),
        (2, "one-batch act_generate"),
        (2, "per-game act_generate"),
    } <= methods
    for r in rows:  # every game played its one turn, and the rates are of what was counted
        assert r["turns"] == r["N"] * 1
        assert r["turns_per_s"] == pytest.approx(r["turns"] / r["seconds"])
        assert 1 <= r["tokens_per_turn"] <= 8  # ppo.max_new_tokens: commands stop there
