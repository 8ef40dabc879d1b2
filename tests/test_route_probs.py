"""zorkppo.route_probs: the walkthrough's states as evaluation prompts them, and the
probability a policy gives each walkthrough command there."""

import math

from ppo_helpers import tiny_policy

from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import play_episodes, walkthrough_chooser
from zorkppo.prompt import render_prompt
from zorkppo.route_probs import command_probabilities, walkthrough_route

STEPS, HISTORY = 6, 2


def test_route_prompts_are_the_prompts_evaluation_shows_the_walkthrough_agent(rom_path):
    route = walkthrough_route(str(rom_path), 12, STEPS, HISTORY)
    shown = []
    walk = None

    def recording_chooser(active, states, trackers, games):
        shown.extend(
            render_prompt(s.description, s.inventory, list(t.history))
            for s, t in zip(states, trackers, strict=True)
        )
        return walk(active, states, trackers, games)

    with VecGames(zork_factory(str(rom_path), 12), 1, processes=False) as games:
        walk = walkthrough_chooser([c.lower() for c in games.call("walkthrough")[0]])
        play_episodes("walkthrough", games, recording_chooser, STEPS, HISTORY)
    assert [render_prompt(d, i, h) for d, i, h, _ in route] == shown
    assert [c for *_, c in route] == ["n", "n", "u", "get egg", "d", "s"]


def test_probabilities_of_distinct_commands_are_disjoint_events(rom_path):
    (state,) = walkthrough_route(str(rom_path), 12, 1, HISTORY)
    policy = tiny_policy(commands=["n", "north", "s", "get egg", "look"])
    policy.temperature = 0.7
    probs = command_probabilities(
        policy, [(*state[:3], command) for command in ["n", "north", "s", "get egg", "look"]]
    )
    assert all(0.0 < p < 1.0 for p in probs)
    # each command ends with its stop token, so `n` does not also count `north`: the five
    # are disjoint completions and together hold at most all of the probability
    assert math.fsum(probs) <= 1.0 + 1e-6
