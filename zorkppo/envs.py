"""N games at once, one worker process each.

Every game object offers reset(), step(command), valid_actions(), lookahead(commands),
save(), restore(saved), all returning `GameState`s, so the episode stepper plays Zork I and
the tests' toy room through the same code.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
from collections.abc import Callable
from functools import partial

from zorkppo.errors import UserError
from zorkppo.game import ZorkGame


def _worker(connection, make_game: Callable) -> None:
    game = make_game()
    while True:
        method, args = connection.recv()
        if method == "close":
            connection.close()
            return
        if method == "peak_rss_mb":  # the worker's own peak: it is the forkserver's child, not ours
            connection.send(("ok", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
            continue
        try:
            connection.send(("ok", getattr(game, method)(*args)))
        except Exception as exc:  # sent back and raised in the parent, with the game's name
            connection.send(("error", exc))


# Imports that dominate a worker's start when it re-runs the parent's main module.
HEAVY_IMPORTS = ("torch", "transformers", "peft")


def _worker_context():
    """Workers fork from one forkserver that has imported the heavy libraries once.

    Under spawn, each worker re-runs the parent's main module (a stage: torch, transformers,
    peft) before it loads its own frotz: 59-62 s to start 10 workers on 2 loaded cores,
    against 8-14 s from a forkserver that imported them. Forking the parent itself would
    copy its torch thread pools, which is not fork-safe.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(
        ["zorkppo.envs", *(name for name in HEAVY_IMPORTS if name in sys.modules)]
    )
    return context


class VecGames:
    """Games in worker processes (one frotz each), or in-process for tests."""

    def __init__(self, make_game: Callable | list[Callable], count: int, processes: bool = True):
        """`count` games from `make_game`, or game i from make_game[i]."""
        if count < 1:
            raise UserError(f"ppo.num_envs is {count}: it must be at least 1 (one game per worker)")
        makers = make_game if isinstance(make_game, list) else [make_game] * count
        if len(makers) != count:
            raise ValueError(f"{len(makers)} game factories for {count} games")
        self.count = count
        self.processes = processes
        if processes:
            context = _worker_context()
            pipes = [context.Pipe() for _ in range(count)]
            self.connections = [parent for parent, _ in pipes]
            self.workers = [
                context.Process(target=_worker, args=(child, make), daemon=True)
                for (_, child), make in zip(pipes, makers, strict=True)
            ]
            for worker in self.workers:
                worker.start()
        else:
            self.games = [make() for make in makers]

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

    def peak_rss_mb(self) -> float:
        """Largest peak resident memory of a worker (ru_maxrss is KiB on Linux); 0 in-process."""
        return max(self.call("peak_rss_mb")) if self.processes else 0.0

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
