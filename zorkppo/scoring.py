"""How well a model plays examples' commands: held-out action loss, and its greedy commands
(decoded by the one sampler, as evaluation decodes them) against the examples'."""

from __future__ import annotations

import torch

from zorkppo.examples import Example
from zorkppo.lm import collate, completion_loss, encode_example
from zorkppo.policy import Policy


@torch.no_grad()
def evaluate_actions(
    model,
    tokenizer,
    examples: list[Example],
    max_prompt_tokens: int,
    max_new_tokens: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Held-out action loss, greedy exact-match accuracy and valid-command rate. The commands
    are decoded as evaluation decodes them (generate mode, greedy)."""
    model.eval()
    device = next(model.parameters()).device
    sampler = Policy(model, tokenizer, None, max_prompt_tokens, max_new_tokens)
    losses, weights, exact, valid = [], [], 0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate(
            [encode_example(tokenizer, e.prompt, e.action, max_prompt_tokens) for e in chunk],
            tokenizer.pad_token_id,
        )
        n_tokens = int((batch["labels"][:, 1:] != -100).sum())
        losses.append(
            completion_loss(model, {k: v.to(device) for k, v in batch.items()}).item() * n_tokens
        )
        weights.append(n_tokens)
        commands = sampler.generate_commands([e.prompt for e in chunk], generator=None)
        for command, e in zip(commands, chunk, strict=True):
            exact += command == e.action
            valid += command in {a.lower() for a in e.valid_actions}
    n = max(len(examples), 1)
    return {
        "action_loss": sum(losses) / max(sum(weights), 1),
        "exact_match": exact / n,
        "valid_command_rate": valid / n,
        "examples": len(examples),
    }
