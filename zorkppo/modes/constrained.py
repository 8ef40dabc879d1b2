"""constrained mode: token by token, each token only among those that continue a valid action."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from zorkppo import ppo
from zorkppo.modes.common import Sample, exact_kl, pad


class CommandTrie:
    """The token sequences of one state's valid actions, each cut after its first stop token
    (the end of the command): which tokens may follow a prefix, and which command a complete
    sequence spells. No complete sequence is a proper prefix of another (each ends at its
    first stop token), so `north` / `north east` branch after ` north`: one child ends it."""

    def __init__(self, commands: list[str], sequences: list[list[int]], stop_ids: set[int]):
        self.next: dict[tuple[int, ...], list[int]] = {}
        self.ends: dict[tuple[int, ...], str] = {}
        for command, tokens in zip(commands, sequences, strict=True):
            cut = next((j + 1 for j, t in enumerate(tokens) if t in stop_ids), None)
            if cut is None:
                raise ValueError(f"the completion of {command!r} has no stop token")
            path = tuple(tokens[:cut])
            if path in self.ends:  # two commands with one spelling: the first keeps it
                continue
            self.ends[path] = command
            for j, token in enumerate(path):
                children = self.next.setdefault(path[:j], [])
                if token not in children:
                    children.append(token)
        for children in self.next.values():
            children.sort()
        self.depth = max(map(len, self.ends))

    def allowed(self, prefix) -> list[int]:
        return self.next.get(tuple(prefix), [])

    def positions(self, path) -> tuple[torch.Tensor, torch.Tensor]:
        """Along a command's tokens: the allowed ids at each position [L, A] (-1 padding) and
        the index of the command's own token among them [L]."""
        allowed = [self.allowed(path[:j]) for j in range(len(path))]
        steps = torch.tensor([ids.index(t) for ids, t in zip(allowed, path, strict=True)])
        return pad([torch.tensor(ids) for ids in allowed], -1), steps


