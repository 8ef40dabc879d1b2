"""What every action mode shares: the Sample a rollout turn leaves, and padding and KL helpers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sample:
    """One turn of one game, as the rollout saw it."""

    prompt_ids: list[int]
    options: list[list[int]]  # generate, constrained: [command tokens]; rank: one per candidate
    chosen: int
    command: str
    logprob: float  # under the rollout policy
    ref_logprob: float
    value: float
    kl: float  # rollout-time KL(policy || reference) for this turn (generate: k3 estimate)
    old_dist: tuple  # the rollout's action distribution, in the mode's own form
    ref_dist: torch.Tensor  # the reference's, likewise
    # chosen by the frontier's exploration, not drawn by the policy (ppo.archive.frontier_explore):
    # no PPO update learns from it; self-imitation may, if its way is kept
    explored: bool = False


def pad(rows: list[torch.Tensor], value) -> torch.Tensor:
    """Stack tensors of different sizes (any number of dims), padding every dim with value."""
    shape = [max(r.shape[d] for r in rows) for d in range(rows[0].dim())]
    out = torch.full((len(rows), *shape), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[(i, *(slice(0, n) for n in r.shape))] = r
    return out


def exact_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || ref) over the last dim of two distributions that are -inf on the same padding."""
    live = torch.isfinite(ref_logp)
    # masked_fill, not where: a -inf inside an unselected branch still sends NaN gradients
    p, r = logp.masked_fill(~live, 0.0), ref_logp.masked_fill(~live, 0.0)
    return (live * p.exp() * (p - r)).sum(-1)
