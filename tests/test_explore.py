"""Go-Explore's explore phase after a return (ppo.archive.explore_turns): a returned game's
first turns are valid commands drawn uniformly, scored as the policy scores them, marked
`explored`, kept out of the PPO update, and kept by self-imitation when they score."""

import dataclasses
import math
import random
from collections import Counter

import pytest
import torch
from ppo_helpers import (
    best_command_probability,
    ppo_settings,
    run_iterations,
    tiny_policy,
    toy_prompt,
    with_random_value_head,
)
from toy_room import ToyRoom

from zorkppo.config import ArchiveParams, RewardParams, SelfImitationParams, parse_params
from zorkppo.envs import VecGames
from zorkppo.errors import UserError
from zorkppo.modes import ConstrainedMode
from zorkppo.trainer import PpoRun, play_turns, ppo_update, rollout_kl, start_episodes

COMMANDS = list(ToyRoom.COMMANDS)


@pytest.fixture(scope="module")
def policy():
    return with_random_value_head(tiny_policy(pretrain_steps=20))


def test_explored_commands_are_uniform_and_scored_as_the_policy_scores_them(policy):
    mode, rng, drawn = ConstrainedMode(), random.Random(0), Counter()
    for _ in range(50):
        samples = mode.explore(policy, [toy_prompt()] * 8, [COMMANDS] * 8, rng)
        drawn.update(s.command for s in samples)
    assert set(drawn) == set(COMMANDS)
    assert all(30 <= n <= 70 for n in drawn.values()), drawn  # 400 draws, 50 expected each
    logprobs = mode.command_logprobs(policy, toy_prompt(), COMMANDS)
    rescored = mode.rescore(policy, samples)["logprob"].tolist()
    for sample, again in zip(samples, rescored, strict=True):
        assert sample.explored
        assert sample.logprob == pytest.approx(logprobs[sample.command], abs=1e-5)
        assert again == pytest.approx(sample.logprob, abs=1e-5)


def test_a_returned_game_explores_its_first_turns_then_the_policy_plays(policy):
    cfg = ppo_settings(
        action_mode="constrained",
        rollout_turns=12,
        max_steps=4,
        archive=ArchiveParams(share=1.0, explore_turns=2),
    )
    run = PpoRun.start(cfg, policy, seed=0)
    episodes = start_episodes(VecGames(ToyRoom, cfg.num_envs, processes=False), 3)
    samples, records, _ = play_turns(run, episodes)
    episode_rows: dict[int, list[dict]] = {}
    for row, turn in zip(records, samples, strict=True):
        for record, sample in zip(row, turn, strict=True):
            assert record["explored"] == sample.explored
            episode_rows.setdefault(record["episode"], []).append(record)
    returned = [rows for rows in episode_rows.values() if rows[0]["start"]]
    assert len(returned) >= 4
    for rows in episode_rows.values():
        explored = [r["explored"] for r in rows]
        if rows[0]["start"]:  # returned to the vault: two uniform turns, then the policy's
            assert explored == [k < 2 for k in range(len(rows))], rows
        else:
            assert not any(explored)


def test_the_update_and_the_kl_controller_leave_explored_turns_out():
    fresh = tiny_policy()
    cfg = ppo_settings(action_mode="constrained", ppo_epochs=1, minibatch_size=8)
    run = PpoRun.start(cfg, fresh, seed=0)
    episodes = start_episodes(VecGames(ToyRoom, cfg.num_envs, processes=False), 3)
    samples, _, _ = play_turns(run, episodes)  # 4 games x 4 turns
    advantages, returns = torch.randn(4, 4), torch.randn(4, 4)
    explored = [[dataclasses.replace(s, explored=True) for s in row] for row in samples]
    before = [p.detach().clone() for p in fresh.trainable_parameters()]
    assert ppo_update(run, explored, advantages, returns) == ({}, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.trainable_parameters(), strict=True))
    assert rollout_kl(explored, run.mode) == (0, 0)
    half = samples[:2] + explored[2:]  # 8 of the 16 turns the policy's: one minibatch of 8
    assert ppo_update(run, half, advantages, returns)[1] == 1
    assert ppo_update(run, samples, advantages, returns)[1] == 2
    assert rollout_kl(half, run.mode)[1] == sum(
        run.mode.kl_units(s) for s in samples[0] + samples[1]
    )


def test_exploring_after_returns_finds_what_a_settled_policy_never_plays():
    """The toy room, PPO's rewards all 0, the policy sampling at temperature 0.05: it types
    its favourite command, never `pull` (P 0.0005). Without the explore phase no way scores
    and P(pull) stays; with one uniform turn after each return to the vault, `pull` is found,
    kept, and imitated: in the state the way met it, measured 0.0005 -> 0.15 in 3 iterations."""
    for explore_turns in (0, 1):
        settled = tiny_policy()
        settled.temperature = 0.05
        start = best_command_probability(settled, "constrained")
        cfg = ppo_settings(
            action_mode="constrained",
            temperature=0.05,
            max_steps=2,
            rewards=RewardParams(score=0.0, death=0.0),
            archive=ArchiveParams(share=1.0, explore_turns=explore_turns),
            self_imitation=SelfImitationParams(coef=1.0, keep=2, batch=8),
        )
        _, run, _ = run_iterations(settled, cfg, 3)
        assert start < 0.01
        if explore_turns == 0:
            assert not run.best_ways.ways
            assert best_command_probability(settled, "constrained") < 0.01
        else:
            for way in run.best_ways.ways:
                pull = way.samples[-1]  # the turn that scored
                assert pull.command == ToyRoom.BEST and pull.explored
                now = run.mode.rescore(settled, [pull])["logprob"].exp().item()
                assert math.exp(pull.logprob) < 0.01 and now > 0.1, (pull.logprob, now)


def test_explore_turns_need_constrained_mode():
    with pytest.raises(UserError, match="ppo.archive.explore_turns"):
        parse_params({"ppo": {"archive": {"share": 0.25, "explore_turns": 2}}})
    params = parse_params(
        {"ppo": {"action_mode": "constrained", "archive": {"share": 0.25, "explore_turns": 2}}}
    )
    assert params.ppo.archive.explore_turns == 2
