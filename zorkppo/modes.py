"""Action modes: how the policy acts on a batch of game states, and rescores what it did.

Each mode is one object with one interface, so the trainer and evaluation never test a
mode's name (`action_mode(name, max_candidates)` builds it):

  act(policy, prompts, valid, generator, rng) -> [Sample]   a rollout turn: the command,
      its log-prob under the policy and the reference, the value, the action distribution
  choose(policy, prompts, valid, generator, rng) -> [str]   evaluation (generator None: greedy)
  rescore(policy, batch) -> {logprob, values, entropy, kl, js}   the PPO update's terms
  kl_units(sample) -> int      what the rollout KL is averaged over (the loss's KL unit)

`valid` is each game's list of Jericho valid actions when `needs_valid_actions`, else None.

- generate: the command is sampled token by token from the whole vocabulary.
- rank (GLAM): a softmax over candidate commands (the valid actions, at most
  max_candidates by a seeded draw) of their summed token log-probs.
- constrained: token by token, but each token only among those that continue one of the
  valid actions (a trie of their tokens), with log-probs renormalised over those tokens.
  Per-token credit like generate, and every command is valid like rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from zorkppo import ppo


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


def draw_candidates(valid_actions: list[str], max_candidates: int, rng) -> list[str]:
    """Rank mode's candidates: the valid actions, capped at max_candidates by a seeded draw
    (in PPO rollouts and evaluation alike); "look" when the game offers none."""
    actions = list(valid_actions) or ["look"]
    if len(actions) <= max_candidates:
        return actions
    return sorted(rng.sample(actions, max_candidates))


def _pad(rows: list[torch.Tensor], value) -> torch.Tensor:
    """Stack tensors of different sizes (any number of dims), padding every dim with value."""
    shape = [max(r.shape[d] for r in rows) for d in range(rows[0].dim())]
    out = torch.full((len(rows), *shape), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[(i, *(slice(0, n) for n in r.shape))] = r
    return out


def _exact_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || ref) over the last dim of two distributions that are -inf on the same padding."""
    live = torch.isfinite(ref_logp)
    # masked_fill, not where: a -inf inside an unselected branch still sends NaN gradients
    p, r = logp.masked_fill(~live, 0.0), ref_logp.masked_fill(~live, 0.0)
    return (live * p.exp() * (p - r)).sum(-1)


def _with_rest(top_logp: torch.Tensor) -> torch.Tensor:
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
        ref = _pad([s.ref_dist for s in batch], 0.0).to(mask.device)
        # Only the sampled tokens' reference log-probs are kept: a k3 estimate per token.
        kl = ppo.masked_mean(ppo.kl_k3_per_token(scored.token_logp, ref), mask)
        top_ids = _pad([s.old_dist[0] for s in batch], 0).long().to(mask.device)
        old_top = _pad([s.old_dist[1] for s in batch], 0.0).to(mask.device)
        new_top = scored.logp_full.gather(-1, top_ids)
        js = ppo.js_divergence(_with_rest(old_top), _with_rest(new_top))
        return {
            "logprob": ppo.sequence_logprob(scored.token_logp, mask),
            "values": scored.values,
            "entropy": ppo.masked_mean(ppo.categorical_entropy(scored.logp_full), mask),
            "kl": kl,
            "js": ppo.masked_mean(js, mask),
        }

    def kl_units(self, sample: Sample) -> int:
        return len(sample.options[0])


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
                    float(_exact_kl(dist[r, :n], ref_dist[r, :n])),
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
        old = _pad([s.old_dist[0] for s in batch], -math.inf).to(dist.device)
        ref = _pad([s.ref_dist for s in batch], -math.inf).to(dist.device)
        return {
            "logprob": dist.gather(1, chosen[:, None]).squeeze(1),
            "values": values,
            "entropy": ppo.categorical_entropy(dist).mean(),
            "kl": _exact_kl(dist, ref).mean(),
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
        return _pad([torch.tensor(ids) for ids in allowed], -1), steps


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
        ids = _pad(allowed, -1)
        drawn_from = _pad([torch.stack(d.dists) for d in drawn], float("-inf")).cpu()
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
        kl = (_exact_kl(dist, ref.cpu()) * mask.cpu()).sum(-1)
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
        ids = _pad(allowed, -1).to(scored.mask.device)
        live = ids >= 0
        dist = ppo.candidate_log_softmax(scored.logp_full.gather(-1, ids.clamp(min=0)), live)
        chosen = _pad(steps, 0).to(ids.device)
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
        old = _pad([s.old_dist[1] for s in batch], -math.inf).to(dist.device)
        ref = _pad([s.ref_dist for s in batch], -math.inf).to(dist.device)
        return {
            "logprob": logprob,
            "values": values,
            "entropy": ppo.masked_mean(ppo.categorical_entropy(dist), mask),
            "kl": ppo.masked_mean(_exact_kl(dist, ref), mask),
            "js": ppo.masked_mean(ppo.js_divergence(old, dist), mask),
        }

    def kl_units(self, sample: Sample) -> int:
        return len(sample.options[0])


ActionMode = GenerateMode | RankMode | ConstrainedMode


def action_mode(name: str, max_candidates: int = 8) -> ActionMode:
    """The mode object for a params value (`ppo.action_mode`, `eval.action_mode`)."""
    if name == "generate":
        return GenerateMode()
    if name == "rank":
        return RankMode(max_candidates)
    if name == "constrained":
        return ConstrainedMode()
    raise ValueError(f"unknown action mode {name!r}: use generate, rank or constrained")
