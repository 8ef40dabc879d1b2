"""Watch a trained agent play Zork I turn by turn, or play it yourself (and record it).

    python -m zorkppo.play --agent ppo               # watch the PPO agent (also base, sft, quantized,
                                                     #   random, explorer, walkthrough)
    python -m zorkppo.play --human                   # play it yourself

Human play goes through the same HumanAgent as the `collect` stage; to record human play
for SFT, set `collect.episodes.human` and run the stage in a terminal
(`python -m stages.collect`).
"""

from __future__ import annotations

import argparse
import sys
import time

from zorkppo import paths
from zorkppo.collect import EpisodeSpec, play_specs
from zorkppo.config import load_params
from zorkppo.envs import VecGames, zork_factory
from zorkppo.errors import exit_on_user_error
from zorkppo.evaluate import MODEL_AGENTS, agent_chooser, load_agent_policy, play
from zorkppo.model import resolve_device
from zorkppo.rom import installed_rom


def watch(
    agent: str, params, max_steps: int, delay: float, greedy: bool, out=sys.stdout
) -> list[dict]:
    rom = installed_rom(paths.ROM)
    games = VecGames(zork_factory(str(rom), params.game.seed), 1, processes=False)
    policy = None
    if agent in MODEL_AGENTS:
        policy = load_agent_policy(agent, params, resolve_device(params.model.device))
    decoding = "greedy" if greedy else "sample"
    choose = agent_chooser(agent, params, decoding, games.call("walkthrough")[0], policy)

    def narrated(episodes, active):
        command = choose(episodes, active)
        state = episodes.current[0].state
        print(
            f"\n[{state.location} | score {state.score} | moves {state.moves}]\n"
            f"{state.observation}\n> {command[0]}",
            file=out,
            flush=True,
        )
        time.sleep(delay)
        return command

    rows = play(agent, games, narrated, 1, max_steps, params.prompt.history_turns)
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
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.agent:
        watch(args.agent, params, args.max_steps, args.delay, args.greedy)
        return
    games = VecGames(zork_factory(str(installed_rom(paths.ROM)), params.game.seed), 1, False)
    print("Zork I. Type commands; `quit` or Ctrl-D ends the game.")
    rows = play_specs(games, [EpisodeSpec("human-0000", "human", params.seed)], args.max_steps)
    if rows:
        print(f"\nfinal score {rows[-1]['score']} after {len(rows)} turns")


if __name__ == "__main__":
    main()
