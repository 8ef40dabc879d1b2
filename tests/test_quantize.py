"""The quantize stage: merged SFT + bitsandbytes 8-bit (and nf4 / none) on the tiny pipeline."""

import contextlib
import json

import bitsandbytes as bnb
import pytest
import torch
import yaml

from stages import quantize
from zorkppo.config import parse_params
from zorkppo.errors import UserError
from zorkppo.examples import build_examples, split_episodes
from zorkppo.model import attach_lora, load_causal_lm, load_tokenizer
from zorkppo.quantize import dir_bytes, logits_on, merge_adapter, quantized_linear_count
from zorkppo.records import TRAJECTORIES, read_table
from zorkppo.scoring import evaluate_actions

CPU = torch.device("cpu")


def run_quantize(root, bits):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["quantize"] = {"bits": bits}
    path = root / f"params-q{bits}.yaml"
    path.write_text(yaml.safe_dump(params))
    with contextlib.chdir(root):
        quantize.main(["--params", str(path)])
    return json.loads((root / "reports/quantize.json").read_text())


@pytest.fixture(scope="module")
def quantized8(tiny_pipeline):
    return tiny_pipeline, run_quantize(tiny_pipeline, 8)


def test_8bit_model_has_bitsandbytes_linear_layers(quantized8):
    root, report = quantized8
    model = load_causal_lm(root / "models/quantized", CPU)  # quantization config travels with it
    counts = quantized_linear_count(model)
    assert counts["int8"] == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert counts["full"] == 1  # lm_head stays in full precision, as LLM.int8 does
    assert report["linear_layers"] == counts
    config = json.loads((root / "models/quantized/config.json").read_text())["quantization_config"]
    assert config["load_in_8bit"] and config["llm_int8_threshold"] == 6.0
    assert report["after"]["memory_bytes"] < report["before"]["memory_bytes"]
    assert report["after"]["disk_bytes"] < report["before"]["disk_bytes"]
    # the report's logit difference is the 8-bit model's against SFT merged in full precision,
    # on the first held-out prompts: recomputed here from the saved files
    tokenizer = load_tokenizer(root / "models/quantized")
    df = read_table(root / "data/trajectories.parquet", TRAJECTORIES).to_pandas()
    _, heldout_ids = split_episodes(df.episode_id, 0.3, seed=1)  # TINY_PIPELINE's
    heldout = build_examples(df[df.episode_id.isin(heldout_ids)], tokenizer, 2)
    probe = [e.prompt for e in heldout[: report["probe_prompts"]]]
    merged = merge_adapter(root / "models/base", root / "models/sft", CPU, "float32")
    diff = (logits_on(model, tokenizer, probe) - logits_on(merged, tokenizer, probe)).abs().max()
    assert report["max_abs_logit_diff"] == pytest.approx(float(diff), rel=1e-6)
    assert report["max_abs_logit_diff"] > 0  # int8 rounds: not the same function
    assert report["after"] == {
        **evaluate_actions(model, tokenizer, heldout, 128, 4),
        "memory_bytes": model.get_memory_footprint(),
        "disk_bytes": dir_bytes(root / "models/quantized"),
    }


def test_reload_gives_identical_logits(quantized8):
    root, _ = quantized8
    tokenizer = load_tokenizer(root / "models/quantized")
    prompts = ["Room: Kitchen\nInventory: nothing\n> ", "West of House\n> open"]
    first = logits_on(load_causal_lm(root / "models/quantized", CPU), tokenizer, prompts)
    second = logits_on(load_causal_lm(root / "models/quantized", CPU), tokenizer, prompts)
    assert torch.equal(first, second)


def test_fresh_lora_on_8bit_model_trains_only_lora_weights(quantized8):
    root, _ = quantized8
    torch.manual_seed(0)
    model = attach_lora(
        load_causal_lm(root / "models/quantized", CPU), 4, 16, 0.0, ["q_proj", "v_proj"]
    )
    assert isinstance(
        model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear8bitLt
    )
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model(input_ids=ids, labels=ids).loss.backward()
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    # lora_B starts at zero, so only B gets a gradient on the first step (A's is exactly zero)
    assert all(p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(param.detach(), snapshot[name])
        assert changed == ("lora_B" in name), name
    int8_weights = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert int8_weights.dtype == torch.int8


def test_4bit_and_passthrough(tiny_pipeline):
    report4 = run_quantize(tiny_pipeline, 4)
    assert (
        quantized_linear_count(load_causal_lm(tiny_pipeline / "models/quantized", CPU))["nf4"] == 14
    )
    assert report4["after"]["memory_bytes"] < report4["before"]["memory_bytes"]
    report_none = run_quantize(tiny_pipeline, "none")
    model = load_causal_lm(tiny_pipeline / "models/quantized", CPU)
    assert quantized_linear_count(model) == {"int8": 0, "nf4": 0, "full": 15}
    assert report_none["max_abs_logit_diff"] < 1e-4  # merged full precision: the same function
    run_quantize(tiny_pipeline, 8)  # leave the 8-bit model for later tests in this module


def test_unsupported_bits_is_refused():
    with pytest.raises(
        UserError, match=r"quantize.bits = 16 is invalid: Input should be 8, 4 or 'none'"
    ):
        parse_params({"quantize": {"bits": 16}})
