"""generate mode: the command is sampled token by token from the whole vocabulary."""

from __future__ import annotations

import torch

from zorkppo import ppo
from zorkppo.modes.common import Sample, pad


def with_rest(top_logp: torch.Tensor) -> torch.Tensor:
    """Top-k log-probs plus one bucket for the remaining mass: a proper k+1 distribution."""
    rest = torch.log1p(-top_logp.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
    return torch.cat([top_logp, rest], dim=-1)


class GenerateMode:
    """Sample the command's tokens from the whole vocabulary (up to policy.max_new_tokens)."""

    needs_valid_actions = False

    def _in_buckets(self, policy, run, prompts):
        prompt_ids = policy.encode_prompts(prompts)
        return policy.in_buckets(
            run, prompt_ids, [len(p) + policy.max_new_tokens for p in prompt_ids]
        )

    def choose(self, policy, prompts, valid, generator, rng) -> list[str]:
        return policy.generate_commands(prompts, generator)

    @torch.no_grad()
    def act(self, policy, prompts, valid, generator, rng) -> list[Sample]:
        return self._in_buckets(policy, lambda group: self._act(policy, group, generator), prompts)

    def _act(self, policy, prompt_ids, generator) -> list[Sample]:
        # The sampler's own distributions are the policy's: only the reference scores again.
        drawn = policy.sample_tokens(prompt_ids, generator, keep_dists=True)
        actions = [d.tokens for d in drawn]
        ref = policy.forward(prompt_ids, actions, reference=True)
        samples = []
        for r, (p, d) in enumerate(zip(prompt_ids, drawn, strict=True)):
            n = len(d.tokens)
            dists = torch.stack(d.dists)
            top = dists.topk(min(policy.js_top_k, dists.shape[-1]), dim=-1)
            logp, ref_logp = torch.tensor(d.logps), ref.token_logp[r, :n].cpu()
            samples.append(
                Sample(
                    p,
                    [d.tokens],
                    0,
                    policy.decode_command(d.tokens),
                    float(logp.sum()),
                    float(ref_logp.sum()),
                    d.value,
                    float((logp - ref_logp).sum()),
                    (top.indices.cpu(), top.values.cpu()),
                    ref_logp,
                )
            )
        return samples

    def rescore(self, policy, batch: list[Sample]) -> dict[str, torch.Tensor]:
        prompts, actions = [s.prompt_ids for s in batch], [s.options[0] for s in batch]
        scored = policy.forward(prompts, actions, full=True)
        mask = scored.mask
        ref = pad([s.ref_dist for s in batch], 0.0).to(mask.device)
        # Only the sampled tokens' reference log-probs are kept: a k3 estimate per token.
        kl = ppo.masked_mean(ppo.kl_k3_per_token(scored.token_logp, ref), mask)
        top_ids = pad([s.old_dist[0] for s in batch], 0).long().to(mask.device)
        old_top = pad([s.old_dist[1] for s in batch], 0.0).to(mask.device)
        new_top = scored.logp_full.gather(-1, top_ids)
        js = ppo.js_divergence(with_rest(old_top), with_rest(new_top))
        return {
            "logprob": ppo.sequence_logprob(scored.token_logp, mask),
            "values": scored.values,
            "entropy": ppo.masked_mean(ppo.categorical_entropy(scored.logp_full), mask),
            "kl": kl,
            "js": ppo.masked_mean(js, mask),
        }

    def kl_units(self, sample: Sample) -> int:
        return len(sample.options[0])
