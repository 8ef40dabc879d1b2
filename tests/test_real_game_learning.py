"""PPO learns from the real game's score: Zork I (game seed 12), up the tree by the nest.

The walkthrough's first three commands (north, north, up) lead to a branch beside a bird's
nest holding a jewelled egg. Of the 5 valid actions there, only `take all from nest` scores
(5 points); the others (`close nest`, `down`, `take all`, `take on egg`) score nothing. Every
episode starts on the branch and lasts one turn, so PPO sees that choice again and again.
"""

import math
from functools import partial

from ppo_helpers import ppo_settings, tiny_policy

from zorkppo.config import RewardParams
from zorkppo.envs import VecGames
from zorkppo.game import ZorkGame
from zorkppo.modes import ConstrainedMode
from zorkppo.trainer import PpoRun, start_episodes, train_iteration

OPENING = ("north", "north", "up")
SCORING = "take all from nest"


class UpTheTree(ZorkGame):
    """Zork I, every episode starting after the walkthrough's first three commands."""

    def reset(self):
        state = super().reset()
        for command in OPENING:
            state = self.step(command)
        return state


def command_probabilities(policy, episodes, valid) -> dict[str, float]:
    """The constrained policy's distribution over the valid commands on the branch."""
    prompt = episodes.prompts(policy.tokenizer, only=[0])[0]
    logprobs = ConstrainedMode().command_logprobs(policy, prompt, valid)
    return {command: math.exp(logprob) for command, logprob in logprobs.items()}


def test_constrained_ppo_raises_the_scoring_command_in_zork(rom_path):
    """Measured over seeds 0-3, 5 iterations: P(take all from nest) 0.07-0.11 -> 0.23-0.27.
    An untrained model ranks by summed token log-probs, which favours the one-token `down`
    (P(take all from nest) ~1e-8), so the test plays in constrained mode, where each token is
    a choice among the valid continuations and the 4-token command starts near 1/10."""
    games = VecGames(partial(UpTheTree, rom_path, 12), 4, processes=False)
    episodes = start_episodes(games, 3)
    valid = episodes.valid_actions(only=[0])[0]
    assert episodes.current[0].state.location == "Up a Tree"
    assert SCORING in valid and len(valid) == 5
    policy = tiny_policy(0, prompt=episodes.prompts(None, only=[0])[0], commands=valid)
    before = command_probabilities(policy, episodes, valid)
    cfg = ppo_settings(
        action_mode="constrained",
        max_steps=1,  # one turn an episode: back on the branch after every choice
        rewards=RewardParams(score=1.0, new_location=0.0, death=-5.0, valid_command=0.0),
        target_kl=0.1,  # the shipped early stop, not a loosened one
    )
    run = PpoRun.start(cfg, policy, seed=0)
    score_rewards = [train_iteration(run, episodes)[0]["reward/score"] for _ in range(5)]
    after = command_probabilities(policy, episodes, valid)
    assert 0.05 < before[SCORING] < 0.2, before
    assert after[SCORING] > 2 * before[SCORING] and after[SCORING] > before[SCORING] + 0.1, (
        before,
        after,
        score_rewards,
    )
    assert all(r > 0 for r in score_rewards)  # the 5 points reach PPO as reward
