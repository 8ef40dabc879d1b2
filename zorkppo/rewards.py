"""Reward shaping: the game's score delta plus small, separately logged exploration terms."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from zorkppo.game import GameState
from zorkppo.prompt import Turn

TERMS = ("score", "new_location", "death", "valid_command", "novelty")


def reward_terms(
    score_delta: float,
    new_location: bool,
    died: bool,
    world_changed: bool,
    state_visits: int,
    weights,
) -> dict[str, float]:
    """Each shaping term already multiplied by its weight; their sum is the PPO reward."""
    return {
        "score": weights.score * score_delta,
        "new_location": weights.new_location * float(new_location),
        "death": weights.death * float(died),
        "valid_command": weights.valid_command * float(world_changed),
        # Only a command that changed the world is novel: a no-op "reaches" the state it was
        # typed in, whose visits are counted too, and was paid 0.14 of a real move's 0.2.
        "novelty": weights.novelty / math.sqrt(max(state_visits, 1)) * float(world_changed),
    }


@dataclass
class EpisodeTracker:
    """What one game's current episode has seen: prompt history, rooms, world states."""

    history_turns: int
    episode: int = 0
    steps: int = 0
    history: deque = field(default_factory=deque)
    # A dict used as an ordered set: a pickled set's byte order follows the per-process string
    # hash seed, which would make checkpoints differ between identical runs.
    locations: dict = field(default_factory=dict)
    visits: Counter = field(default_factory=Counter)

    def start(self, state: GameState) -> None:
        self.steps = 0
        self.history = deque([Turn("", state.observation)], maxlen=self.history_turns)
        self.locations = {state.location: None}
        self.visits = Counter({state.world_hash: 1})

    def record(
        self, before: GameState, command: str, after: GameState, weights
    ) -> dict[str, float]:
        self.steps += 1
        self.history.append(Turn(command, after.observation))
        new_location = after.location not in self.locations
        self.locations[after.location] = None
        self.visits[after.world_hash] += 1
        return reward_terms(
            after.reward,
            new_location,
            after.died,
            after.world_hash != before.world_hash,
            self.visits[after.world_hash],
            weights,
        )
