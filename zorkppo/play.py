"""Watch a trained agent play Zork I turn by turn, or play it yourself (and record it).

    python -m zorkppo.play --agent ppo               # watch the PPO agent (also base, sft, quantized,
                                                     #   random, explorer, walkthrough)
    python -m zorkppo.play --human --record data/human/me.parquet   # play; saved like `collect`'s human source

Human play goes through the same HumanAgent and episode recorder as the `collect` stage,
so a recording is a trajectories/1 Parquet file that SFT can read.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from zorkppo import paths
from zorkppo.collect import EpisodeSpec, play_episode
from zorkppo.config import load_params
from zorkppo.envs import VecGames, zork_factory
from zorkppo.errors import exit_on_user_error
from zorkppo.evaluate import (
    MODEL_AGENTS,
    agent_chooser,
    load_agent_policy,
    play_episodes,
    policy_chooser,
    walkthrough_chooser,
)
from zorkppo.game import ZorkGame
from zorkppo.model import resolve_device
from zorkppo.records import TRAJECTORIES, write_table
from zorkppo.rom import installed_rom


def watch(
    agent: str, params, max_steps: int, delay: float, greedy: bool, out=sys.stdout
) -> list[dict]:
    rom = installed_rom(paths.ROM)
    games = VecGames(zork_factory(str(rom), params.game.seed), 1, processes=False)
    if agent in ("random", "explorer"):
        choose = agent_chooser(agent, params.seed)
    elif agent == "walkthrough":
        choose = walkthrough_chooser(games.call("walkthrough")[0])
    else:
        policy = load_agent_policy(agent, params, resolve_device(params.model.device))
        generator = None if greedy else torch.Generator().manual_seed(params.seed)
        choose = policy_chooser(
            policy, policy.tokenizer, generator, params.eval.action_mode, params.eval.max_candidates
        )

    def narrated(active, states, trackers, games_):
        command = choose(active, states, trackers, games_)
        print(
            f"\n[{states[0].location} | score {states[0].score} | moves {states[0].moves}]\n"
            f"{states[0].observation}\n> {command[0]}",
            file=out,
            flush=True,
        )
        time.sleep(delay)
        return command

    rows = play_episodes(agent, games, narrated, max_steps, params.prompt.history_turns)
    last = rows[-1]
    print(
        f"\n{last['reply']}\n\n{agent}: final score {last['score']} after {len(rows)} turns",
        file=out,
    )
    return rows


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", choices=[*MODEL_AGENTS, "random", "explorer", "walkthrough"])
    who.add_argument("--human", action="store_true")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument(
        "--delay", type=float, default=0.5, help="seconds between turns when watching"
    )
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument(
        "--record", default="", help="human play: Parquet file to save the episode to"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.agent:
        watch(args.agent, params, args.max_steps, args.delay, args.greedy)
        return
    game = ZorkGame(installed_rom(paths.ROM), seed=params.game.seed)
    print("Zork I. Type commands; `quit` or Ctrl-D ends the game.")
    rows = play_episode(game, EpisodeSpec("human-0000", "human", params.seed, args.max_steps))
    if args.record and rows:
        write_table(rows, args.record, TRAJECTORIES)
        print(f"recorded {len(rows)} turns to {args.record}")


if __name__ == "__main__":
    main()
