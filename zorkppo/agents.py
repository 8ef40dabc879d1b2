"""Baseline agents behind one interface: act(game, state, valid_actions) -> command | None.

None means the agent has nothing more to say (walkthrough exhausted, human typed EOF)
and ends the episode.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from typing import TextIO

from zorkppo.game import GameState, ZorkGame, clean_command


class Agent:
    name = "agent"
    needs_valid_actions = True

    def reset(self, game: ZorkGame, seed: int) -> None:
        """Start of an episode."""

    def act(self, game: ZorkGame, state: GameState, valid_actions: list[str]) -> str | None:
        raise NotImplementedError


class WalkthroughAgent(Agent):
    """Jericho's walkthrough: 396 commands that win 350/350 with the game's default seed."""

    name = "walkthrough"
    needs_valid_actions = False

    def reset(self, game: ZorkGame, seed: int) -> None:
        self.commands = game.walkthrough()
        self.position = 0

    def act(self, game, state, valid_actions):
        if self.position >= len(self.commands):
            return None
        self.position += 1
        return self.commands[self.position - 1]


class RandomAgent(Agent):
    """Uniform over Jericho's valid actions (the usual random baseline)."""

    name = "random"

    def reset(self, game, seed):
        self.rng = random.Random(seed)

    def act(self, game, state, valid_actions):
        return self.rng.choice(valid_actions) if valid_actions else "look"


class ExplorerAgent(Agent):
    """Greedy novelty seeker: looks one step ahead with save/restore and prefers commands
    that reach unseen rooms, then rarely seen world states, never death."""

    name = "explorer"

    def reset(self, game, seed):
        self.rng = random.Random(seed)
        self.state_visits: Counter[str] = Counter()
        self.rooms_seen: set[str] = set()

    def act(self, game, state, valid_actions):
        self.state_visits[state.world_hash] += 1
        self.rooms_seen.add(state.location)
        if not valid_actions:
            return "look"
        saved = game.save()
        scored = []
        for command in valid_actions:
            outcome = game.step(command)
            game.restore(saved)
            scored.append((self._novelty(state, outcome), self.rng.random(), command))
        return max(scored)[2]

    def _novelty(self, before: GameState, after: GameState) -> float:
        if after.died:
            return -math.inf
        score = 2.0 * (after.location not in self.rooms_seen)
        score += 1.0 / math.sqrt(1 + self.state_visits[after.world_hash])
        score -= 1.0 * (after.world_hash == before.world_hash)
        return score + 0.1 * after.reward


class HumanAgent(Agent):
    """A person at the keyboard; the same recording path as every other source."""

    name = "human"
    needs_valid_actions = False

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def act(self, game, state, valid_actions):
        print(
            f"\n{state.observation}\n[{state.location} | score {state.score} | moves {state.moves}]",
            file=self.stdout,
        )
        while True:
            print("> ", end="", file=self.stdout, flush=True)
            line = self.stdin.readline()
            if not line:  # EOF ends the episode
                return None
            command = clean_command(line)
            if command in {"quit", "q"}:
                return None
            if command:
                return command


AGENTS: dict[str, type[Agent]] = {
    cls.name: cls for cls in (WalkthroughAgent, RandomAgent, ExplorerAgent, HumanAgent)
}


def make_agent(name: str) -> Agent:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known: {', '.join(AGENTS)}")
    return AGENTS[name]()
