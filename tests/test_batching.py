"""Policy forwards grouped by length (ppo.max_batch_tokens): the groups, and that grouping
changes no result, only how many rows share a forward."""

import random

import pytest
import torch
from ppo_helpers import tiny_policy, toy_prompt, with_random_value_head
from toy_room import ToyRoom

from zorkppo.modes import GenerateMode, RankMode, action_mode, rank_distribution
from zorkppo.policy import CPU_BATCH_TOKENS, Policy, length_buckets


def test_length_buckets_hand_values():
    # longest first: 300 | 250 fits beside it (2 x 300 = 600), 200 would not (3 x 300)
    assert length_buckets([100, 300, 200, 250], [1, 1, 1, 1], 600) == [[1, 3], [2, 0]]
    assert length_buckets([100, 300, 200, 250], [1, 1, 1, 1], 0) == [[0, 1, 2, 3]]
    assert length_buckets([700, 10], [1, 1], 600) == [[0], [1]]  # too wide: a group of its own
    # rank mode: a game is rows[i] candidate rows; 4 + 3 rows x 100 tokens > 600
    assert length_buckets([100, 100], [4, 3], 600) == [[0], [1]]
    assert length_buckets([100, 100, 90], [3, 3, 2], 600) == [[0, 1], [2]]
    assert length_buckets([50, 50, 50], [1, 1, 1], 150) == [[0, 1, 2]]  # ties keep input order


def prompts_of_different_lengths() -> list[str]:
    full = toy_prompt()
    return [full[cut:] for cut in (0, 60, 10, 90, 30)]


def test_auto_budget_is_small_on_cpu_and_explicit_values_are_kept():
    policy = tiny_policy()
    assert policy.max_batch_tokens == CPU_BATCH_TOKENS
    parts = (policy.model, policy.tokenizer, policy.value_head, 256)
    assert Policy(*parts, max_batch_tokens=0).max_batch_tokens == 0
    assert Policy(*parts, max_batch_tokens=2048).max_batch_tokens == 2048


def test_auto_budget_is_one_batch_for_an_8bit_model_on_cpu(tmp_path):
    # bitsandbytes' int8 matmul costs much per call on CPU: fewer, wider forwards win there
    from zorkppo.model import load_causal_lm
    from zorkppo.quantize import quantization_config

    policy = tiny_policy()
    policy.model.merge_and_unload().save_pretrained(tmp_path)
    model = load_causal_lm(tmp_path, torch.device("cpu"), quantization=quantization_config(8))
    assert model.is_loaded_in_8bit
    parts = (model, policy.tokenizer, policy.value_head, 256)
    assert Policy(*parts).max_batch_tokens == 0
    assert Policy(*parts, max_batch_tokens=512).max_batch_tokens == 512


@pytest.fixture(scope="module")
def policies():
    """The same tiny policy twice: one batch of everything, and at most ~1 prompt per forward."""
    one_batch, grouped = (with_random_value_head(tiny_policy()) for _ in range(2))
    one_batch.max_batch_tokens, grouped.max_batch_tokens = 0, 1
    return one_batch, grouped


def test_grouped_values_and_greedy_commands_match_one_batch(policies):
    one_batch, grouped = policies
    prompts = prompts_of_different_lengths()
    ids = one_batch.encode_prompts(prompts)
    values = one_batch.values(ids)
    assert values.std() > 0.01  # the prompts' values differ: a mix-up would show
    assert torch.allclose(values, grouped.values(ids), atol=1e-5)
    candidates = [list(ToyRoom.COMMANDS), list(ToyRoom.COMMANDS[:3])] * 2 + [["look"]]
    for name in ("generate", "rank", "constrained"):
        mode = action_mode(name)
        greedy = [mode.choose(p, prompts, candidates, None, random.Random(0)) for p in policies]
        assert greedy[0] == greedy[1], name


def test_grouped_act_generate_returns_samples_in_prompt_order(policies):
    one_batch, grouped = policies
    prompts = prompts_of_different_lengths()
    samples = GenerateMode().act(grouped, prompts, None, torch.Generator().manual_seed(0), None)
    ids = one_batch.encode_prompts(prompts)
    assert [s.prompt_ids for s in samples] == ids
    # each sample's log-prob and value are those of its own prompt and action in one batch
    scored = one_batch.forward(ids, [s.options[0] for s in samples])
    logprobs = scored.token_logp.sum(-1)
    assert torch.allclose(torch.tensor([s.logprob for s in samples]), logprobs, atol=1e-4)
    assert torch.allclose(torch.tensor([s.value for s in samples]), scored.values, atol=1e-5)


def test_grouped_act_rank_returns_samples_in_prompt_order(policies):
    one_batch, grouped = policies
    prompts = prompts_of_different_lengths()
    candidates = [list(ToyRoom.COMMANDS[: 2 + i % 3]) for i in range(len(prompts))]
    samples = RankMode(8).act(
        grouped, prompts, candidates, torch.Generator().manual_seed(0), random.Random(0)
    )
    ids = one_batch.encode_prompts(prompts)
    dist, values = rank_distribution(one_batch, ids, [s.options for s in samples])
    for r, sample in enumerate(samples):
        assert sample.prompt_ids == ids[r]
        assert sample.command == candidates[r][sample.chosen]
        assert len(sample.options) == len(candidates[r])
        assert sample.logprob == pytest.approx(float(dist[r, sample.chosen]), abs=1e-4)
        assert sample.value == pytest.approx(float(values[r]), abs=1e-5)
