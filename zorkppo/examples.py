"""What SFT learns from, without the trainer: trajectory rows become (prompt, command)
examples, and episodes are split for held-out scoring (zorkppo.scoring). Stages that only
need these (`base`, `quantize`) stay clear of TRL and its imports.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pandas as pd

from zorkppo.errors import UserError
from zorkppo.prompt import history_for_row, render_prompt


@dataclass(frozen=True)
class Example:
    episode_id: str
    prompt: str
    action: str
    valid_actions: tuple[str, ...]


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


def until_last_gain(df: pd.DataFrame) -> pd.DataFrame:
    """Each episode's rows up to and including its last scoring turn (reward > 0); the turns
    after it scored nothing more. An episode that never scored keeps no rows."""
    last_gain = df[df.reward > 0].groupby("episode_id").step.max()
    return df[df.step <= df.episode_id.map(last_gain)]  # no gain: NaN, compares False


def imitated_sources(sft) -> list[str]:
    """The sources whose commands SFT imitates: `sft.imitate` among `sft.sources`."""
    return [source for source in sft.sources if source in sft.imitate]


def imitated_rows(df: pd.DataFrame, sft, train_ids: set[str]) -> pd.DataFrame:
    """The training rows SFT imitates: the imitated sources' training episodes, the best
    `sft.imitate_best` of them per source, each up to `sft.imitate_until`."""
    rows = df[df.episode_id.isin(train_ids) & df.source.isin(imitated_sources(sft))]
    rows = rows[rows.episode_id.isin(best_episodes(rows, sft.imitate_best))]
    return until_last_gain(rows) if sft.imitate_until == "last_gain" else rows


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


def heldout_examples(df: pd.DataFrame, split, seed: int, tokenizer, history_turns: int):
    """The held-out episodes' examples that sft and quantize score: all of them, or
    `split.scored_rows` spread evenly over them."""
    _, heldout_ids = split_episodes(df.episode_id, split.heldout_fraction, seed)
    examples = build_examples(df[df.episode_id.isin(heldout_ids)], tokenizer, history_turns)
    if split.scored_rows and len(examples) > split.scored_rows:
        examples = examples[:: math.ceil(len(examples) / split.scored_rows)]
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
