"""What SFT learns from and how its actions are scored, without the trainer.

Trajectory rows become (prompt, command) examples, episodes are split for held-out
scoring, and `evaluate_actions` measures a model's commands against them. Stages that
only need these (`base`, `quantize`) stay clear of TRL and its imports.
"""

from __future__ import annotations

import math
import random
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


def best_episodes(df: pd.DataFrame, fraction: float) -> set[str]:
    """Per source, the `fraction` of its episodes (at least one) with the highest final score,
    ties to the earlier episode id: reward-filtered imitation ("%BC"), which keeps the episodes
    a novelty-driven explorer happened to play well and drops the ones it wandered in."""
    finals = (
        df.sort_values("step")
        .groupby("episode_id")
        .agg(source=("source", "first"), final=("score", "last"))
    )
    best = set()
    for _, episodes in finals.groupby("source"):
        ranked = episodes.sort_values(["final", "episode_id"], ascending=[False, True]).index
        best |= set(ranked[: max(1, math.ceil(fraction * len(ranked)))])
    return best


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
