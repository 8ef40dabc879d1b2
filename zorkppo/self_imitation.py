"""Self-imitation (XTX, SIL): the policy imitates the best ways from the game's start that its
own rollouts found.

The archive (zorkppo.archive) carries training games past a bottleneck: a game restarted in
the cellar with the lamp lit explores from there. What it finds is not carried back to play
from the start, which is all that evaluation plays. Self-imitation carries it back: every
rollout episode keeps its `trail`, the samples of its turns since the game's start (a game
returned to an archived cell inherits the trail of the game that reached it), and each time
a turn raises the score, the trail up to that turn is offered to `BestWays`. The PPO
update then adds `coef` x the mean negative log-prob of turns drawn from the kept ways to
each minibatch's loss: behaviour cloning on the policy's own best play, which PPO's clipped,
on-policy objective cannot do for a route it sampled once. Nothing here knows the game: the
ways are what the rollouts did.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zorkppo.modes import Sample


@dataclass(frozen=True, eq=False)  # told apart by identity (`offer`), not by tensors
class Way:
    score: int  # the score its last turn reached
    samples: tuple[Sample, ...]  # every turn from the game's start to that one

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(s.command for s in self.samples)


class BestWays:
    """The `keep` best ways offered: the highest score first, then the fewest turns; a way
    with the same commands as a kept one is not kept twice."""

    def __init__(self, keep: int):
        self.keep = keep
        self.ways: list[Way] = []

    def offer(self, score: int, samples: list[Sample]) -> bool:
        """Keep this way if it ranks among the best; returns whether it was kept."""
        way = Way(score, tuple(samples))
        if any(w.commands == way.commands for w in self.ways):
            return False
        ranked = sorted([*self.ways, way], key=lambda w: (-w.score, len(w.samples)))
        self.ways = ranked[: self.keep]
        return any(w is way for w in self.ways)

    def draw(self, count: int, rng: random.Random) -> list[Sample]:
        """`count` turns, each from a way drawn uniformly, then a turn of it uniformly: a short
        way's turns weigh as much as a long one's in all."""
        return [rng.choice(rng.choice(self.ways).samples) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.ways)
