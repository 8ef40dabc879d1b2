"""The PPO policy: a LoRA-adapted causal LM plus a value head on the prompt's last hidden state.

The reference policy is the same model with the adapter disabled, so it costs no memory.
Two action modes share one representation of a turn (`Sample`):
- generate: one option, the sampled command tokens; log-prob = sum over its tokens.
- rank: several options (candidate commands); log-prob = log-softmax of their summed
  token log-probs (GLAM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zorkppo.ppo import candidate_log_softmax, sequence_logprob
from zorkppo.prompt import completion_text, parse_command

# "auto" max_batch_tokens on CPU. There a forward costs in proportion to its padded tokens and
# small batches stay in cache: 16 tiny-model games of 68-256 prompt tokens act 1.3-1.5x faster
# in groups of <= 1024 tokens than in one batch (bench/rollout.py). On a GPU one batch is best.
CPU_BATCH_TOKENS = 1024


def length_buckets(widths: Sequence[int], rows: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of items grouped for batched forwards, item i being rows[i] sequences padded to
    widths[i] tokens. Longest first; a group padded to its widest item stays within max_tokens
    (an item over it alone gets a group of its own). max_tokens 0: one group, in order."""
    if max_tokens <= 0:
        return [list(range(len(widths)))]
    groups: list[list[int]] = []
    group_rows = 0
    for i in sorted(range(len(widths)), key=lambda i: (-widths[i], i)):
        if groups and (group_rows + rows[i]) * widths[groups[-1][0]] <= max_tokens:
            groups[-1].append(i)
            group_rows += rows[i]
        else:
            groups.append([i])
            group_rows = rows[i]
    return groups


class ValueHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)  # start by predicting 0: no bias on early advantages
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


@dataclass
class Sample:
    """One turn of one game, as the rollout saw it."""

    prompt_ids: list[int]
    options: list[list[int]]  # generate: [command tokens]; rank: one token list per candidate
    chosen: int
    command: str
    logprob: float  # under the rollout policy
    ref_logprob: float
    value: float
    kl: float  # rollout-time estimate of KL(policy || reference) for this turn
    old_dist: tuple  # generate: (top-k ids [L,k], their log-probs [L,k]); rank: (log-dist [C],)
    ref_dist: torch.Tensor  # generate: reference token log-probs [L]; rank: reference log-dist [C]


@dataclass
class Scored:
    token_logp: torch.Tensor  # [N, L] log-prob of each option token (0 where masked)
    mask: torch.Tensor  # [N, L] True on option tokens
    values: torch.Tensor  # [N]
    logp_full: torch.Tensor | None  # [N, L, V] next-token log-softmax at option positions