class ConstrainedMode:
    """Token-by-token generation along the valid actions' trie (every command valid)."""

    needs_valid_actions = True

    def _tries(self, policy, valid) -> list[CommandTrie]:
        tries = []
        for actions in valid:
            commands = sorted(set(actions)) or ["look"]
            tries.append(CommandTrie(commands, policy.encode_commands(commands), policy.stop_ids))
        return tries

    @staticmethod
    def _sample(policy, prompt_ids, generator, tries: list[CommandTrie], keep_dists=False):
        """Each command token by token, each token among those its trie allows after the
        tokens so far, until a command is complete."""
        return policy.sample_tokens(
            prompt_ids,
            generator,
            lambda row, prefix: tries[row].allowed(prefix),
            max(t.depth for t in tries),
            keep_dists,
        )

    def _in_buckets(self, policy, run, prompts, valid):
        prompt_ids = policy.encode_prompts(prompts)
        tries = self._tries(policy, valid)
        return policy.in_buckets(
            run,
            list(zip(prompt_ids, tries, strict=True)),
            [len(p) + t.depth for p, t in zip(prompt_ids, tries, strict=True)],
        )

    @torch.no_grad()
    def choose(self, policy, prompts, valid, generator, rng) -> list[str]:
        def pick(group):
            prompt_ids, tries = zip(*group, strict=True)
            drawn = self._sample(policy, list(prompt_ids), generator, list(tries))
            return [t.ends[tuple(d.tokens)] for t, d in zip(tries, drawn, strict=True)]

        return self._in_buckets(policy, pick, prompts, valid)

    @torch.no_grad()
    def act(self, policy, prompts, valid, generator, rng) -> list[Sample]:
        return self._in_buckets(
            policy, lambda group: self._act(policy, group, generator), prompts, valid
        )

    def _act(self, policy, group, generator) -> list[Sample]:
        prompt_ids, tries = (list(column) for column in zip(*group, strict=True))
        # The sampler's own distributions are the policy's: only the reference scores again.
        drawn = self._sample(policy, prompt_ids, generator, tries, keep_dists=True)
        actions = [d.tokens for d in drawn]
        allowed, steps = zip(
            *(t.positions(a) for a, t in zip(actions, tries, strict=True)), strict=True
        )
        ids = pad(allowed, -1)
        drawn_from = pad([torch.stack(d.dists) for d in drawn], float("-inf")).cpu()
        dist = drawn_from.gather(-1, ids.clamp(min=0)).masked_fill(ids < 0, float("-inf"))
        logprobs = [math.fsum(d.logps) for d in drawn]
        values = [d.value for d in drawn]
        return self._samples(
            policy, prompt_ids, tries, actions, allowed, steps, dist, logprobs, values
        )

    @torch.no_grad()
    def explore(self, policy, prompts, valid, pick) -> list[Sample]:
        """Commands chosen by `pick(k, commands)` (state k's valid commands, one per spelling,
        sorted), not drawn by the policy: each a Sample as if the policy had drawn it (its
        log-prob, value and distributions along the trie) and marked `explored`."""
        prompt_ids = policy.encode_prompts(prompts)
        tries = self._tries(policy, valid)
        actions = []
        for k, trie in enumerate(tries):
            path_of = {command: path for path, command in trie.ends.items()}
            actions.append(list(path_of[pick(k, sorted(path_of))]))
        allowed, steps = zip(
            *(t.positions(a) for a, t in zip(actions, tries, strict=True)), strict=True
        )
        dist, logprob, values, _ = self._masked(policy, prompt_ids, actions, allowed, steps)
        samples = self._samples(
            policy,
            prompt_ids,
            tries,
            actions,
            allowed,
            steps,
            dist.cpu(),
            logprob.tolist(),
            values.tolist(),
        )
        return [replace(s, explored=True) for s in samples]

    def _samples(self, policy, prompt_ids, tries, actions, allowed, steps, dist, logprobs, values):
        """The turns' Samples: the commands' token paths, the distributions they were drawn
        from ([N, L, A] on the CPU), their log-probs and values; the reference scored here."""
        ref, ref_logprob, _, mask = self._masked(
            policy, prompt_ids, actions, allowed, steps, reference=True
        )
        kl = (exact_kl(dist, ref.cpu()) * mask.cpu()).sum(-1)
        samples = []
        for r, (p, path) in enumerate(zip(prompt_ids, actions, strict=True)):
            n, width = allowed[r].shape
            samples.append(
                Sample(
                    p,
                    [path],
                    0,
                    tries[r].ends[tuple(path)],
                    logprobs[r],
                    float(ref_logprob[r]),
                    values[r],
                    float(kl[r]),
                    (allowed[r], dist[r, :n, :width], steps[r]),
                    ref[r, :n, :width].cpu(),
                )
            )
        return samples

    def _masked(self, policy, prompt_ids, actions, allowed, steps, reference=False):
        """The distributions renormalised over the allowed tokens at every command position
        [N, L, A] (-inf elsewhere), the commands' log-probs [N], values [N], position mask [N, L].
        allowed: per sample [L, A] token ids (-1 padding); steps: per sample [L] chosen index."""
        scored = policy.forward(prompt_ids, actions, full=True, reference=reference)
        ids = pad(allowed, -1).to(scored.mask.device)
        live = ids >= 0
        dist = ppo.candidate_log_softmax(scored.logp_full.gather(-1, ids.clamp(min=0)), live)
        chosen = pad(steps, 0).to(ids.device)
        token_logp = dist.gather(-1, chosen[..., None]).squeeze(-1).masked_fill(~scored.mask, 0.0)
        logprob = ppo.sequence_logprob(token_logp, scored.mask)
        return dist, logprob, scored.values, scored.mask

    @torch.no_grad()
    def command_logprobs(self, policy, prompt: str, valid: list[str]) -> dict[str, float]:
        """Log-prob of each valid command under the constrained policy after one prompt (a
        distribution: they sum to 1 over the commands). For tests and analysis."""
        (trie,) = self._tries(policy, [valid])
        paths = list(trie.ends)
        allowed, steps = zip(*(trie.positions(path) for path in paths), strict=True)
        prompt_ids = policy.encode_prompts([prompt]) * len(paths)
        _, logprob, _, _ = self._masked(
            policy, prompt_ids, [list(p) for p in paths], list(allowed), list(steps)
        )
        return {trie.ends[path]: float(lp) for path, lp in zip(paths, logprob, strict=True)}

    def rescore(self, policy, batch: list[Sample]) -> dict[str, torch.Tensor]:
        dist, logprob, values, mask = self._masked(
            policy,
            [s.prompt_ids for s in batch],
            [s.options[0] for s in batch],
            [s.old_dist[0] for s in batch],
            [s.old_dist[2] for s in batch],
        )
        old = pad([s.old_dist[1] for s in batch], -math.inf).to(dist.device)
        ref = pad([s.ref_dist for s in batch], -math.inf).to(dist.device)
        return {
            "logprob": logprob,
            "values": values,
            "entropy": ppo.masked_mean(ppo.categorical_entropy(dist), mask),
            "kl": ppo.masked_mean(exact_kl(dist, ref), mask),
            "js": ppo.masked_mean(ppo.js_divergence(old, dist), mask),
        }

    def kl_units(self, sample: Sample) -> int:
        return len(sample.options[0])
