"""Token-level plumbing shared by SFT, quantize, PPO and evaluation.

Training and scoring batches are right-padded (positions 0..n for every row); generation
batches are left-padded (every prompt ends at the same column). Only completion
(action) tokens carry labels; prompt tokens are -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zorkppo.prompt import completion_text

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens


def encode_example(tokenizer, prompt: str, action: str, max_prompt_tokens: int) -> Encoded:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
    action_ids = tokenizer(completion_text(action, tokenizer), add_special_tokens=False)[
        "input_ids"
    ]
    return Encoded(prompt_ids + action_ids, [IGNORE] * len(prompt_ids) + action_ids)


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor):
    """Per-token log-prob of each label under `logits`, and the mask of label positions.

    Position t predicts token t+1, so both come back shifted: shape [batch, seq-1].
    """
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    mask = target != IGNORE
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of the action tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, mask = token_logprobs(logits, batch["input_ids"], batch["labels"])
    return -(logp.sum() / mask.sum().clamp(min=1))
