"""Trajectory collection: agents play Zork I in worker processes (one game per process)."""

from __future__ import annotations

import multiprocessing as mp
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from zorkppo.agents import make_agent
from zorkppo.game import GameState, ZorkGame

SOURCE_ORDER = ("walkthrough", "random", "explorer", "human")


@dataclass(frozen=True)
class EpisodeSpec:
    episode_id: str
    source: str
    agent_seed: int
    max_steps: int


def episode_specs(
    episodes_per_source: dict[str, int], max_steps: int, seed: int
) -> list[EpisodeSpec]:
    specs = []
    for source in SOURCE_ORDER:
        for index in range(episodes_per_source.get(source, 0)):
            episode_id = f"{source}-{index:04d}"
            agent_seed = zlib.crc32(f"{seed}/{episode_id}".encode())
            specs.append(EpisodeSpec(episode_id, source, agent_seed, max_steps))
    return specs


def play_episode(game: ZorkGame, spec: EpisodeSpec) -> list[dict]:
    """One episode as trajectory rows: the state an action was taken in, then its outcome."""
    agent = make_agent(spec.source)
    state = game.reset()
    agent.reset(game, spec.agent_seed)
    rows = []
    for step in range(spec.max_steps):
        valid = game.valid_actions()
        action = agent.act(game, state, valid)
        if action is None:
            break
        before = game.save()
        after = game.step(action)
        rows.append(
            {
                "episode_id": spec.episode_id,
                "source": spec.source,
                "step": step,
                "observation": state.observation,
                "description": state.description,
                "inventory": state.inventory,
                "location": state.location,
                "valid_actions": valid,
                "action": action,
                "valid_action": valid_action_form(game, before, action, after, valid),
                "reward": after.reward,
                "score": after.score,
                "done": after.done,
                "moves": after.moves,
                "world_hash": state.world_hash,
            }
        )
        state = after
        if after.done:
            break
    return rows


def valid_action_form(
    game: ZorkGame, before: tuple, action: str, after: GameState, valid: list[str]
) -> str:
    """The valid action that does what `action` did from the saved state `before` (same world
    state and score after it), "" if none does: the walkthrough writes `N` and `Get egg`,
    Jericho's valid actions say `north` and `take all from nest` (one command per outcome),
    and the rank and constrained action modes choose among the latter. The game is left where `action` took it."""
    if action.lower() in valid:
        return action.lower()
    played = game.save()
    form = ""
    # Jericho lists one command per outcome: where several could match, those sharing most
    # words with the action come first, then the shortest.
    words = set(action.lower().split())
    for candidate in sorted(valid, key=lambda c: (-len(words & set(c.split())), len(c), c)):
        game.restore(before)
        outcome = game.step(candidate)
        if outcome.world_hash == after.world_hash and outcome.score == after.score:
            form = candidate
            break
    game.restore(played)
    return form


# -- worker processes: each holds one game for its whole life --------------------------
_worker_game: ZorkGame | None = None


def _init_worker(rom_path: str, game_seed: int) -> None:
    global _worker_game
    _worker_game = ZorkGame(rom_path, seed=game_seed)


def _run_in_worker(spec: EpisodeSpec) -> tuple[list[dict], dict]:
    ZorkGame.cache_hits = ZorkGame.cache_misses = 0
    rows = play_episode(_worker_game, spec)
    return rows, ZorkGame.cache_stats()


def collect_trajectories(
    rom_path: str | Path,
    episodes_per_source: dict[str, int],
    max_steps: int,
    seed: int,
    game_seed: int,
    workers: int,
) -> tuple[list[dict], dict]:
    """All episodes' rows in a fixed order (source, episode), and valid-action cache stats."""
    specs = episode_specs(episodes_per_source, max_steps, seed)
    # The human plays in this process (it owns the keyboard); the rest go to workers.
    human = [s for s in specs if s.source == "human"]
    machine = [s for s in specs if s.source != "human"]
    results: dict[str, list[dict]] = {}
    hits = misses = 0
    if machine:
        # spawn, not fork: each worker loads its own copy of frotz, as Jericho requires
        context = mp.get_context("spawn")
        with context.Pool(
            min(workers, len(machine)), _init_worker, (str(rom_path), game_seed)
        ) as pool:
            progress = tqdm(total=len(machine), desc="collect", unit="episode")
            for spec, (rows, stats) in zip(
                machine, pool.imap(_run_in_worker, machine, chunksize=1), strict=True
            ):
                results[spec.episode_id] = rows
                hits, misses = hits + stats["hits"], misses + stats["misses"]
                progress.update(1)
            progress.close()
    if human:
        game = ZorkGame(rom_path, seed=game_seed)
        for spec in human:
            results[spec.episode_id] = play_episode(game, spec)
    rows = [row for spec in specs for row in results[spec.episode_id]]
    total = hits + misses
    stats = {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}
    return rows, stats
