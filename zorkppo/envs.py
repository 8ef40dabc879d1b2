"""N games at once, one worker process each; and a tiny deterministic text room for tests.

Every game object offers reset(), step(command), valid_actions(), save(), restore(saved),
all returning `GameState`s, so PPO plays Zork I and the toy room through the same code.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Callable
from functools import partial

from zorkppo.errors import UserError
from zorkppo.game import GameState, ZorkGame


def _worker(connection, make_game: Callable) -> None:
    game = make_game()
    while True:
        method, args = connection.recv()
        if method == "close":
            connection.close()
            return
        try:
            connection.send(("ok", getattr(game, method)(*args)))
        except Exception as exc:  # sent back and raised in the parent, with the game's name
            connection.send(("error", exc))


class VecGames:
    """Games in worker processes (spawn: each loads its own frotz), or in-process for tests."""

    def __init__(self, make_game: Callable, count: int, processes: bool = True):
        if count < 1:
            raise UserError(f"ppo.num_envs is {count}: it must be at least 1 (one game per worker)")
        self.count = count
        self.processes = processes
        if processes:
            context = mp.get_context("spawn")
            pipes = [context.Pipe() for _ in range(count)]
            self.connections = [parent for parent, _ in pipes]
            self.workers = [
                context.Process(target=_worker, args=(child, make_game), daemon=True)
                for _, child in pipes
            ]
            for worker in self.workers:
                worker.start()
        else:
            self.games = [make_game() for _ in range(count)]

    def call(
        self, method: str, args_per_game: list[tuple] | None = None, only: list[int] | None = None
    ) -> list:
        """Call `method` on the games in `only` (default all), in parallel across workers."""
        indices = list(range(self.count)) if only is None else only
        args = args_per_game or [()] * len(indices)
        if not self.processes:
            return [getattr(self.games[i], method)(*a) for i, a in zip(indices, args, strict=True)]
        for i, a in zip(indices, args, strict=True):
            self.connections[i].send((method, a))
        results = []
        for i in indices:
            status, value = self.connections[i].recv()
            if status == "error":
                raise value
            results.append(value)
        return results

    def close(self) -> None:
        if self.processes:
            for connection in self.connections:
                connection.send(("close", ()))
            for worker in self.workers:
                worker.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def zork_factory(rom_path: str, seed: int) -> Callable[[], ZorkGame]:
    return partial(ZorkGame, rom_path, seed)


class ToyRoom:
    """A one-room text game with one clearly best command.

    `pull` (the lever) scores 10 and ends the episode; every other command scores 0. The
    room text never changes, so the policy sees the same prompt each turn. Commands are
    single words so that, untrained, a ranking policy starts near uniform over them.
    """

    DESCRIPTION = "Vault\nA small stone vault. A lever sticks out of the wall."
    COMMANDS = ("pull", "look", "wait", "north", "sing", "jump", "listen", "smell")
    BEST = "pull"

    def __init__(self, max_score: int = 10):
        self.max_score = max_score
        self.state: GameState | None = None

    def _state(self, observation: str, reward: int, done: bool, moves: int) -> GameState:
        digest = hashlib.md5(f"{done}".encode()).hexdigest()
        return GameState(
            observation,
            self.DESCRIPTION,
            "You are empty-handed.",
            "Vault",
            reward,
            moves,
            reward,
            done,
            done,
            False,
            digest,
        )

    def reset(self) -> GameState:
        self.state = self._state("You wake up in a vault.", 0, False, 0)
        return self.state

    def step(self, command: str) -> GameState:
        best = command == self.BEST
        reply = "The lever moves; a door opens onto gold!" if best else "Nothing happens."
        self.state = self._state(reply, 10 if best else 0, best, self.state.moves + 1)
        return self.state

    def valid_actions(self) -> list[str]:
        return list(self.COMMANDS)

    def save(self):
        return self.state

    def restore(self, saved) -> GameState:
        self.state = saved
        return saved
