"""PPO learns from the real game's score, by returning to a state it reached: Zork I (game
seed 12), up the tree by the nest.

The walkthrough's first three commands (north, north, up) lead to a branch beside a bird's
nest holding a jewelled egg. Of the 5 valid actions there, only `take all from nest` scores
(5 points); the others (`close nest`, `down`, `take all`, `take on egg`) score nothing. The
archive (ppo.archive) holds the branch, as a rollout that climbed there would have left it;
episodes last one turn, so with `share` 1 every restart returns to the branch and PPO meets
that choice again and again. Without the archive, the same run starts at West of House every
turn and never sees the branch.
"""

import math

import pytest
from ppo_helpers import ppo_settings, tiny_policy

from zorkppo.config import ArchiveParams, RewardParams
from zorkppo.envs import VecGames, zork_factory
from zorkppo.modes import ConstrainedMode
from zorkppo.trainer import PpoRun, start_episodes, train_iteration

OPENING = ("north", "north", "up")
SCORING = "take all from nest"


def branch(rom_path):
    """Four Zork I games, game 0 on the branch (archived there); the prompt and valid
    actions there; and the archive."""
    from zorkppo.archive import Archive

    episodes = start_episodes(VecGames(zork_factory(str(rom_path), 12), 4, processes=False), 3)
    archive = Archive()
    for command in OPENING:
        steps = episodes.step([command], only=[0])
        archive.record(episodes, steps, max_steps=100)
    assert episodes.current[0].state.location == "Up a Tree"
    valid = episodes.valid_actions(only=[0])[0]
    assert SCORING in valid and len(valid) == 5
    cell = archive.cells[("Up a Tree", 0)]
    archive.cells = {("Up a Tree", 0): cell}  # the branch alone to return to
    return episodes, episodes.prompts(None, only=[0])[0], valid, archive


def command_probabilities(policy, prompt, valid) -> dict[str, float]:
    """The constrained policy's distribution over the valid commands on the branch."""
    logprobs = ConstrainedMode().command_logprobs(policy, prompt, valid)
    return {command: math.exp(logprob) for command, logprob in logprobs.items()}


@pytest.mark.parametrize("share", [1.0, 0.0])
def test_returning_to_the_branch_raises_the_command_that_scores_only_there(rom_path, share):
    """Measured over seeds 0-3 with the branch as every episode's start (before the archive
    did it): P(take all from nest) 0.07-0.11 -> 0.23-0.27 in 5 iterations. An untrained model
    ranks by summed token log-probs, which favours the one-token `down`, so the test plays in
    constrained mode, where each token is a choice among the valid continuations."""
    episodes, prompt, valid, archive = branch(rom_path)
    policy = tiny_policy(0, prompt=prompt, commands=valid)
    before = command_probabilities(policy, prompt, valid)
    cfg = ppo_settings(
        action_mode="constrained",
        max_steps=1,  # one turn an episode, then a restart: at the branch, or at the start
        rewards=RewardParams(score=1.0, new_location=0.0, death=-5.0, valid_command=0.0),
        target_kl=0.1,  # the shipped early stop, not a loosened one
        archive=ArchiveParams(share=share),
    )
    run = PpoRun.start(cfg, policy, seed=0)
    if share:
        run.archive = archive
    episodes.start()  # every game at West of House: the archive is the only way up
    metrics = [train_iteration(run, episodes)[0] for _ in range(5)]
    after = command_probabilities(policy, prompt, valid)
    assert 0.05 < before[SCORING] < 0.2, before
    if share:
        assert after[SCORING] > 2 * before[SCORING] and after[SCORING] > before[SCORING] + 0.1
        assert sum(m["reward/score"] for m in metrics) > 0  # the 5 points reach PPO
    else:  # the branch never played: the command moved by generalisation alone, little
        assert abs(after[SCORING] - before[SCORING]) < 0.05, (before, after)
        assert all(m["reward/score"] == 0 for m in metrics)
