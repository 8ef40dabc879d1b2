"""Reward shaping: the game's score delta plus small, separately logged exploration terms."""

from __future__ import annotations

import math

from zorkppo.episodes import Step

TERMS = ("score", "new_location", "death", "valid_command", "novelty")


def reward_terms(step: Step, weights) -> dict[str, float]:
    """Each shaping term of one step, already multiplied by its weight (`ppo.rewards`); their
    sum is the PPO reward."""
    return {
        "score": weights.score * step.after.reward,
        "new_location": weights.new_location * float(step.new_location),
        "death": weights.death * float(step.after.died),
        "valid_command": weights.valid_command * float(step.world_changed),
        # Only a command that changed the world is novel: a no-op "reaches" the state it was
        # typed in, whose visits are counted too, and was paid 0.14 of a real move's 0.2.
        "novelty": weights.novelty / math.sqrt(max(step.visits, 1)) * float(step.world_changed),
    }
