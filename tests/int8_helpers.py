"""One prompt through a saved model in float32 and in LLM.int8 (as `quantize` loads it)."""

import torch

from zorkppo.model import load_causal_lm
from zorkppo.quantize import quantization_config


def fp32_and_int8_logits(path, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at every position of `batch`, float32 model first, then int8."""
    logits = []
    for quantization in (None, quantization_config(8)):
        model = load_causal_lm(path, device, quantization=quantization)
        with torch.no_grad():
            logits.append(model(**batch).logits[0].float())
    assert model.is_loaded_in_8bit
    return logits[0], logits[1]


def next_token_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of the next-token distributions, per position, in nats."""
    log_p, log_q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)
