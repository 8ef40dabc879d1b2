"""Merge a LoRA adapter into its base and quantize with bitsandbytes (LLM.int8 or nf4)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BitsAndBytesConfig

from zorkppo.model import load_adapter, load_causal_lm


def quantization_config(bits, llm_int8_threshold: float = 6.0) -> BitsAndBytesConfig | None:
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=llm_int8_threshold)
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    return None


def merge_adapter(base_path: Path, adapter_path: Path, device: torch.device, dtype: str):
    """Base weights + LoRA deltas folded in: a plain model with no adapter left."""
    base = load_causal_lm(base_path, device, dtype)
    return load_adapter(base, adapter_path).merge_and_unload()


def quantized_linear_count(model) -> dict[str, int]:
    import bitsandbytes as bnb

    kinds = {"int8": bnb.nn.Linear8bitLt, "nf4": bnb.nn.Linear4bit, "full": torch.nn.Linear}
    counts = dict.fromkeys(kinds, 0)
    for module in model.modules():
        for name, kind in kinds.items():
            if type(module) is kind:
                counts[name] += 1
    return counts


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@torch.no_grad()
def logits_on(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    batch = tokenizer(prompts, add_special_tokens=False, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    out = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
    )
    return out.logits.float().cpu() * batch["attention_mask"].unsqueeze(-1)
