"""Return, then explore (Go-Explore, XTX): an archive of the states PPO's own rollouts reached,
from which some rollout games restart instead of starting the game over.

States are grouped into cells by room and score, Go-Explore's coarse view: two states in the
same room with the same score are one place to return to. With `inventory`, what the player
carries is part of the cell too (the things the `inventory` reply lists, as a set: the order
things were taken in does not count, nor what else happened in that turn), so the cellar
entered with a lit lamp and the cellar entered in the dark are two places; without it the
cell is the same whatever was carried. A cell keeps the first, shortest way in that a
rollout found: the game's save there (Jericho restores it exactly) and the episode as it
stood (recent turns, visits, steps), so a game restarted there goes on as the game that
reached it would have. Which cell a restart returns to is drawn with weight (1 + rank of
its score among the archive's scores) / sqrt(1 + times chosen): the frontier (the highest
scores reached) most, a cell chosen often less and less. With `frontier_explore`, the
archive also counts the commands typed in each cell, and a turn
in a cell at the frontier (the highest score the run's games have reached) is, with that
probability, the cell's least-typed valid command instead of the policy's draw: count-based
exploration where the run stands furthest (`act_or_explore`). A policy that has settled on
one way through a place would otherwise only replay it there.
Nothing here knows the game: the cells are what the policy itself reached. Evaluation never
restarts from it.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zorkppo.episodes import Episode, Episodes, Step

if TYPE_CHECKING:
    from zorkppo.game import GameState
    from zorkppo.modes import Sample
    from zorkppo.trainer import PpoRun


@dataclass
class Cell:
    location: str
    score: int
    steps: int  # turns into its episode when it was reached
    save: object  # the game's save there
    episode: Episode  # the episode as it stood there
    chosen: int = 0  # restarts that returned to it


def carried(inventory: str) -> tuple[str, ...]:
    """The things the inventory reply lists (its indented lines: what is carried, and what
    that contains), stripped and sorted: one value for the same things carried. Its other
    lines say what happened in the turn the `inventory` command took (the thief's blow, a
    song bird) and are not carried; empty-handed is ()."""
    items = (line.strip() for line in inventory.splitlines() if line[:1].isspace())
    return tuple(sorted(item for item in items if item))


def cell_of(state: GameState) -> tuple:
    """The cell of a state with what is carried: (room, score, `carried` lines); a lit lamp
    shows there ("providing light")."""
    return (state.location, state.score, carried(state.inventory))


class Archive:
    def __init__(self, inventory: bool = False):
        self.inventory = inventory  # what the player carries is part of the cell
        self.cells: dict[tuple, Cell] = {}
        self.typed: dict[tuple, Counter] = {}  # cell -> the commands typed there, counted

    def key(self, state: GameState) -> tuple:
        """The cell a state falls in: (room, score), and what is carried with `inventory`."""
        return cell_of(state) if self.inventory else (state.location, state.score)

    def record(self, episodes: Episodes, steps: list[Step], max_steps: int) -> int:
        """Archive each state these steps reached that opens a cell, or reaches a known cell
        in fewer turns. An ended episode's last state is no place to return to, nor one with
        no turn left before `max_steps`. Returns how many cells were added or replaced."""
        keep = []
        for s in steps:
            if s.after.done or s.step + 1 >= max_steps:
                continue
            key = self.key(s.after)
            if key not in self.cells or s.step + 1 < self.cells[key].steps:
                keep.append((s, key))
        saves = episodes.games.call("save", only=[s.game for s, _ in keep]) if keep else []
        for (step, key), save in zip(keep, saves, strict=True):
            chosen = self.cells[key].chosen if key in self.cells else 0
            episode = copy.deepcopy(episodes.current[step.game])
            self.cells[key] = Cell(
                step.after.location, step.after.score, step.step + 1, save, episode, chosen
            )
        return len(keep)

    def weights(self) -> list[float]:
        """Each cell's draw weight, in `cells` order (see the module's docstring)."""
        ranks = {
            score: rank for rank, score in enumerate(sorted({c.score for c in self.cells.values()}))
        }
        return [(1 + ranks[c.score]) / math.sqrt(1 + c.chosen) for c in self.cells.values()]

    def choose(self, rng: random.Random) -> Cell:
        (cell,) = rng.choices(list(self.cells.values()), weights=self.weights())
        cell.chosen += 1
        return cell

    def restart(self, episodes: Episodes, ended: list[int], share: float, rng: random.Random):
        """New episodes in the `ended` games: each returns to a drawn cell with probability
        `share` (once the archive holds one), the others start the game over. Returns the
        games that returned."""
        returning = [i for i in ended if self.cells and rng.random() < share]
        fresh = [i for i in ended if i not in returning]
        cells = [self.choose(rng) for _ in returning]
        episodes.resume(
            returning,
            [c.save for c in cells],
            [c.episode for c in cells],
            [f"{c.location} @ {c.score}" for c in cells],
        )
        episodes.start(fresh)
        return returning

    def __len__(self) -> int:
        return len(self.cells)

    def count_typed(self, steps: list[Step]) -> None:
        for s in steps:
            self.typed.setdefault(self.key(s.before), Counter())[s.command] += 1

    def at_frontier(self, state: GameState) -> bool:
        """Whether `state` stands at the highest score of the cells reached so far."""
        return bool(self.cells) and state.score >= max(c.score for c in self.cells.values())

    def least_typed(self, state: GameState, commands: list[str], rng: random.Random) -> str:
        """One of `commands` typed least often in `state`'s cell (ties drawn uniformly)."""
        typed = self.typed.get(self.key(state), Counter())
        fewest = min(typed[c] for c in commands)
        return rng.choice([c for c in commands if typed[c] == fewest])


def act_or_explore(run: PpoRun, episodes: Episodes, prompts, valid) -> list[Sample]:
    """Each game's turn: the policy's sample, or, in a game at the frontier and with
    probability ppo.archive.frontier_explore, its cell's least-typed valid command
    (`mode.explore`, marked explored)."""
    chance, archive = run.cfg.archive.frontier_explore, run.archive
    if not chance:  # draws nothing from run.rng: runs without it stay as they were
        return run.mode.act(run.policy, prompts, valid, run.generator, run.rng)
    states = [e.state for e in episodes.current]
    exploring = [
        i for i, st in enumerate(states) if archive.at_frontier(st) and run.rng.random() < chance
    ]
    playing = [i for i in range(len(prompts)) if i not in exploring]
    turn: list[Sample | None] = [None] * len(prompts)

    def pick(k, commands):  # the k-th exploring game's command
        return archive.least_typed(states[exploring[k]], commands, run.rng)

    for group, act in (
        (playing, lambda p, v: run.mode.act(run.policy, p, v, run.generator, run.rng)),
        (exploring, lambda p, v: run.mode.explore(run.policy, p, v, pick)),
    ):
        if group:
            chosen = act([prompts[i] for i in group], [valid[i] for i in group])
            for i, sample in zip(group, chosen, strict=True):
                turn[i] = sample
    return turn
