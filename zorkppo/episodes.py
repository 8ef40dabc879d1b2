"""The one episode stepper: N games in lockstep, each in its current episode.

Collection, PPO rollouts, evaluation, the learning curve and the benches all play through
`Episodes`: the prompt of each game's state and recent turns, `step` (the commands, their
outcomes, and whether each changed the world, computed here once) and `start` (new
episodes). `play_episodes` plays a number of episodes to their end, starting the next one in
a game as soon as its own ends; PPO's rollout (zorkppo.trainer) plays a fixed number of
turns and restarts games itself.
"""

from __future__ import annotations

import copy
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zorkppo.prompt import Turn, render_prompt

if TYPE_CHECKING:  # the engine is imported by the games, not here
    from zorkppo.envs import VecGames
    from zorkppo.game import GameState


class Trail(list):
    """The rollout samples of an episode's turns since the game's start (PPO's
    self-imitation, zorkppo.self_imitation). A deep copy (the archive's copy of an episode, a
    restart's) is a new list of the same samples: samples are never changed, and copying
    their tensors for every archived cell would cost memory for nothing."""

    def __deepcopy__(self, memo) -> Trail:
        return Trail(self)


@dataclass
class Episode:
    """One game's current episode. Picklable: PPO checkpoints hold it."""

    number: int
    state: GameState
    history: deque  # the last `history_turns` turns, the opening text first
    steps: int = 0
    # A dict used as an ordered set: a pickled set's byte order follows the per-process string
    # hash seed, which would make checkpoints of identical runs differ.
    locations: dict = field(default_factory=dict)
    visits: Counter = field(default_factory=Counter)  # world hash -> visits in this episode
    valid_actions: list[str] | None = None  # of `state`, once asked for
    outcomes: list[GameState] | None = None  # each valid action's outcome, once asked for
    start: str = ""  # where it began: "" the game's start, else a saved place (`resume`)
    # PPO with ppo.self_imitation: its samples since the game's start, a returned game's
    # inherited from the game that reached the saved place
    trail: Trail = field(default_factory=Trail)


@dataclass(frozen=True)
class Step:
    """One command in one game: the state it was typed in and the state it led to."""

    game: int  # index among the games
    episode: int  # the episode's number
    step: int  # 0-based within the episode
    before: GameState
    command: str
    after: GameState
    world_changed: bool  # Jericho's notion of a valid command: it changed the world state
    new_location: bool  # first visit to `after.location` in this episode
    visits: int  # visits of `after`'s world state in this episode, this one included
    valid_actions: list[str] | None  # of `before`, where they were asked for
    outcomes: list[GameState] | None  # each valid action's outcome from `before`, likewise


