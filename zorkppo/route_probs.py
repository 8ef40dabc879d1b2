"""Where sampled agents leave the walkthrough: the probability each model agent gives the
walkthrough's command at each of its states, at the evaluation's temperature (generate
mode: the command's tokens up to and including the end of line, one spelling).

    python -m zorkppo.route_probs sft quantized ppo            # the first 100 steps
    python -m zorkppo.route_probs ppo --steps 30 --below 0.9   # rows under 0.9 only

A step far below the rest is where sampled episodes slip off the route (README, "What
PPO does here": `move rug`). Needs the pipeline's models in place (`dvc repro`).
"""

from __future__ import annotations

import argparse
import math

import torch

from zorkppo.config import load_params
from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import (
    load_agent_policy,
    play_episodes,
    require_agent_models,
    walkthrough_chooser,
)
from zorkppo.model import resolve_device
from zorkppo.paths import ROM
from zorkppo.prompt import render_prompt


def walkthrough_route(rom_path: str, game_seed: int, steps: int, history_turns: int):
    """[(description, inventory, history, command)] for the walkthrough's first `steps`
    states, recorded from evaluation's own episode loop playing the walkthrough agent."""
    route = []

    def recording(walk):
        def choose(active, states, trackers, games):
            commands = walk(active, states, trackers, games)
            route.extend(
                (s.description, s.inventory, list(t.history), c)
                for s, t, c in zip(states, trackers, commands, strict=True)
            )
            return commands

        return choose

    with VecGames(zork_factory(rom_path, game_seed), 1, processes=False) as games:
        walkthrough = [c.lower() for c in games.call("walkthrough")[0]]
        play_episodes(
            "walkthrough", games, recording(walkthrough_chooser(walkthrough)), steps, history_turns
        )
    return route


@torch.no_grad()
def command_probabilities(policy, route) -> list[float]:
    """P(command | prompt) under the policy's sampling distribution, one state at a time."""
    probs = []
    for description, inventory, history, command in route:
        prompt = render_prompt(description, inventory, history, policy.tokenizer)
        scored = policy.forward(policy.encode_prompts([prompt]), policy.encode_commands([command]))
        probs.append(math.exp(float(scored.token_logp.sum())))
    return probs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("agents", nargs="+", choices=["base", "sft", "quantized", "ppo"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--below", type=float, default=1.0, help="print rows with any agent under")
    args = parser.parse_args(argv)
    params = load_params("params.yaml")
    require_agent_models(args.agents)
    route = walkthrough_route(str(ROM), params.game.seed, args.steps, params.prompt.history_turns)
    device = resolve_device(params.model.device)
    table = {}  # the evaluation's policy: its temperature, prompt cut and device
    for agent in args.agents:
        policy = load_agent_policy(agent, params, device)
        table[agent] = command_probabilities(policy, route)
    print(f"{'step':>4} {'command':24s} " + " ".join(f"{a:>9s}" for a in table))
    for step, (*_, command) in enumerate(route):
        row = [table[a][step] for a in table]
        if min(row) < args.below:
            print(f"{step:4d} {command:24s} " + " ".join(f"{p:9.3f}" for p in row))
    print(
        f"{'':4s} {'expected slips':24s} "
        + " ".join(f"{sum(1 - p for p in ps):9.2f}" for ps in table.values())
    )


if __name__ == "__main__":
    main()
