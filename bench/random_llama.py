"""A Llama with a real model's shapes and random weights, written as a sharded checkpoint,
plus the tokenizer and game-like prompts to drive it: what bench/gpu.py measures. Nothing is
downloaded; see bench/gpu.py for why the norm weights are 0.25."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

FALLBACK_TEXT = (
    "West of House\nYou are standing in an open field west of a white house, with a boarded "
    "front door. There is a small mailbox here.",
    "North of House\nYou are facing the north side of a white house. There is no door here, "
    "and all the windows are boarded up. To the north a narrow path winds through the trees.",
    "Forest\nThis is a forest, with trees in all directions. To the east, there appears to be "
    "sunlight.",
)


# -- tokenizer and prompts ----------------------------------------------------------------
def game_prompts(args, tokenizer=None) -> tuple[list[str], str]:
    from bench.common import rom_path

    try:
        rom = rom_path(args.rom) if (args.rom or _rom_exists()) else None
        if rom:
            from bench.tiny import record_game_text

            text = record_game_text(rom, 30, 10, 3, args.seed)
            return text.prompts + text.transcripts, "real Zork I states"
    except (SystemExit, ImportError) as exc:  # no ROM, or no jericho on a GPU host
        print(f"no game text ({exc}): using fixed game-like prompts", flush=True)
    from zorkppo.prompt import Turn, render_prompt

    prompts = [
        render_prompt(
            room, "You are empty-handed.", [Turn("", FALLBACK_TEXT[(i + 1) % 3])], tokenizer
        )
        for i, room in enumerate(FALLBACK_TEXT)
    ]
    return prompts + list(FALLBACK_TEXT), "fixed game-like text (no ROM found)"


def _rom_exists() -> bool:
    from bench.common import ROOT

    return any(
        p and Path(p).is_file()
        for p in (
            os.environ.get("ZORK_ROM"),
            ROOT / "data/roms/zork1.z5",
            ROOT.parent / "shared/roms/zork1.z5",
        )
    )


def build_tokenizer(texts: list[str], vocab: int, seed: int):
    """The project's BPE, trained to exactly `vocab` tokens: game text + synthetic words."""
    from zorkppo.model import train_tokenizer

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [
        "".join(rng.choice(letters) for _ in range(rng.randint(3, 10)))
        for _ in range(max(20000, 12 * vocab))
    ]
    filler = [" ".join(words[i : i + 50]) for i in range(0, len(words), 50)]
    tokenizer = train_tokenizer(texts + filler, vocab)
    if len(tokenizer) < vocab:  # not enough merges: pad with unused tokens so every id decodes
        tokenizer.add_tokens([f"<unused{i}>" for i in range(vocab - len(tokenizer))])
    return tokenizer


def long_prompts(
    prompts: list[str], filler: list[str], tokenizer, games: int, tokens: int
) -> list[str]:
    """`games` prompts of >= `tokens` tokens: earlier game text prepended to a real prompt."""
    out = []
    for g in range(games):
        prompt = prompts[g % len(prompts)]
        before = []
        i = g
        while (
            len(tokenizer(" ".join(before) + prompt, add_special_tokens=False)["input_ids"])
            < tokens
        ):
            before.insert(0, filler[i % len(filler)])
            i += 1
        out.append("\n".join(before) + "\n" + prompt)
    return out


# -- random checkpoint ------------------------------------------------------------------
def llama_config(args, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def write_random_checkpoint(
    config,
    tokenizer,
    path: Path,
    device,
    seed: int,
    norm_weight: float,
    shard_bytes: int = 2 * 2**30,
) -> dict:
    """Shapes from a meta-device model; each tensor drawn on `device`, written in bf16 shards."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        meta = LlamaForCausalLM(config)
    shapes = {name: tuple(t.shape) for name, t in meta.state_dict().items()}
    del meta
    generator = torch.Generator(device=device).manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    shard, shard_size, shards, weight_map, total = {}, 0, [], {}, 0

    def flush():
        nonlocal shard, shard_size
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, str(path / name), metadata={"format": "pt"})
            shards.append(name)
            for key in shard:
                weight_map[key] = name
            shard, shard_size = {}, 0

    started = time.perf_counter()
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensor = torch.full(shape, norm_weight, dtype=torch.bfloat16)
        else:
            tensor = (
                (torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * 0.02)
                .to(torch.bfloat16)
                .cpu()
            )
        size = tensor.numel() * 2
        if shard_size + size > shard_bytes:
            flush()
        shard[name] = tensor
        shard_size += size
        total += size
    flush()
    # save_file names shards before knowing the count; rename to the -of- form transformers expects
    final = {}
    for i, name in enumerate(shards):
        new = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (path / name).rename(path / new)
        final[name] = new
    weight_map = {k: final[v] for k, v in weight_map.items()}
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    config.torch_dtype = "bfloat16"
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return {
        "bytes": total,
        "shards": len(shards),
        "seconds": time.perf_counter() - started,
        "tensors": len(shapes),
    }