class Episodes:
    """The current episode of each of `games`, numbered `next_number`, then every `stride`
    (replicas interleave their numbers)."""

    def __init__(self, games: VecGames, history_turns: int, next_number: int = 0, stride=1):
        self.games, self.history_turns = games, history_turns
        self.current: list[Episode | None] = [None] * games.count
        self.next_number, self.stride = next_number, stride

    def _take_numbers(self, count: int) -> list[int]:
        end = self.next_number + self.stride * count
        numbers, self.next_number = list(range(self.next_number, end, self.stride)), end
        return numbers

    def _games(self, only: Iterable[int] | None) -> list[int]:
        return list(range(self.games.count)) if only is None else list(only)

    def start(self, only: Iterable[int] | None = None, numbers: Iterable[int] | None = None):
        """New episodes in these games (default all), the games reset; returns their numbers
        (by default the next ones)."""
        only = self._games(only)
        numbers = self._take_numbers(len(only)) if numbers is None else list(numbers)
        states = self.games.call("reset", only=only) if only else []
        for i, number, state in zip(only, numbers, states, strict=True):
            self.current[i] = Episode(
                number,
                state,
                deque([Turn("", state.observation)], maxlen=self.history_turns),
                locations={state.location: None},
                visits=Counter({state.world_hash: 1}),
            )
        return numbers

    def resume(self, only: list[int], saves: list, episodes: list[Episode], starts: list[str]):
        """New episodes in these games that go on from saved places: game `only[k]` is
        restored to `saves[k]`, its episode a copy of `episodes[k]` (recent turns, visits,
        steps) under the next number, its `start` named `starts[k]`. Returns their numbers."""
        if not only:
            return []
        numbers = self._take_numbers(len(only))
        states = self.games.call("restore", [(save,) for save in saves], only=only)
        for i, number, state, episode, start in zip(
            only, numbers, states, episodes, starts, strict=True
        ):
            self.current[i] = copy.deepcopy(episode)
            self.current[i].number, self.current[i].state = number, state
            self.current[i].start = start
        return numbers

    def prompts(self, tokenizer, only: Iterable[int] | None = None) -> list[str]:
        """Each game's prompt: its room, inventory and recent turns (zorkppo.prompt)."""
        return [
            render_prompt(e.state.description, e.state.inventory, list(e.history), tokenizer)
            for e in (self.current[i] for i in self._games(only))
        ]

    def valid_actions(self, only: Iterable[int] | None = None) -> list[list[str]]:
        """Jericho's valid actions of each game's state (asked once per state)."""
        only = self._games(only)
        missing = [i for i in only if self.current[i].valid_actions is None]
        for i, actions in zip(
            missing, self.games.call("valid_actions", only=missing) if missing else [], strict=True
        ):
            self.current[i].valid_actions = actions
        return [self.current[i].valid_actions for i in only]

    def lookahead(self, only: Iterable[int] | None = None) -> list[list[GameState]]:
        """The outcome of each valid action from each game's state (the games stay put)."""
        only = self._games(only)
        valid = self.valid_actions(only)
        missing = [
            (i, v) for i, v in zip(only, valid, strict=True) if self.current[i].outcomes is None
        ]
        if missing:
            outcomes = self.games.call(
                "lookahead", [(v,) for _, v in missing], only=[i for i, _ in missing]
            )
            for (i, _), states in zip(missing, outcomes, strict=True):
                self.current[i].outcomes = states
        return [self.current[i].outcomes for i in only]

    def step(self, commands: list[str], only: Iterable[int] | None = None) -> list[Step]:
        """Type one command in each of these games (default all)."""
        only = self._games(only)
        afters = self.games.call("step", [(c,) for c in commands], only=only) if only else []
        steps = []
        for i, command, after in zip(only, commands, afters, strict=True):
            episode = self.current[i]
            before = episode.state
            new_location = after.location not in episode.locations
            episode.locations[after.location] = None
            episode.visits[after.world_hash] += 1
            steps.append(
                Step(
                    i,
                    episode.number,
                    episode.steps,
                    before,
                    command,
                    after,
                    after.world_hash != before.world_hash,
                    new_location,
                    episode.visits[after.world_hash],
                    episode.valid_actions,
                    episode.outcomes,
                )
            )
            episode.steps += 1
            episode.history.append(Turn(command, after.observation))
            episode.state, episode.valid_actions, episode.outcomes = after, None, None
        return steps

    def state_dict(self) -> dict:
        return {"current": self.current, "next_number": self.next_number, "stride": self.stride}

    def load_state_dict(self, state: dict) -> None:
        self.current, self.next_number = state["current"], state["next_number"]
        self.stride = state["stride"]


# chooser(episodes, games to play) -> a command for each of them; None ends that game's
# episode without a turn (a walkthrough run out, a human at end of input)
Chooser = Callable[[Episodes, list[int]], list[str | None]]


def play_episodes(episodes: Episodes, choose: Chooser, count: int, max_steps: int, progress=None):
    """`count` episodes, each to its end (death, victory or `max_steps` turns), at most one per
    game at a time; a game starts the next episode as soon as its own ends. Returns each
    episode's steps ([episode][turn]), in the order the episodes started. `progress` (a
    tqdm bar) advances by one as each episode ends."""
    active = list(range(min(count, episodes.games.count)))
    played: dict[int, list[Step]] = {number: [] for number in episodes.start(active)}
    while active:
        # an empty generation still costs a turn: it is played as `look`
        commands = [c if c is None else (c or "look") for c in choose(episodes, active)]
        playing = [i for i, c in zip(active, commands, strict=True) if c is not None]
        for step in episodes.step([c for c in commands if c is not None], playing):
            played[step.episode].append(step)
        ended = [
            i
            for i in active
            if i not in playing
            or episodes.current[i].state.done
            or episodes.current[i].steps >= max_steps
        ]
        if progress is not None:
            progress.update(len(ended))
        refill = ended[: max(0, count - len(played))]
        if refill:
            played.update({number: [] for number in episodes.start(refill)})
        active = sorted(set(active) - set(ended) | set(refill))
    return [played[number] for number in sorted(played)]
