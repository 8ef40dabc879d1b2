"""Count-based exploration at the frontier (ppo.archive.frontier_explore): a turn in a cell at
the highest score reached is, with that probability, the cell's least-typed valid command,
scored as the policy scores it, marked `explored`, kept out of the PPO update, and kept by
self-imitation when it scores."""

import dataclasses
import math
import random

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

from zorkppo.archive import Archive, Cell
from zorkppo.config import ArchiveParams, RewardParams, SelfImitationParams, parse_params
from zorkppo.envs import VecGames
from zorkppo.episodes import Step
from zorkppo.errors import UserError
from zorkppo.game import GameState
from zorkppo.modes import ConstrainedMode
from zorkppo.trainer import PpoRun, play_turns, ppo_update, rollout_kl, start_episodes

COMMANDS = list(ToyRoom.COMMANDS)


def state(location: str, score: int) -> GameState:
    return GameState("", location, "You are empty-handed.", location, score, 0, 0, *[False] * 3, "")


@pytest.fixture(scope="module")
def policy():
    return with_random_value_head(tiny_policy(pretrain_steps=20))


def test_the_least_typed_command_of_a_cell_and_the_frontier_by_hand():
    archive, rng = Archive(), random.Random(0)
    gallery, studio = state("Gallery", 40), state("Studio", 40)
    typed = [(gallery, "north")] * 34 + [(gallery, "south"), (studio, "take all")]
    archive.count_typed(
        [Step(0, 0, 0, before, cmd, before, *[False] * 2, 1, None, None) for before, cmd in typed]
    )
    commands = ["north", "south", "take all"]
    assert {archive.least_typed(gallery, commands, rng) for _ in range(20)} == {"take all"}
    assert {archive.least_typed(studio, commands, rng) for _ in range(50)} == {"north", "south"}
    assert archive.least_typed(state("Cellar", 40), ["down", "up"], rng) in ("down", "up")
    assert not archive.at_frontier(gallery)  # no cell reached yet: no frontier
    archive.cells[("Cellar", 25)] = Cell("Cellar", 25, 15, None, None)
    archive.cells[("Gallery", 40)] = Cell("Gallery", 40, 20, None, None)
    assert archive.at_frontier(gallery) and archive.at_frontier(state("Troll", 44))
    assert not archive.at_frontier(state("Cellar", 25))


def test_explored_commands_are_the_picked_ones_scored_as_the_policy_scores_them(policy):
    mode = ConstrainedMode()
    samples = mode.explore(
        policy, [toy_prompt()] * 3, [COMMANDS] * 3, lambda k, commands: sorted(COMMANDS)[k]
    )
    assert [s.command for s in samples] == sorted(COMMANDS)[:3]
    logprobs = mode.command_logprobs(policy, toy_prompt(), COMMANDS)
    rescored = mode.rescore(policy, samples)["logprob"].tolist()
    for sample, again in zip(samples, rescored, strict=True):
        assert sample.explored
        assert sample.logprob == pytest.approx(logprobs[sample.command], abs=1e-5)
        assert again == pytest.approx(sample.logprob, abs=1e-5)


def test_at_the_frontier_every_turn_explores_and_spreads_over_the_commands(policy):
    cfg = ppo_settings(
        action_mode="constrained", rollout_turns=8, archive=ArchiveParams(frontier_explore=1.0)
    )
    run = PpoRun.start(cfg, policy, seed=0)
    episodes = start_episodes(VecGames(ToyRoom, cfg.num_envs, processes=False), 3)
    samples, records, _ = play_turns(run, episodes)
    for t, (row, turn) in enumerate(zip(records, samples, strict=True)):
        for record, sample in zip(row, turn, strict=True):
            assert record["explored"] == sample.explored == (t > 0)  # no cell before turn 1
            assert record["start"] == ""  # share 0: no game returns
    typed = run.archive.typed[("Vault", 0)]  # the vault at 0 is the frontier until pull ends
    assert set(typed) == set(COMMANDS) and max(typed.values()) - min(typed.values()) <= 4


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


def test_exploring_the_frontier_finds_what_a_settled_policy_never_plays():
    """The toy room, PPO's rewards all 0, the policy sampling at temperature 0.05: it types
    its favourite command, never `pull` (P < 0.01). Without frontier exploration no way
    scores and P(pull) stays; with it, `pull` is found (least typed in the vault), kept and
    imitated: its probability in the state the way met it rises past 0.1 in 3 iterations."""
    for chance in (0.0, 0.25):
        settled = tiny_policy()
        settled.temperature = 0.05
        start = best_command_probability(settled, "constrained")
        cfg = ppo_settings(
            action_mode="constrained",
            temperature=0.05,
            max_steps=2,
            rewards=RewardParams(score=0.0, death=0.0),
            archive=ArchiveParams(share=0.25, frontier_explore=chance),
            self_imitation=SelfImitationParams(coef=1.0, keep=2, batch=8),
        )
        _, run, _ = run_iterations(settled, cfg, 3)
        assert start < 0.01
        if not chance:
            assert not run.best_ways.ways
            assert best_command_probability(settled, "constrained") < 0.01
        else:
            assert run.best_ways.ways
            for way in run.best_ways.ways:
                pull = way.samples[-1]  # the turn that scored
                assert pull.command == ToyRoom.BEST and pull.explored
                now = run.mode.rescore(settled, [pull])["logprob"].exp().item()
                assert math.exp(pull.logprob) < 0.01 and now > 0.1, (pull.logprob, now)


def test_frontier_exploration_needs_constrained_mode():
    with pytest.raises(UserError, match="ppo.archive.frontier_explore"):
        parse_params({"ppo": {"archive": {"frontier_explore": 0.25}}})
    params = parse_params(
        {"ppo": {"action_mode": "constrained", "archive": {"frontier_explore": 0.25}}}
    )
    assert params.ppo.archive.frontier_explore == 0.25
