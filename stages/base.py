"""Stage `base`: the tiny tokenizer + Llama pretrained on game transcripts, or a hub reference."""

from __future__ import annotations

import argparse
import random
import time

import torch

from zorkppo import paths
from zorkppo.config import load_params
from zorkppo.errors import exit_on_user_error
from zorkppo.io import write_json
from zorkppo.model import (
    build_tiny_llama,
    count_parameters,
    resolve_device,
    seed_everything,
    train_tokenizer,
    write_manifest,
)
from zorkppo.prompt import INSTRUCTION
from zorkppo.records import TRAJECTORIES, atomic_dir, read_table
from zorkppo.sft import episode_transcripts, split_episodes


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


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    model_params = params.model
    started = time.perf_counter()

    if model_params.profile != "tiny":
        name, revision = model_params.hub_reference()
        with atomic_dir(paths.BASE_MODEL) as out:
            write_manifest(out, name, revision, model_params.dtype)
        write_json(
            {"profile": model_params.profile, "name": name, "revision": revision}, paths.BASE_REPORT
        )
        print(
            f"base: {paths.BASE_MODEL} -> {name}@{revision or 'latest'} (loaded from the hub by later stages)"
        )
        return

    device = resolve_device(model_params.device)
    seed_everything(params.seed)
    df = read_table(paths.TRAJECTORIES, TRAJECTORIES).to_pandas()
    train_ids, _ = split_episodes(df.episode_id, params.split.heldout_fraction, params.seed)
    transcripts = episode_transcripts(df[df.episode_id.isin(train_ids)])
    tiny = model_params.tiny
    tokenizer = train_tokenizer(
        transcripts + [INSTRUCTION, "Room: Inventory: Recent turns:"], tiny.vocab_size
    )
    model = build_tiny_llama(
        tokenizer,
        tiny.hidden_size,
        tiny.intermediate_size,
        tiny.num_layers,
        tiny.num_heads,
        tiny.max_positions,
    ).to(device)
    stream = [
        t for text in transcripts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    ]
    losses = pretrain(
        model,
        stream,
        tiny.pretrain_steps,
        tiny.pretrain_batch_size,
        tiny.pretrain_seq_len,
        tiny.pretrain_learning_rate,
        params.seed,
        device,
    )

    with atomic_dir(paths.BASE_MODEL) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    report = {
        "profile": "tiny",
        "parameters": count_parameters(model),
        "vocab_size": len(tokenizer),
        "pretrain_tokens": len(stream),
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_last": losses[-1] if losses else None,
    }
    write_json(report, paths.BASE_REPORT)
    print(
        f"base: {report['parameters']:,} parameters, pretrain loss "
        f"{report['pretrain_loss_first']:.3f} -> {report['pretrain_loss_last']:.3f} "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
