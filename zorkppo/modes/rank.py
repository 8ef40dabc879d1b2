"""rank mode (GLAM): a softmax over candidate commands of their summed token log-probs."""

from __future__ import annotations

import math

import torch

from zorkppo import ppo
from zorkppo.modes.common import Sample, exact_kl, pad


def draw_candidates(valid_actions: list[str], max_candidates: int, rng) -> list[str]:
    """Rank mode's candidates: the valid actions, capped at max_candidates by a seeded draw
    (in PPO rollouts and evaluation alike); "look" when the game offers none."""
    actions = list(valid_actions) or ["look"]
    if len(actions) <= max_candidates:
        return actions
    return sorted(rng.sample(actions, max_candidates))


class RankMode:
    """A softmax over candidate commands of their summed token log-probs (GLAM)."""

    needs_valid_actions = True

    def __init__(self, max_candidates: int):
        self.max_candidates = max_candidates

    def _in_buckets(self, policy, run, prompts, valid, rng):
        """run([(prompt ids, option token lists, candidate commands)]) over length buckets;
        each game's rows are its candidates, each its prompt plus that option."""
        candidates = [draw_candidates(v, self.max_candidates, rng) for v in valid]
        prompt_ids = policy.encode_prompts(prompts)
        options = [policy.encode_commands(cands) for cands in candidates]
        return policy.in_buckets(
            run,
            list(zip(prompt_ids, options, candidates, strict=True)),
            [len(p) + max(map(len, opts)) for p, opts in zip(prompt_ids, options, strict=True)],
            [len(opts) for opts in options],
        )

    @torch.no_grad()
    def choose(self, policy, prompts, valid, generator, rng) -> list[str]:
        def pick(group: list[tuple]) -> list[str]:
            dist, _ = rank_distribution(policy, [g[0] for g in group], [g[1] for g in group])
            picks = (
                dist.argmax(-1)
                if generator is None
                else torch.multinomial(dist.exp().cpu(), 1, generator=generator)[:, 0]
            )
            return [cands[int(i)] for (_, _, cands), i in zip(group, picks, strict=True)]

        return self._in_buckets(policy, pick, prompts, valid, rng)

    @torch.no_grad()
    def act(self, policy, prompts, valid, generator, rng) -> list[Sample]:
        return self._in_buckets(
            policy, lambda group: self._act(policy, group, generator), prompts, valid, rng
        )

    def _act(self, policy, group: list[tuple], generator) -> list[Sample]:
        prompt_ids, options, candidates = (list(column) for column in zip(*group, strict=True))
        dist, values = rank_distribution(policy, prompt_ids, options)
        ref_dist, _ = rank_distribution(policy, prompt_ids, options, reference=True)
        samples = []
        for r, (p, opts) in enumerate(zip(prompt_ids, options, strict=True)):
            n = len(opts)
            chosen = int(torch.multinomial(dist[r, :n].exp().cpu(), 1, generator=generator))
            samples.append(
                Sample(
                    p,
                    opts,
                    chosen,
                    candidates[r][chosen],
                    float(dist[r, chosen]),
                    float(ref_dist[r, chosen]),
                    float(values[r]),
                    float(exact_kl(dist[r, :n], ref_dist[r, :n])),
                    (dist[r, :n].cpu(),),
                    ref_dist[r, :n].cpu(),
                )
            )
        return samples

    def rescore(self, policy, batch: list[Sample]) -> dict[str, torch.Tensor]:
        dist, values = rank_distribution(
            policy, [s.prompt_ids for s in batch], [s.options for s in batch]
        )
        chosen = torch.tensor([s.chosen for s in batch], device=dist.device)
        old = pad([s.old_dist[0] for s in batch], -math.inf).to(dist.device)
        ref = pad([s.ref_dist for s in batch], -math.inf).to(dist.device)
        return {
            "logprob": dist.gather(1, chosen[:, None]).squeeze(1),
            "values": values,
            "entropy": ppo.categorical_entropy(dist).mean(),
            "kl": exact_kl(dist, ref).mean(),
            "js": ppo.js_divergence(old, dist).mean(),
        }

    def kl_units(self, sample: Sample) -> int:
        return 1  # one choice a turn


def rank_distribution(policy, prompt_ids, options, reference: bool = False):
    """Log-softmax over each prompt's candidates ([N, Cmax], -inf on padding) and values [N]."""
    flat_prompts = [p for p, opts in zip(prompt_ids, options, strict=True) for _ in opts]
    flat_options = [o for opts in options for o in opts]
    scored = policy.forward(flat_prompts, flat_options, reference=reference)
    sums = ppo.sequence_logprob(scored.token_logp, scored.mask)
    widest = max(map(len, options))
    scores = torch.zeros((len(options), widest), device=policy.device)
    valid = torch.zeros((len(options), widest), dtype=torch.bool, device=policy.device)
    first_rows, start = [], 0
    for r, opts in enumerate(options):
        scores[r, : len(opts)] = sums[start : start + len(opts)]
        valid[r, : len(opts)] = True
        first_rows.append(start)
        start += len(opts)
    return ppo.candidate_log_softmax(scores, valid), scored.values[first_rows]
