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

import torch

from zorkppo.modes import Sample


@dataclass(frozen=True, eq=False)  # told apart by identity (`offer`), not by tensors
class Way:
    score: int  # the score its last turn reached
    samples: tuple[Sample, ...]  # every turn from the game's start to that one
    cell: tuple | None = None  # the archive cell its last turn reached (`per_cell`)

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(s.command for s in self.samples)


class BestWays:
    """The `keep` best ways offered: the highest score first, then the fewest turns; a way
    with the same commands as a kept one is not kept twice. With `per_cell`, only the best
    way into each cell is kept (the cell of the state its last turn reached, zorkppo.archive):
    four ways into the dark cellar at 40 no longer crowd out the one into the lit cellar at
    40, a turn longer."""

    def __init__(self, keep: int, per_cell: bool = False):
        self.keep = keep
        self.per_cell = per_cell
        self.ways: list[Way] = []

    def offer(self, score: int, samples: list[Sample], cell: tuple | None = None) -> bool:
        """Keep this way if it ranks among the best; returns whether it was kept."""
        way = Way(score, tuple(samples), cell)
        if any(w.commands == way.commands for w in self.ways):
            return False
        ranked = sorted([*self.ways, way], key=lambda w: (-w.score, len(w.samples)))
        if self.per_cell:  # the first (best) way into each cell
            ranked = [w for i, w in enumerate(ranked) if all(v.cell != w.cell for v in ranked[:i])]
        self.ways = ranked[: self.keep]
        return any(w is way for w in self.ways)

    def draw(
        self, count: int, rng: random.Random, unlikely: list[list[float]] | None = None
    ) -> list[Sample]:
        """`count` turns, each from a way drawn uniformly, then a turn of it uniformly: a short
        way's turns weigh as much as a long one's in all. With `unlikely` (per way, per turn:
        1 - the policy's probability of that turn's command) a turn's weight within its way
        is multiplied by it: the turns the policy already replays are drawn less, those it
        does not (SIL's prioritised replay) more."""
        if unlikely is None:
            return [rng.choice(rng.choice(self.ways).samples) for _ in range(count)]
        turns = [s for w in self.ways for s in w.samples]
        weights = []  # each way's turns sum to 1: a way is still drawn uniformly
        for way_unlikely in unlikely:
            total = sum(way_unlikely)
            n = len(way_unlikely)
            weights += [u / total for u in way_unlikely] if total > 0 else [1 / n] * n
        return rng.choices(turns, weights=weights, k=count)

    def unlikely(self, policy, mode, chunk: int) -> list[list[float]]:
        """Per kept way, per turn: 1 - the policy's probability of the turn's command now, the
        `unlikely` draw's weights (scored `chunk` turns at a time, without gradients)."""
        with torch.no_grad():
            return [
                [
                    1 - p
                    for i in range(0, len(w.samples), chunk)
                    for p in mode.rescore(policy, list(w.samples[i : i + chunk]))["logprob"]
                    .exp()
                    .tolist()
                ]
                for w in self.ways
            ]

    def __len__(self) -> int:
        return len(self.ways)
