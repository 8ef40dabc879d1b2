"""Baseline agents behind one interface, and the chooser that plays them in `Episodes`.

act(state, valid_actions, outcomes) -> command | None. `valid_actions` are Jericho's (None
for an agent that does not read them), `outcomes` the state each leads to when the agent
`looks_ahead` (the explorer), else None. None means the agent
has nothing more to say (walkthrough exhausted, human typed EOF) and ends the episode.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from zorkppo.episodes import Episodes
from zorkppo.game import GameState, clean_command


class Agent:
    name = "agent"
    needs_valid_actions = True
    looks_ahead = False

    def reset(self, seed: int) -> None:
        """Start of an episode."""

    def act(self, state: GameState, valid_actions: list[str], outcomes) -> str | None:
        raise NotImplementedError


class WalkthroughAgent(Agent):
    """Jericho's walkthrough: 396 commands that win 350/350 with the game's default seed."""

    name = "walkthrough"
    needs_valid_actions = False

    def __init__(self, commands: list[str]):
        self.commands = list(commands)

    def reset(self, seed):
        self.position = 0

    def act(self, state, valid_actions, outcomes):
        if self.position >= len(self.commands):
            return None
        self.position += 1
        return self.commands[self.position - 1]


class RandomAgent(Agent):
    """Uniform over Jericho's valid actions (the usual random baseline)."""

    name = "random"

    def reset(self, seed):
        self.rng = random.Random(seed)

    def act(self, state, valid_actions, outcomes):
        return self.rng.choice(valid_actions) if valid_actions else "look"


class ExplorerAgent(Agent):
    """Greedy novelty seeker: looks one step ahead and prefers commands that reach unseen
    rooms, then rarely seen world states, never death."""

    name = "explorer"
    looks_ahead = True

    def reset(self, seed):
        self.rng = random.Random(seed)
        self.state_visits: Counter[str] = Counter()
        self.rooms_seen: set[str] = set()

    def act(self, state, valid_actions, outcomes):
        self.state_visits[state.world_hash] += 1
        self.rooms_seen.add(state.location)
        if not valid_actions:
            return "look"
        scored = [
            (self._novelty(state, outcome), self.rng.random(), command)
            for command, outcome in zip(valid_actions, outcomes, strict=True)
        ]
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

    def act(self, state, valid_actions, outcomes):
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


BASELINES = ("walkthrough", "random", "explorer", "human")


def make_agent(name: str, walkthrough: list[str] | None = None) -> Agent:
    if name == "walkthrough":
        return WalkthroughAgent(walkthrough or [])
    agents = {"random": RandomAgent, "explorer": ExplorerAgent, "human": HumanAgent}
    if name not in agents:
        raise ValueError(f"unknown agent {name!r}; known: {', '.join(BASELINES)}")
    return agents[name]()


class AgentChooser:
    """Baseline agents as a chooser (zorkppo.episodes): each new episode gets a fresh agent
    from `agent_for(episode number) -> (agent, seed)`; the agents choose among the valid
    actions, the explorer with their outcomes. `look_ahead` asks every state's outcomes,
    whether an agent reads them or not (collection records each command's valid form)."""

    def __init__(self, agent_for: Callable[[int], tuple[Agent, int]], look_ahead: bool = False):
        self.agent_for, self.look_ahead = agent_for, look_ahead
        self.agents: dict[int, Agent] = {}

    def __call__(self, episodes: Episodes, active: list[int]) -> list[str | None]:
        for i in active:
            episode = episodes.current[i]
            if episode.steps == 0:  # a new episode: a fresh agent
                agent, seed = self.agent_for(episode.number)
                agent.reset(seed)
                self.agents[i] = agent
        episodes.lookahead([i for i in active if self.look_ahead or self.agents[i].looks_ahead])
        episodes.valid_actions([i for i in active if self.agents[i].needs_valid_actions])
        current = [episodes.current[i] for i in active]
        return [
            self.agents[i].act(e.state, e.valid_actions, e.outcomes)
            for i, e in zip(active, current, strict=True)
        ]
