"""Trajectory collection: agents play Zork I, one game per worker process, through the episode
stepper (zorkppo.episodes); each turn becomes a trajectory row."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from zorkppo.agents import AgentChooser, make_agent
from zorkppo.envs import VecGames, zork_factory
from zorkppo.episodes import Episodes, Step, play_episodes

SOURCE_ORDER = ("walkthrough", "random", "explorer", "human")


@dataclass(frozen=True)
class EpisodeSpec:
    episode_id: str
    source: str
    agent_seed: int


def episode_specs(episodes_per_source: dict[str, int], seed: int) -> list[EpisodeSpec]:
    specs = []
    for source in SOURCE_ORDER:
        for index in range(episodes_per_source.get(source, 0)):
            episode_id = f"{source}-{index:04d}"
            specs.append(
                EpisodeSpec(episode_id, source, zlib.crc32(f"{seed}/{episode_id}".encode()))
            )
    return specs


def valid_action_form(step: Step) -> str:
    """The valid action that does what the step's command did (same world state and score
    after it), "" if none does: the walkthrough writes `N` and `Get egg`, Jericho's valid
    actions say `north` and `take all from nest` (one command per outcome), and the rank and
    constrained action modes choose among the latter. Needs the step's lookahead."""
    command = step.command.lower()
    if command in step.valid_actions:
        return command
    outcome_of = dict(zip(step.valid_actions, step.outcomes, strict=True))
    # Jericho lists one command per outcome: where several could match, those sharing most
    # words with the command come first, then the shortest.
    words = set(command.split())
    for candidate in sorted(
        step.valid_actions, key=lambda c: (-len(words & set(c.split())), len(c), c)
    ):
        outcome = outcome_of[candidate]
        if outcome.world_hash == step.after.world_hash and outcome.score == step.after.score:
            return candidate
    return ""


def trajectory_row(spec: EpisodeSpec, step: Step) -> dict:
    """The state an action was taken in, the action, then its outcome."""
    before, after = step.before, step.after
    return {
        "episode_id": spec.episode_id,
        "source": spec.source,
        "step": step.step,
        "observation": before.observation,
        "description": before.description,
        "inventory": before.inventory,
        "location": before.location,
        "valid_actions": step.valid_actions,
        "action": step.command,
        "valid_action": valid_action_form(step),
        "reward": after.reward,
        "score": after.score,
        "done": after.done,
        "moves": after.moves,
        "world_hash": before.world_hash,
    }


def play_specs(games: VecGames, specs: list[EpisodeSpec], max_steps: int, progress=None):
    """Every spec's episode in these games; rows in spec order. `progress`: a tqdm bar."""
    if not specs:
        return []
    walkthrough = games.call("walkthrough", only=[0])[0]

    def agent_for(number: int):
        return make_agent(specs[number].source, walkthrough), specs[number].agent_seed

    # history_turns 1: collection renders no prompt
    chooser = AgentChooser(agent_for, look_ahead=True)
    played = play_episodes(Episodes(games, 1), chooser, len(specs), max_steps, progress)
    return [trajectory_row(specs[step.episode], step) for steps in played for step in steps]


def collect_trajectories(
    rom_path: str | Path,
    episodes_per_source: dict[str, int],
    max_steps: int,
    seed: int,
    game_seed: int,
    workers: int,
) -> tuple[list[dict], dict]:
    """All episodes' rows in a fixed order (source, episode), and valid-action cache stats."""
    specs = episode_specs(episodes_per_source, seed)
    # The human plays in this process (it owns the keyboard); the rest in worker processes.
    human = [s for s in specs if s.source == "human"]
    machine = [s for s in specs if s.source != "human"]
    make_game = zork_factory(str(rom_path), game_seed)
    rows, stats = [], []
    if machine:
        progress = tqdm(total=len(machine), desc="collect", unit="episode")
        with VecGames(make_game, min(workers, len(machine))) as games, progress:
            rows += play_specs(games, machine, max_steps, progress)
            stats += games.call("cache_stats")
    if human:
        games = VecGames(make_game, 1, processes=False)
        rows += play_specs(games, human, max_steps)
    hits, misses = sum(s["hits"] for s in stats), sum(s["misses"] for s in stats)
    total = hits + misses
    return rows, {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}
