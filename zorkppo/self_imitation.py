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

Ways of one score rank by fewest turns (`rank: turns`), or (`rank: risk`) by turns per safe
arrival: turns / (1 - the risk of the cell the way ends in), a cell being a room, a score
and what is carried, and its risk the share of the run's episodes that were there and then
died (deaths / (episodes + 1): an unseen cell risks nothing). A way that skips a turn
(lighting a lamp, say) and arrives where episodes then die ranks below the longer way whose
arrivals live on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zorkppo.modes import Sample

RANKS = ("turns", "risk")
MIN_SURVIVAL = 0.05  # a cell where every episode died still ranks its ways by turns


@dataclass(frozen=True, eq=False)  # told apart by identity (`offer`), not by tensors
class Way:
    score: int  # the score its last turn reached
    samples: tuple[Sample, ...]  # every turn from the game's start to that one
    end: tuple = ()  # the cell its last turn reached (`zorkppo.archive.cell_of`)

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(s.command for s in self.samples)


class BestWays:
    """The `keep` best ways offered: the highest score first, then the fewest turns (`rank`
    "risk": turns per safe arrival, the module's docstring); a way with the same commands as
    a kept one is not kept twice."""

    def __init__(self, keep: int, rank: str = "turns"):
        if rank not in RANKS:
            raise ValueError(f"rank must be one of {RANKS}, not {rank!r}")
        self.keep, self.rank = keep, rank
        self.ways: list[Way] = []
        self.cells: dict[tuple, list[int]] = {}  # cell -> [episodes that were there, died]
        # episode number -> the cells it reached (a dict as an ordered set: pickles alike)
        self.visiting: dict[int, dict[tuple, None]] = {}

    def risk(self, cell: tuple) -> float:
        """The share of the episodes that were in `cell` and then died (+1 in the count)."""
        episodes, died = self.cells.get(cell, (0, 0))
        return died / (episodes + 1)

    def cost(self, way: Way) -> float:
        """What ranks ways of one score: turns, or turns per safe arrival."""
        if self.rank == "turns":
            return len(way.samples)
        return len(way.samples) / max(1.0 - self.risk(way.end), MIN_SURVIVAL)

    def offer(self, score: int, samples: list[Sample], end: tuple = ()) -> bool:
        """Keep this way if it ranks among the best; returns whether it was kept."""
        way = Way(score, tuple(samples), end)
        if any(w.commands == way.commands for w in self.ways):
            return False
        ranked = sorted([*self.ways, way], key=lambda w: (-w.score, self.cost(w)))
        self.ways = ranked[: self.keep]
        return any(w is way for w in self.ways)

    def observe(self, episode: int, cell: tuple, ended: bool, died: bool) -> None:
        """An episode reached `cell`; once it ends, each cell it reached counts it (and its
        death). Only `rank` "risk" reads the counts."""
        self.visiting.setdefault(episode, {})[cell] = None
        if ended:
            for seen in self.visiting.pop(episode):
                counts = self.cells.setdefault(seen, [0, 0])
                counts[0] += 1
                counts[1] += int(died)

    def draw(self, count: int, rng: random.Random) -> list[Sample]:
        """`count` turns, each from a way drawn uniformly, then a turn of it uniformly: a short
        way's turns weigh as much as a long one's in all."""
        return [rng.choice(rng.choice(self.ways).samples) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.ways)
