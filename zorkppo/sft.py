"""Supervised warm-start data and loop: trajectories -> (prompt, action) -> LoRA updates.

We use a short loop of our own rather than TRL's SFTTrainer: the same `encode_example`
(prompt labels -100) and `completion_loss` are what PPO and `quantize` score with, the
loop is bit-for-bit repeatable on CPU, and it is twenty lines to read.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from zorkppo.errors import UserError
from zorkppo.lm import collate, completion_loss, encode_example, generate_commands
from zorkppo.prompt import history_for_row, render_prompt


@dataclass(frozen=True)
class Example:
    episode_id: str
    prompt: str
    action: str
    valid_actions: tuple[str, ...]


def with_command_form(df, form: str):
    """Trajectory rows with each command as played, or (form "valid") in its valid-action
    form where one does the same; SFT's targets and the prompts' history use it alike."""
    if form == "played":
        return df
    return df.assign(action=df.valid_action.where(df.valid_action != "", df.action))


def split_episodes(episode_ids, heldout_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Held-out episodes (at least one, never all) chosen by a seeded shuffle."""
    ids = sorted(set(episode_ids))
    if len(ids) < 2:
        raise UserError(
            f"need at least 2 episodes to hold one out, got {len(ids)}: raise collect.episodes"
        )
    random.Random(seed).shuffle(ids)
    n_heldout = min(len(ids) - 1, max(1, round(heldout_fraction * len(ids))))
    return set(ids[n_heldout:]), set(ids[:n_heldout])


def build_examples(df: pd.DataFrame, tokenizer, history_turns: int) -> list[Example]:
    examples = []
    for episode_id, episode in df.groupby("episode_id", sort=True):
        rows = episode.sort_values("step").to_dict("records")
        for index, row in enumerate(rows):
            history = history_for_row(rows, index, history_turns)
            prompt = render_prompt(row["description"], row["inventory"], history, tokenizer)
            examples.append(
                Example(episode_id, prompt, row["action"].lower(), tuple(row["valid_actions"]))
            )
    return examples


def episode_transcripts(df: pd.DataFrame) -> list[str]:
    """Plain game transcripts (opening text, then `> command` and reply), for pretraining."""
    texts = []
    for _, episode in df.groupby("episode_id", sort=True):
        rows = episode.sort_values("step").to_dict("records")
        parts = [rows[0]["observation"]]
        for i, row in enumerate(rows):
            reply = rows[i + 1]["observation"] if i + 1 < len(rows) else ""
            parts.append(f"> {row['action'].lower()}\n{reply}")
        texts.append("\n".join(parts))
    return texts


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` updates, then cosine decay to 0 at update `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_lora(
    model,
    tokenizer,
    examples: list[Example],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    max_prompt_tokens: int,
    seed: int,
    log: Callable[[int, float], None] = lambda step, loss: None,
    warmup_fraction: float = 0.05,
    check_every: int = 0,
    learned: Callable[[], bool] = lambda: False,
) -> int:
    """Minibatch AdamW on the trainable (LoRA) weights, warm-up + cosine learning rate; returns
    the number of updates. Every `check_every` epochs (0: never) `learned()` is asked whether
    the model has learned its data; training stops early when it says so."""
    if not examples:
        raise UserError(
            "the SFT training set is empty after filtering: check sft.sources and split"
        )
    encoded = [encode_example(tokenizer, e.prompt, e.action, max_prompt_tokens) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    total = epochs * math.ceil(len(encoded) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, max(1, round(warmup_fraction * total)))
    )
    order = random.Random(seed)
    device = next(model.parameters()).device
    step = 0
    model.train()
    for epoch in range(epochs):
        indices = list(range(len(encoded)))
        order.shuffle(indices)
        for start in range(0, len(indices), batch_size):
            batch = collate(
                [encoded[i] for i in indices[start : start + batch_size]], tokenizer.pad_token_id
            )
            loss = completion_loss(model, {k: v.to(device) for k, v in batch.items()})
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            log(step, loss.item())
            step += 1
        if check_every and (epoch + 1) % check_every == 0 and epoch + 1 < epochs:
            model.eval()
            done = learned()
            model.train()
            if done:
                break
    model.eval()
    return step


@torch.no_grad()
def evaluate_actions(
    model,
    tokenizer,
    examples: list[Example],
    max_prompt_tokens: int,
    max_new_tokens: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Held-out action loss, greedy exact-match accuracy and valid-command rate."""
    model.eval()
    device = next(model.parameters()).device
    losses, weights, exact, valid = [], [], 0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate(
            [encode_example(tokenizer, e.prompt, e.action, max_prompt_tokens) for e in chunk],
            tokenizer.pad_token_id,
        )
        n_tokens = int((batch["labels"][:, 1:] != -100).sum())
        losses.append(
            completion_loss(model, {k: v.to(device) for k, v in batch.items()}).item() * n_tokens
        )
        weights.append(n_tokens)
        commands = generate_commands(
            model,
            tokenizer,
            [e.prompt for e in chunk],
            max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )
        for command, e in zip(commands, chunk, strict=True):
            exact += command == e.action
            valid += command in {a.lower() for a in e.valid_actions}
    n = max(len(examples), 1)
    return {
        "action_loss": sum(losses) / max(sum(weights), 1),
        "exact_match": exact / n,
        "valid_command_rate": valid / n,
        "examples": len(examples),
    }
