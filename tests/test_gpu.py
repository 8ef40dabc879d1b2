"""The CUDA path (`-m gpu`; skipped without a GPU, never in CI): the policy samples, scores and
learns on the GPU as on the CPU, and LLM.int8 on CUDA keeps a real model's logits."""

import pytest
import torch
from int8_helpers import fp32_and_int8_logits, next_token_kl
from ppo_helpers import best_command_probability, ppo_settings, run_iterations, tiny_policy

from zorkppo.policy import Policy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


def on_cuda(policy: Policy) -> Policy:
    return Policy(policy.model.to(CUDA), policy.tokenizer, policy.value_head.to(CUDA),
                  policy.max_prompt_tokens, policy.max_new_tokens)  # fmt: skip


@pytest.mark.parametrize("mode", ["rank", "constrained"])
def test_toy_room_ppo_learns_on_cuda(mode):
    """tests/test_ppo.py's toy-room learning, the model on the GPU."""
    policy = on_cuda(tiny_policy())
    assert policy.device.type == "cuda" and policy.max_batch_tokens == 0  # one batch on a GPU
    start = best_command_probability(policy, mode)
    run_iterations(policy, ppo_settings(action_mode=mode), 5, 0)
    end = best_command_probability(policy, mode)
    assert end > 1.2 * start, (start, end)


def test_int8_on_cuda_keeps_a_real_models_logits(tmp_path):
    """SmolLM2 from the smol profile's GGUF, fp32 and LLM.int8 on the GPU, one prompt."""
    from zorkppo.config import WHEEL_PROFILES
    from zorkppo.errors import UserError
    from zorkppo.model import convert_gguf, wheel_file

    try:
        tokenizer, model = convert_gguf(wheel_file(WHEEL_PROFILES["smol"], "smol"))
    except UserError as error:
        pytest.skip(str(error))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    batch = tokenizer("West of House. There is a small mailbox here.\n>open mailbox",
                      return_tensors="pt").to(CUDA)  # fmt: skip
    kl = next_token_kl(*fp32_and_int8_logits(tmp_path, batch, CUDA))
    assert 0 < float(kl.mean()) < 0.1, kl