class Policy:
    def __init__(
        self,
        model,
        tokenizer,
        value_head: ValueHead,
        max_prompt_tokens: int,
        max_new_tokens: int = 8,
        temperature: float = 1.0,
        js_top_k: int = 32,
        max_batch_tokens: int | str = "auto",
    ):
        self.model, self.tokenizer, self.value_head = model, tokenizer, value_head
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens
        self.temperature, self.js_top_k = temperature, js_top_k
        self.device = next(model.parameters()).device
        if max_batch_tokens == "auto":
            max_batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else 0
        self.max_batch_tokens = int(max_batch_tokens)
        vocab = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(vocab)])
        self.stop_ids = {i for i, t in enumerate(texts) if "\n" in t} | {tokenizer.eos_token_id}

    def trainable_parameters(self) -> list[nn.Parameter]:
        lora = [p for p in self.model.parameters() if p.requires_grad]
        return lora + list(self.value_head.parameters())

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return [p[-self.max_prompt_tokens :] for p in ids]

    def encode_commands(self, commands: list[str]) -> list[list[int]]:
        """Each command as the tokens the model writes for it after a prompt (its completion)."""
        texts = [completion_text(c, self.tokenizer) for c in commands]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    # -- scoring --------------------------------------------------------------------
    def forward(
        self,
        prompts: list[list[int]],
        options: list[list[int]],
        full: bool = False,
        reference: bool = False,
    ) -> Scored:
        """Log-probs of each option's tokens after its prompt, and the value of the prompt."""
        rows = [p + o for p, o in zip(prompts, options, strict=True)]
        width, longest = max(map(len, rows)), max(map(len, options))
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        option_ids = torch.zeros((len(rows), longest), dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.bool)
        for r, (p, o) in enumerate(zip(prompts, options, strict=True)):
            ids[r, : len(p) + len(o)] = torch.tensor(p + o)
            attention[r, : len(p) + len(o)] = 1
            option_ids[r, : len(o)] = torch.tensor(o)
            mask[r, : len(o)] = True
        ids, attention = ids.to(self.device), attention.to(self.device)
        option_ids, mask = option_ids.to(self.device), mask.to(self.device)
        prompt_end = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        # Option token j of row r is predicted at position prompt_end[r] + j.
        positions = (prompt_end[:, None] + torch.arange(longest, device=self.device)).clamp(
            max=width - 1
        )
        # Logits only from the earliest option position on: over a 7B vocabulary the whole
        # sequence's logits (and their gradient) would outweigh the checkpointed activations.
        first = int(prompt_end.min())
        kwargs = {
            "input_ids": ids,
            "attention_mask": attention,
            "use_cache": False,
            "logits_to_keep": width - first,
        }
        if reference:
            with self.model.disable_adapter():
                out = self.model(**kwargs)
        else:
            out = self.model(**kwargs, output_hidden_states=True)
        logits = out.logits.gather(
            1, (positions - first)[..., None].expand(-1, -1, out.logits.shape[-1])
        )
        # Same tempered distribution the sampler draws from, so PPO's ratios are on-policy.
        logp_full = F.log_softmax(logits.float() / self.temperature, dim=-1)
        token_logp = logp_full.gather(-1, option_ids[..., None]).squeeze(-1).masked_fill(~mask, 0.0)
        if reference:
            values = torch.zeros(len(rows), device=self.device)
        else:
            last_hidden = out.hidden_states[-1][
                torch.arange(len(rows), device=self.device), prompt_end
            ]
            values = self.value_head(last_hidden)
        return Scored(token_logp, mask, values, logp_full if full else None)

    @torch.no_grad()
    def values(self, prompts: list[list[int]]) -> torch.Tensor:
        """Value of each prompt alone (for bootstrapping the last turn of a rollout)."""

        # The option is a placeholder: a value is read at the prompt's last token, as in rollouts.
        def run(group: list[list[int]]) -> list[float]:
            return self.forward(group, [[self.tokenizer.eos_token_id]] * len(group)).values.tolist()

        values = self._in_buckets(run, prompts, [len(p) + 1 for p in prompts])
        return torch.tensor(values, device=self.device)

    def _in_buckets(
        self,
        run: Callable[[list], list],
        items: list,
        widths: list[int],
        rows: list[int] | None = None,
    ) -> list:
        """run(a group of items) -> one result per item, over the `length_buckets` of the items
        within max_batch_tokens; the results come back in the items' order."""
        results = [None] * len(items)
        for group in length_buckets(widths, rows or [1] * len(items), self.max_batch_tokens):
            for i, result in zip(group, run([items[i] for i in group]), strict=True):
                results[i] = result
        return results

    # -- acting ---------------------------------------------------------------------
    @torch.no_grad()
    def act_generate(self, prompts: list[str], generator: torch.Generator) -> list[Sample]:
        prompt_ids = self.encode_prompts(prompts)
        return self._in_buckets(
            lambda group: self._act_generate(group, generator),
            prompt_ids,
            [len(p) + self.max_new_tokens for p in prompt_ids],
        )

    def _act_generate(self, prompt_ids: list[list[int]], generator) -> list[Sample]:
        actions = self._sample_tokens(prompt_ids, generator)
        scored = self.forward(prompt_ids, actions, full=True)
        ref = self.forward(prompt_ids, actions, reference=True)
        samples = []
        k = min(self.js_top_k, scored.logp_full.shape[-1])
        for r, (p, a) in enumerate(zip(prompt_ids, actions, strict=True)):
            n = len(a)
            top = scored.logp_full[r, :n].topk(k, dim=-1)
            logp, ref_logp = scored.token_logp[r, :n], ref.token_logp[r, :n]
            samples.append(
                Sample(
                    p,
                    [a],
                    0,
                    parse_command(self.tokenizer.decode(a, skip_special_tokens=True)),
                    float(logp.sum()),
                    float(ref_logp.sum()),
                    float(scored.values[r]),
                    float((logp - ref_logp).sum()),
                    (top.indices.cpu(), top.values.cpu()),
                    ref_logp.cpu(),
                )
            )
        return samples

    @torch.no_grad()
    def _sample_tokens(
        self, prompt_ids: list[list[int]], generator: torch.Generator
    ) -> list[list[int]]:
        """Sample up to max_new_tokens per prompt; keep tokens up to and including the first stop."""
        width = max(map(len, prompt_ids))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device
        )
        cache, positions = None, (attention.cumsum(-1) - 1).clamp(min=0)
        tokens = [[] for _ in prompt_ids]
        finished = [False] * len(prompt_ids)
        step_ids = ids
        for _ in range(self.max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # the prompt's other positions predict nothing we sample
            )
            cache = out.past_key_values
            if generator is None:  # greedy decoding
                next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
            else:
                probs = F.softmax(out.logits[:, -1].float() / self.temperature, dim=-1)
                next_ids = torch.multinomial(probs.cpu(), 1, generator=generator).to(self.device)
            for r, t in enumerate(next_ids[:, 0].tolist()):
                if not finished[r]:
                    tokens[r].append(t)
                    finished[r] = t in self.stop_ids
            if all(finished):
                break
            step_ids = next_ids
            attention = torch.cat([attention, torch.ones_like(next_ids)], dim=1)
            positions = positions[:, -1:] + 1
        return tokens

    @torch.no_grad()
    def commands(
        self,
        prompts: list[str],
        candidates: list[list[str]] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Just the commands (evaluation): generated, or ranked over `candidates`.
        generator=None decodes greedily (argmax tokens, or the top-ranked candidate)."""
        prompt_ids = self.encode_prompts(prompts)
        if candidates is None:
            actions = self._in_buckets(
                lambda group: self._sample_tokens(group, generator),
                prompt_ids,
                [len(p) + self.max_new_tokens for p in prompt_ids],
            )
            return [
                parse_command(self.tokenizer.decode(a, skip_special_tokens=True)) for a in actions
            ]

        def pick(group: list[tuple]) -> list[str]:
            dist, _ = self.rank_distribution([g[0] for g in group], [g[1] for g in group])
            picks = (
                dist.argmax(-1)
                if generator is None
                else torch.multinomial(dist.exp().cpu(), 1, generator=generator)[:, 0]
            )
            return [cands[int(i)] for (_, _, cands), i in zip(group, picks, strict=True)]

        return self._rank_in_buckets(pick, prompt_ids, candidates)

    @torch.no_grad()
    def act_rank(
        self, prompts: list[str], candidates: list[list[str]], generator: torch.Generator
    ) -> list[Sample]:
        return self._rank_in_buckets(
            lambda group: self._act_rank(group, generator), self.encode_prompts(prompts), candidates
        )

    def _rank_in_buckets(self, run, prompt_ids: list[list[int]], candidates: list[list[str]]):
        """run([(prompt ids, option token lists, candidate commands)]) over length buckets; each
        game's rows are its candidates, each its prompt plus that option."""
        options = [self.encode_commands(cands) for cands in candidates]
        return self._in_buckets(
            run,
            list(zip(prompt_ids, options, candidates, strict=True)),
            [len(p) + max(map(len, opts)) for p, opts in zip(prompt_ids, options, strict=True)],
            [len(opts) for opts in options],
        )

    def _act_rank(self, group: list[tuple], generator) -> list[Sample]:
        prompt_ids, options, candidates = (list(column) for column in zip(*group, strict=True))
        dist, values = self.rank_distribution(prompt_ids, options)
        ref_dist, _ = self.rank_distribution(prompt_ids, options, reference=True)
        samples = []
        for r, (p, opts) in enumerate(zip(prompt_ids, options, strict=True)):
            n = len(opts)
            chosen = int(torch.multinomial(dist[r, :n].exp().cpu(), 1, generator=generator))
            kl = float((dist[r, :n].exp() * (dist[r, :n] - ref_dist[r, :n])).sum())
            samples.append(
                Sample(
                    p,
                    opts,
                    chosen,
                    candidates[r][chosen],
                    float(dist[r, chosen]),
                    float(ref_dist[r, chosen]),
                    float(values[r]),
                    kl,
                    (dist[r, :n].cpu(),),
                    ref_dist[r, :n].cpu(),
                )
            )
        return samples

    def rank_distribution(self, prompt_ids, options, reference: bool = False):
        """Log-softmax over each prompt's candidates ([N, Cmax], -inf on padding) and values [N]."""
        flat_prompts = [p for p, opts in zip(prompt_ids, options, strict=True) for _ in opts]
        flat_options = [o for opts in options for o in opts]
        scored = self.forward(flat_prompts, flat_options, reference=reference)
        sums = sequence_logprob(scored.token_logp, scored.mask)
        widest = max(map(len, options))
        scores = torch.zeros((len(options), widest), device=self.device)
        valid = torch.zeros((len(options), widest), dtype=torch.bool, device=self.device)
        first_rows, start = [], 0
        for r, opts in enumerate(options):
            scores[r, : len(opts)] = sums[start : start + len(opts)]
            valid[r, : len(opts)] = True
            first_rows.append(start)
            start += len(opts)
        return candidate_log_softmax(scores, valid), scored.values[first_rows]


def draw_candidates(valid_actions: list[str], max_candidates: int, rng) -> list[str]:
    """Rank mode's candidates: the valid actions, capped at max_candidates by a seeded draw
    (in PPO rollouts and evaluation alike); "look" when the game offers none."""
    actions = list(valid_actions) or ["look"]
    if len(actions) <= max_candidates:
        return actions
    return sorted(rng.sample(actions, max_candidates))


def policy_with_fresh_adapter(
    model, tokenizer, cfg, max_prompt_tokens: int, prepare_kbit: bool = True
) -> Policy:
    """A fresh LoRA adapter (`cfg.lora`) and a zero value head on `model`: the PPO policy at
    iteration 0, with `cfg` the `ppo` params and prompts cut to `max_prompt_tokens`, as SFT
    saw them (`prompt.max_prompt_tokens`). A model loaded in 8 or 4 bits first gets peft's
    k-bit preparation (norms, embeddings and head in fp32), unless `prepare_kbit` is False."""
    from peft import prepare_model_for_kbit_training

    from zorkppo.model import attach_lora

    quantized = getattr(model, "is_loaded_in_8bit", False) or getattr(
        model, "is_loaded_in_4bit", False
    )
    if quantized and prepare_kbit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = attach_lora(
        model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules
    )
    value_head = ValueHead(model.config.hidden_size).to(next(model.parameters()).device)
    return Policy(
        model,
        tokenizer,
        value_head,
        max_prompt_tokens,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.js_top_k,
        cfg.max_batch_tokens,
    )
