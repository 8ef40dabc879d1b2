"""Load and build models: the tiny local Llama, hub models by pinned revision, LoRA, devices.

Every downstream stage loads a model through `load_causal_lm`, whether the folder holds
real weights (tiny profile) or a manifest naming a hub model and pinned revision.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from zorkppo.errors import UserError

MANIFEST = "manifest.json"
SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Every 8-bit matmul on CPU logs a cast warning; it says nothing actionable.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "model.device is 'cuda' but no CUDA GPU is visible to torch: set model.device=auto "
            "(or cpu), or run on a GPU machine (docker run --gpus all ...)"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


# -- tiny profile -----------------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on game text: any string stays encodable."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, padding_side="left", **SPECIAL_TOKENS
    )


def build_tiny_llama(
    tokenizer, hidden_size, intermediate_size, num_layers, num_heads, max_positions
):
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def build_tiny_model(tiny, texts: list[str]):
    """Tokenizer trained on `texts` (plus the prompt scaffolding) and an untrained Llama at
    the `model.tiny` sizes."""
    from zorkppo.prompt import INSTRUCTION

    tokenizer = train_tokenizer(
        texts + [INSTRUCTION, "Room: Inventory: Recent turns:"], tiny.vocab_size
    )
    model = build_tiny_llama(
        tokenizer,
        tiny.hidden_size,
        tiny.intermediate_size,
        tiny.num_layers,
        tiny.num_heads,
        tiny.max_positions,
    )
    return tokenizer, model


def token_stream(tokenizer, texts: list[str]) -> list[int]:
    """All texts as one token stream, each ended by EOS: the pretraining corpus."""
    return [t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]


def pretrain(
    model, token_stream: list[int], steps, batch_size, seq_len, lr, seed, device
) -> list[float]:
    """Plain language modelling on random windows of the transcript token stream."""
    if len(token_stream) <= seq_len + 1:
        token_stream = token_stream * (seq_len // max(len(token_stream), 1) + 2)
    data = torch.tensor(token_stream)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    losses = []
    model.train()
    for _ in range(steps):
        starts = [rng.randrange(len(data) - seq_len - 1) for _ in range(batch_size)]
        batch = torch.stack([data[s : s + seq_len] for s in starts]).to(device)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# -- loading ----------------------------------------------------------------------------
def write_manifest(path: Path, name: str, revision: str, dtype: str) -> None:
    from zorkppo.io import write_json

    write_json({"name": name, "revision": revision, "dtype": dtype}, Path(path) / MANIFEST)


def _source(path: str | Path) -> tuple[str, dict]:
    """(what to pass to from_pretrained, extra kwargs) for a local dir or a manifest."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"model directory {path} does not exist: run the stage that writes it (dvc repro)"
        )
    manifest = path / MANIFEST
    if manifest.is_file():
        ref = json.loads(manifest.read_text())
        return ref["name"], {"revision": ref["revision"] or None}
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path} holds no model (no config.json or {MANIFEST}): rerun the stage that writes it"
        )
    return str(path), {}


def load_tokenizer(path: str | Path):
    source, kwargs = _source(path)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    tokenizer.padding_side = "left"  # batched generation appends to the right end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str | Path, device: torch.device, dtype: str = "float32", quantization=None
):
    """A causal LM from a local dir or a manifest; `quantization` is a BitsAndBytesConfig."""
    source, kwargs = _source(path)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], **kwargs)
    if quantization is None:
        model = model.to(device)
    return model


def save_adapter(model, out_dir: str | Path) -> None:
    """save_pretrained, then sort target_modules: peft holds them in a set, so the JSON order
    would follow the process's string hash seed and identical runs would differ."""
    model.save_pretrained(out_dir, safe_serialization=True)
    for config_file in Path(out_dir).rglob("adapter_config.json"):
        config = json.loads(config_file.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def attach_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str]):
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
