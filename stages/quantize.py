"""Stage `quantize`: fold the SFT adapter into the base, quantize to 8 bits (or 4 / none), save."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from zorkppo import paths
from zorkppo.config import params_from_cli
from zorkppo.errors import exit_on_user_error
from zorkppo.examples import heldout_examples
from zorkppo.io import write_json
from zorkppo.model import load_causal_lm, load_tokenizer, resolve_device, seed_everything
from zorkppo.quantize import (
    dir_bytes,
    logits_on,
    merge_adapter,
    quantization_config,
    quantized_linear_count,
)
from zorkppo.records import TRAJECTORIES, atomic_dir, read_table
from zorkppo.scoring import evaluate_actions

PROBE_PROMPTS = 8  # fixed held-out prompts whose logits are compared before/after


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    params = params_from_cli(__doc__, argv)
    q, prompt = params.quantize, params.prompt
    started = time.perf_counter()
    seed_everything(params.seed)
    device = resolve_device(params.model.device)
    tokenizer = load_tokenizer(paths.BASE_MODEL)

    df = read_table(paths.TRAJECTORIES, TRAJECTORIES).to_pandas()
    heldout = heldout_examples(df, params.split, params.seed, tokenizer, prompt.history_turns)
    probe = [e.prompt for e in heldout[:PROBE_PROMPTS]]

    def measure(model) -> dict:
        return evaluate_actions(
            model, tokenizer, heldout, prompt.max_prompt_tokens, params.sft.max_new_tokens
        )

    # 1. Merge SFT into the base, in full precision, and measure it.
    merged = merge_adapter(paths.BASE_MODEL, paths.SFT_ADAPTER, device, params.model.dtype)
    before = {**measure(merged), "memory_bytes": merged.get_memory_footprint()}
    reference_logits = logits_on(merged, tokenizer, probe)

    with atomic_dir(paths.QUANTIZED_MODEL) as out, tempfile.TemporaryDirectory() as scratch:
        merged.save_pretrained(scratch, safe_serialization=True)
        before["disk_bytes"] = dir_bytes(Path(scratch))
        del merged
        # 2. Reload the merged weights through bitsandbytes and save the quantized model.
        config = quantization_config(q.bits, q.llm_int8_threshold)
        model = load_causal_lm(Path(scratch), device, params.model.dtype, quantization=config)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        after = {
            **measure(model),
            "memory_bytes": model.get_memory_footprint(),
            "disk_bytes": dir_bytes(out),
        }
        max_logit_diff = float((logits_on(model, tokenizer, probe) - reference_logits).abs().max())

    report = {
        "bits": q.bits,
        "llm_int8_threshold": q.llm_int8_threshold,
        "linear_layers": quantized_linear_count(model),
        "before": before,
        "after": after,
        "max_abs_logit_diff": max_logit_diff,
        "probe_prompts": len(probe),
    }
    write_json(report, paths.QUANTIZE_REPORT)
    print(
        f"quantize: bits={q.bits} disk {before['disk_bytes'] / 1e6:.1f} -> {after['disk_bytes'] / 1e6:.1f} MB, "
        f"memory {before['memory_bytes'] / 1e6:.1f} -> {after['memory_bytes'] / 1e6:.1f} MB, "
        f"max |dlogit| {max_logit_diff:.4f}, held-out exact {before['exact_match']:.1%} -> {after['exact_match']:.1%}, "
        f"loss {before['action_loss']:.3f} -> {after['action_loss']:.3f} ({time.perf_counter() - started:.1f} s)"
    )


if __name__ == "__main__":
    main()
