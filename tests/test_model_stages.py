"""Smoke tests of the base and sft stages on tiny params (collect -> base -> sft)."""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT

from stages import base, sft
from zorkppo.errors import UserError
from zorkppo.examples import build_examples, split_episodes
from zorkppo.model import count_parameters, load_adapter, load_causal_lm, load_tokenizer
from zorkppo.records import TRAJECTORIES, read_table
from zorkppo.scoring import evaluate_actions
from zorkppo.sft import last_complete_checkpoint, whole_json


def test_base_and_sft_write_their_artifacts(tiny_pipeline):
    """The reports say what the saved models do: recomputed here from the saved files."""
    root = tiny_pipeline
    tokenizer = load_tokenizer(root / "models/base")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|pad|>"
    base_model = load_causal_lm(root / "models/base", torch.device("cpu"))
    report = json.loads((root / "reports/base.json").read_text())
    assert report["parameters"] == count_parameters(base_model)
    assert report["vocab_size"] == len(tokenizer) == base_model.config.vocab_size <= 400

    metrics = json.loads((root / "reports/sft/metrics.json").read_text())
    df = read_table(root / "data/trajectories.parquet", TRAJECTORIES).to_pandas()
    _, heldout_ids = split_episodes(df.episode_id, 0.3, seed=1)  # TINY_PIPELINE's
    heldout = build_examples(df[df.episode_id.isin(heldout_ids)], tokenizer, 2)
    assert metrics["heldout_examples"] == len(heldout) > 0

    def measured(model):
        return evaluate_actions(model, tokenizer, heldout, 128, 4)

    assert metrics["before"] == measured(base_model)  # the base model, before SFT
    with_adapter = load_adapter(
        load_causal_lm(root / "models/base", torch.device("cpu")), root / "models/sft"
    )
    assert metrics["after"] == measured(with_adapter)  # the saved adapter, after
    assert metrics["after"]["action_loss"] != metrics["before"]["action_loss"]
    # two epochs of the imitated (walkthrough) rows, 8 a batch: one update per batch
    assert metrics["updates"] == 2 * math.ceil(metrics["train_examples"] / 8)
    loss = (root / "reports/sft/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss[0] == "step\tloss" and len(loss) == 1 + metrics["updates"]


def test_sft_with_no_matching_source_fails_cleanly(tiny_pipeline, monkeypatch, capsys):
    root = tiny_pipeline
    params = root / "params-nohuman.yaml"
    text = (root / "params.yaml").read_text()
    params.write_text(text.replace("sft:\n", "sft:\n  sources: [human]\n"))
    with contextlib.chdir(root), pytest.raises(SystemExit) as exit_info:
        sft.main(["--params", str(params)])
    assert exit_info.value.code == 2
    assert "the SFT training set is empty" in capsys.readouterr().err


def test_hub_profile_writes_a_manifest_not_weights(tiny_pipeline, tmp_path):
    with contextlib.chdir(tmp_path):
        (tmp_path / "params.yaml").write_text("model:\n  profile: qwen7b\n  dtype: bfloat16\n")
        base.main([])
        manifest = json.loads((tmp_path / "models/base/manifest.json").read_text())
    assert manifest == {
        "name": "Qwen/Qwen2.5-7B-Instruct",
        "revision": "a09a35458c702b33eeacc393d103063234e8bc28",
        "dtype": "bfloat16",
    }


def test_hub_profile_without_a_pinned_revision_is_refused(tmp_path, capsys):
    with contextlib.chdir(tmp_path):
        (tmp_path / "params.yaml").write_text("model:\n  profile: hub\n  name: org/model\n")
        with pytest.raises(SystemExit):
            base.main([])
    assert "model.revision is empty for hub model org/model" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_hub_profile_without_a_name_is_refused(tmp_path, capsys):
    with contextlib.chdir(tmp_path):
        (tmp_path / "params.yaml").write_text("model:\n  profile: hub\n")
        with pytest.raises(SystemExit) as exit_:
            base.main([])
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "model.profile is 'hub' but model.name is empty" in err and "\n" not in err
    assert not (tmp_path / "models").exists()
    with pytest.raises(UserError):
        load_causal_lm(tmp_path / "models/base", None)


def test_base_pretrains_only_on_the_training_sources(tiny_pipeline, tmp_path, capsys):
    """A no-walkthrough protocol (sft.sources without walkthrough) must not pretrain on it."""
    import shutil

    import pandas as pd
    import yaml
    from conftest import TINY_PIPELINE

    from zorkppo.examples import split_episodes

    (tmp_path / "data").mkdir()
    shutil.copyfile(
        tiny_pipeline / "data/trajectories.parquet", tmp_path / "data/trajectories.parquet"
    )
    df = pd.read_parquet(tmp_path / "data/trajectories.parquet")
    train_ids, _ = split_episodes(df.episode_id, 0.3, TINY_PIPELINE["seed"])
    train = df[df.episode_id.isin(train_ids)]
    assert train.source.nunique() >= 2  # else the comparison below shows nothing
    one_source = sorted(train.source.unique())[0]

    def pretrain_tokens(sources):
        params = {**TINY_PIPELINE, "sft": {**TINY_PIPELINE["sft"], "sources": sources}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        with contextlib.chdir(tmp_path):
            base.main([])
        return json.loads((tmp_path / "reports/base.json").read_text())["pretrain_tokens"]

    everything = json.loads((tiny_pipeline / "reports/base.json").read_text())["pretrain_tokens"]
    assert pretrain_tokens([one_source]) < everything
    with pytest.raises(SystemExit) as exit_info:
        pretrain_tokens(["human"])  # no human episodes were collected
    assert exit_info.value.code == 2
    assert "no training episodes from sources ['human']" in capsys.readouterr().err


def test_a_checkpoint_torn_while_its_trainer_state_was_written_is_not_resumed(tmp_path):
    """A kill can land while trainer_state.json is written: empty or cut short, it marks a
    torn checkpoint, and the newest whole one is resumed (CI once resumed an empty one)."""
    for step, text in ((10, '{"global_step": 10}'), (20, ""), (30, '{"global_st'), (40, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if text is not None:
            (folder / "trainer_state.json").write_text(text)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "none") is None


def test_sft_killed_mid_run_resumes_and_ends_identical(tiny_pipeline, tmp_path):
    """kill -9 of the sft stage after its first epoch checkpoint, then a rerun: it resumes from
    the trainer's checkpoint and writes the uninterrupted run's adapter, metrics and loss curve,
    byte for byte, and leaves no temp folder or checkpoint behind."""
    for artifact in ("data/trajectories.parquet", "models/base"):
        copy = shutil.copytree if (tiny_pipeline / artifact).is_dir() else shutil.copyfile
        (tmp_path / artifact).parent.mkdir(parents=True, exist_ok=True)
        copy(tiny_pipeline / artifact, tmp_path / artifact)
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["sft"].update(epochs=40, batch_size=1, check_every=0)  # 40 epochs of 1-row updates
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    outputs = ("models/sft/adapter_model.safetensors", "reports/sft/metrics.json")
    curve = "reports/sft/plots/metrics/train/loss.tsv"
    checkpoints = tmp_path / "models/.sft-checkpoints"

    def run_sft(wait=True):
        command = [sys.executable, "-m", "stages.sft"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        if not wait:
            return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE)
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def artifacts():
        return {name: (tmp_path / name).read_bytes() for name in (*outputs, curve)}

    assert "resuming" not in run_sft()
    uninterrupted = artifacts()
    assert not checkpoints.exists()
    assert len((tmp_path / curve).read_text().splitlines()) > 40  # a row per update

    process = run_sft(wait=False)
    deadline = time.time() + 120

    def one_checkpoint_saved():  # to the end: killed mid-save, a checkpoint is torn
        return any(map(whole_json, checkpoints.glob("checkpoint-*/trainer_state.json")))

    while not one_checkpoint_saved() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(checkpoints.glob("checkpoint-*")), "no checkpoint before the kill"
    assert "sft: resuming from" in run_sft()
    assert artifacts() == uninterrupted
    assert not checkpoints.exists()
    litter = [p.name for folder in ("models", "reports") for p in (tmp_path / folder).iterdir()]
    assert not [name for name in litter if name.startswith(".")], litter
