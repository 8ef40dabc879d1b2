"""Constrained generation (zorkppo.modes.ConstrainedMode) and the one interface of all modes."""

import math

import pytest
import torch
from ppo_helpers import ppo_settings, tiny_policy, toy_prompt, with_random_value_head
from toy_room import ToyRoom

from zorkppo.envs import VecGames
from zorkppo.modes import CommandTrie, ConstrainedMode, action_mode
from zorkppo.trainer import PpoRun, play_turns, start_episodes

# "north" is a prefix of "north east" and "open" of "open door": the end of a command is only
# allowed where one is complete, and both stay reachable.
VALID = ["north", "north east", "open", "open door", "pull", "look", "wait"]


@pytest.fixture(scope="module")
def policy():
    return with_random_value_head(tiny_policy(pretrain_steps=20))


def prompts(n: int) -> list[str]:
    full = toy_prompt()
    return [full[cut:] for cut in (0, 40, 80, 10, 60, 20)][:n]


def test_trie_branches_after_a_command_that_prefixes_another():
    stop = 9
    trie = CommandTrie(
        ["north", "north east", "n"], [[1, 2, stop], [1, 2, 3, stop], [1, stop]], {9}
    )
    assert trie.allowed([]) == [1]
    assert trie.allowed([1]) == [2, stop]
    assert trie.allowed([1, 2]) == [3, stop]  # "north" may end here, or go on to "north east"
    assert trie.ends == {(1, 2, stop): "north", (1, 2, 3, stop): "north east", (1, stop): "n"}
    assert trie.depth == 4
    allowed, steps = trie.positions((1, 2, 3, stop))
    assert allowed.tolist() == [[1, -1], [2, stop], [3, stop], [stop, -1]]
    assert steps.tolist() == [0, 0, 0, 0]
    # tokens after the first stop token are not part of the command (e.g. "\n" then eos)
    assert CommandTrie(["a"], [[5, stop, 7]], {stop}).ends == {(5, stop): "a"}


def test_every_sampled_command_is_valid_and_both_prefix_commands_are_reachable(policy):
    mode = ConstrainedMode()
    generator, seen = torch.Generator().manual_seed(0), set()
    for _ in range(40):
        seen.update(mode.choose(policy, prompts(6), [VALID] * 6, generator, None))
    assert seen <= set(VALID)
    assert {"north", "north east"} <= seen or {"open", "open door"} <= seen, seen
    greedy = mode.choose(policy, prompts(6), [VALID] * 6, None, None)
    assert set(greedy) <= set(VALID)


def test_constrained_policy_is_a_distribution_over_the_valid_commands(policy):
    logprobs = ConstrainedMode().command_logprobs(policy, toy_prompt(), VALID)
    assert set(logprobs) == set(VALID)
    assert math.fsum(math.exp(v) for v in logprobs.values()) == pytest.approx(1.0, abs=1e-5)


def test_allowed_token_probabilities_sum_to_one_at_every_position(policy):
    samples = ConstrainedMode().act(
        policy, prompts(6), [VALID] * 6, torch.Generator().manual_seed(1), None
    )
    for s in samples:
        allowed, dist, steps = s.old_dist
        live = allowed >= 0
        assert dist.shape == allowed.shape == (len(s.options[0]), allowed.shape[1])
        assert torch.isinf(dist[~live]).all()
        assert torch.allclose(dist.logsumexp(-1), torch.zeros(len(dist)), atol=1e-5)
        assert torch.allclose(s.ref_dist.logsumexp(-1), torch.zeros(len(dist)), atol=1e-5)
        # the sample's log-prob is its tokens' renormalised log-probs
        assert s.logprob == pytest.approx(float(dist.gather(1, steps[:, None]).sum()), abs=1e-5)
        assert s.command in VALID


def test_rollout_and_update_log_probs_agree(policy):
    mode = ConstrainedMode()
    tries = mode._tries(policy, [VALID] * 6)
    ids = policy.encode_prompts(prompts(6))
    drawn = mode._sample(policy, ids, torch.Generator().manual_seed(2), tries)
    budget, policy.max_batch_tokens = policy.max_batch_tokens, 0  # one forward: the same draws
    try:
        samples = mode.act(policy, prompts(6), [VALID] * 6, torch.Generator().manual_seed(2), None)
    finally:
        policy.max_batch_tokens = budget
    # the sampler's incremental (KV-cached) log-probs, the rollout's and the update's rescoring
    assert [s.options[0] for s in samples] == [d.tokens for d in drawn]
    sampler = torch.tensor([math.fsum(d.logps) for d in drawn])
    rollout = torch.tensor([s.logprob for s in samples])
    terms = mode.rescore(policy, samples)
    assert torch.allclose(sampler, rollout, atol=1e-5)
    assert torch.allclose(terms["logprob"].detach(), rollout, atol=1e-5)
    values = torch.tensor([s.value for s in samples])
    assert values.std() > 0.01  # the six prompts' values differ: a mix-up would show
    assert torch.allclose(terms["values"].detach(), values, atol=1e-5)
    # no update yet: the policy is the rollout policy (JS 0), and LoRA starts as the reference
    assert float(terms["js"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["entropy"]) > 0.0


def test_generated_rollout_scores_agree_with_the_update_rescoring(policy):
    """Generate mode keeps the sampler's own distributions and the prompt's value from its
    first forward: the update's full forward over prompt and command must give the same."""
    mode = action_mode("generate")
    budget, policy.max_batch_tokens = policy.max_batch_tokens, 0
    try:
        samples = mode.act(policy, prompts(6), None, torch.Generator().manual_seed(5), None)
    finally:
        policy.max_batch_tokens = budget
    terms = mode.rescore(policy, samples)
    rollout = torch.tensor([s.logprob for s in samples])
    assert torch.allclose(terms["logprob"].detach(), rollout, atol=1e-5)
    values = torch.tensor([s.value for s in samples])
    assert values.std() > 0.01
    assert torch.allclose(terms["values"].detach(), values, atol=1e-5)
    assert float(terms["js"]) == pytest.approx(0.0, abs=1e-6)  # the same top-k distributions
    assert float(terms["kl"]) == pytest.approx(0.0, abs=1e-6)


def test_rescore_sends_finite_gradients_to_lora(policy):
    mode = ConstrainedMode()
    samples = mode.act(policy, prompts(4), [VALID] * 4, torch.Generator().manual_seed(3), None)
    terms = mode.rescore(policy, samples)
    loss = -terms["logprob"].mean() - terms["entropy"] + terms["kl"] + terms["js"]
    policy.model.zero_grad()
    loss.backward()
    grads = [p.grad for p in policy.trainable_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad()


@pytest.mark.parametrize("name", ["generate", "rank", "constrained"])
def test_every_mode_plays_rollout_turns_through_one_interface(name):
    policy = tiny_policy()
    cfg = ppo_settings(action_mode=name, num_envs=2, rollout_turns=2)
    run = PpoRun.start(cfg, policy, seed=0)
    mode = run.mode
    samples, records, _ = play_turns(run, start_episodes(VecGames(ToyRoom, 2, processes=False), 3))
    assert len(samples) == len(records) == 2 and all(len(turn) == 2 for turn in samples)
    if mode.needs_valid_actions:  # rank and constrained only ever play valid commands
        assert all(r["command"] in ToyRoom.COMMANDS for turn in records for r in turn)
    terms = mode.rescore(policy, [s for turn in samples for s in turn])
    assert set(terms) == {"logprob", "values", "entropy", "kl", "js"}
    assert all(torch.isfinite(t).all() for t in terms.values())


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown action mode 'beam'"):
        action_mode("beam")
