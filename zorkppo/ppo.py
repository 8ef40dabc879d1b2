"""PPO math for LM agents: pure tensor functions, no model or environment state.

CleanRL style: each function is small enough to check by hand, and tests/test_ppo_math.py
does exactly that. Rollouts are 1-D over turns; token-level tensors are [batch, seq].
Masked entries (padding, invalid candidates) carry -inf log-probs, so every function that
reads log-probs must keep those out of its arithmetic: 0 * -inf is NaN, in the forward pass
and, just as easily, in the backward pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

LN2 = math.log(2.0)


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_value: float | Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over one time-ordered rollout.

    dones[t] = 1 means the episode ended after turn t: turn t+1 (if any) starts a new
    episode, so neither its value nor its advantage may leak back into turn t.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    not_done = 1.0 - dones.to(rewards.dtype)
    next_value = torch.as_tensor(last_value, dtype=rewards.dtype, device=rewards.device)
    running = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    # Backwards, because each advantage is the discounted sum of the TD errors after it.
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        running = delta + gamma * lam * not_done[t] * running
        advantages[t] = running
        next_value = values[t]
    # The value target is the lambda-return, so the critic learns what the actor is judged by.
    return advantages, advantages + values


def same_state_advantages(returns: Tensor, states: list[list[str]], fallback: Tensor) -> Tensor:
    """returns [T, N] and states [T][N] (the world hash each command was typed in): each
    turn's advantage is its return minus the mean return of the *other games'* turns typed
    in the same game state. Commands met in one state are thus compared with each other,
    which a critic's single value per state cannot do once it is wrong there. Only other
    games count: a later visit of the same game depends on this turn's command, so it would
    bias the baseline; the other games' play does not. A state no other game played from
    keeps `fallback` (GAE's critic advantage)."""
    values = returns.tolist()  # plain floats: no tensor indexing per turn
    totals: dict[str, list[float]] = {}  # state -> [sum, count] over every game
    own: dict[tuple[str, int], list[float]] = {}  # (state, game) -> [sum, count]
    for t, row in enumerate(states):
        for i, state in enumerate(row):
            for box in (totals.setdefault(state, [0.0, 0]), own.setdefault((state, i), [0.0, 0])):
                box[0] += values[t][i]
                box[1] += 1
    advantages = fallback.clone()
    for t, row in enumerate(states):
        for i, state in enumerate(row):
            others = totals[state][1] - own[state, i][1]
            if others:
                baseline = (totals[state][0] - own[state, i][0]) / others
                advantages[t, i] = values[t][i] - baseline
    return advantages


def normalize(
    x: Tensor, eps: float = 1e-8, moments: tuple | None = None, center: bool = True
) -> Tensor:
    """Zero-mean, unit-std; a single sample has no spread, so it carries no signal.
    `moments`: (mean, std, count) of a larger set x belongs to (every replica's values).
    center False: only divided by the std, so a zero stays zero (no signal stays no signal)."""
    mean, std, count = moments or (x.mean(), x.std(unbiased=False), x.numel())
    if count <= 1:
        return torch.zeros_like(x)
    return ((x - mean) if center else x) / (std + eps)


def _linear_decay(step: float, start: float, horizon: float, floor: float) -> float:
    return max(floor, start * (1.0 - step / horizon))


def clip_range(
    update_step: float, start: float = 0.2, floor: float = 0.1, horizon: float = 1e5
) -> float:
    """PPO clip epsilon, tightened over training; the floor keeps late updates non-zero."""
    return _linear_decay(update_step, start, horizon, floor)


def entropy_coef(
    update_step: float, start: float = 0.01, horizon: float = 1e5, floor: float = 0.0
) -> float:
    """Entropy bonus weight: explore early, then let the policy commit."""
    return _linear_decay(update_step, start, horizon, floor)


def policy_loss(
    logprob_new: Tensor, logprob_old: Tensor, advantages: Tensor, clip: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Clipped surrogate loss, plus clip fraction and approximate KL for logging."""
    log_ratio = logprob_new - logprob_old
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    # max of the two losses = min of the two objectives: take the pessimistic bound, so
    # moving the ratio past the clip earns nothing while moving it the wrong way still costs.
    surrogate = torch.max(unclipped, clipped)
    loss = surrogate.mean()
    with torch.no_grad():
        # k3 estimator: unbiased like k1 but never negative, so it is a usable early-stop signal.
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip).to(ratio.dtype).mean()
    return loss, clip_fraction, approx_kl


def value_loss(values_new: Tensor, values_old: Tensor, returns: Tensor, clip: float) -> Tensor:
    """Clipped value loss: the critic may not jump further than `clip` from its rollout guess."""
    values_clipped = values_old + (values_new - values_old).clamp(-clip, clip)
    # The max makes clipping only ever add loss; it never rewards a large jump.
    squared = torch.max((values_new - returns) ** 2, (values_clipped - returns) ** 2)
    return 0.5 * squared.mean()


def kl_k3_per_token(logprob_policy: Tensor, logprob_ref: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(policy || ref) per sampled token: r - log r - 1 with
    r = p_ref / p_policy. Unbiased like k1 but never negative, so its gradient is tame."""
    log_ratio = logprob_ref - logprob_policy
    return torch.exp(log_ratio) - log_ratio - 1.0


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over the entries where mask is set; an empty mask gives 0, not NaN."""
    keep = mask.bool()
    # where, not x * mask: masked slots may hold -inf or NaN (padding), and 0 * inf is NaN.
    total = torch.where(keep, x, torch.zeros_like(x))
    count = keep.to(x.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp(min=1.0)
    return total.sum(dim) / count.sum(dim).clamp(min=1.0)


@dataclass
class AdaptiveKLController:
    """Adjusts the KL penalty weight so the measured KL stays inside [low, high]."""

    coef: float = 0.2
    low: float = 0.01
    high: float = 0.03
    up: float = 1.5
    down: float = 0.8

    def update(self, mean_kl: float | Tensor) -> float:
        mean_kl = float(mean_kl)
        if mean_kl > self.high:
            self.coef *= self.up
        elif mean_kl < self.low:
            self.coef *= self.down
        return self.coef

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        for name, value in state.items():
            if name not in self.__dataclass_fields__:
                raise KeyError(f"unknown AdaptiveKLController field: {name}")
            setattr(self, name, float(value))


def _finite_or_zero(logp: Tensor) -> Tensor:
    # Zero stands in for -inf where the matching probability is 0 anyway, so p * log p
    # stays 0 in both passes instead of 0 * -inf = NaN.
    return torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))


def js_divergence(logp: Tensor, logq: Tensor) -> Tensor:
    """Jensen-Shannon divergence per row (last dim is the distribution), in nats, in [0, ln 2]."""
    p_live = torch.isfinite(logp)
    q_live = torch.isfinite(logq)
    both_dead = ~(p_live | q_live)
    # Where both are masked, logaddexp(-inf, -inf) has a NaN gradient; feed it zeros instead
    # (those slots contribute nothing: both p and q are 0 there).
    safe_p = logp.masked_fill(both_dead, 0.0)
    safe_q = logq.masked_fill(both_dead, 0.0)
    log_m = torch.logaddexp(safe_p, safe_q) - LN2
    p, q = logp.exp(), logq.exp()
    kl_pm = (p * torch.where(p_live, _finite_or_zero(logp) - log_m, 0.0)).sum(-1)
    kl_qm = (q * torch.where(q_live, _finite_or_zero(logq) - log_m, 0.0)).sum(-1)
    # Rounding can put identical distributions a hair below zero.
    return (0.5 * (kl_pm + kl_qm)).clamp(min=0.0)


def candidate_log_softmax(candidate_scores: Tensor, candidate_mask: Tensor) -> Tensor:
    """Rank mode (GLAM): a policy over a prompt's candidate commands, from their LM scores.

    candidate_scores [batch, n] are summed token log-probs of each candidate; padding slots
    come out at -inf. A row with no valid candidate comes out all -inf rather than NaN.
    """
    valid = candidate_mask.bool()
    scores = torch.where(valid, candidate_scores, float("-inf"))
    # An all-masked row would give logsumexp = -inf and NaN gradients; park it at zeros.
    has_any = valid.any(dim=-1, keepdim=True)
    scores = torch.where(has_any, scores, torch.zeros_like(scores))
    log_probs = scores - scores.logsumexp(dim=-1, keepdim=True)
    return torch.where(valid, log_probs, float("-inf"))


def sequence_logprob(token_logprobs: Tensor, action_mask: Tensor) -> Tensor:
    """Log-prob of the generated command: prompt tokens are context, not the action."""
    keep = action_mask.bool()
    return torch.where(keep, token_logprobs, torch.zeros_like(token_logprobs)).sum(-1)


def categorical_entropy(logp: Tensor) -> Tensor:
    """Entropy over the last dim in nats; -inf (masked) entries contribute 0."""
    return -(logp.exp() * _finite_or_zero(logp)).sum(-1)


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """1 - Var[R - v] / Var[R]: 1 is a perfect critic, 0 no better than the mean, <0 worse."""
    if returns.numel() == 0:
        return 0.0
    var_returns = returns.var(unbiased=False)
    if not torch.isfinite(var_returns) or var_returns == 0:
        return 0.0
    result = float(1.0 - (returns - values).var(unbiased=False) / var_returns)
    return result if math.isfinite(result) else 0.0
