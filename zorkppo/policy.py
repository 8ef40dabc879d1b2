"""The PPO policy: a LoRA-adapted causal LM plus a value head on the prompt's last hidden state.

The reference policy is the same model with the adapter disabled, so it costs no memory.
This module holds what every action mode needs from the model: scoring options after
prompts (`forward`), values, token-by-token sampling (optionally along a trie of allowed
commands), and batching by length. The modes themselves, and their distributions, are in
zorkppo/modes/.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zorkppo.prompt import completion_text, parse_command

# "auto" max_batch_tokens on CPU. There a forward costs in proportion to its padded tokens and
# small batches stay in cache: 16 tiny-model games of 68-256 prompt tokens act 1.3-1.5x faster
# in groups of <= 1024 tokens than in one batch (bench/rollout.py). On a GPU one batch is best,
# and so it is for an 8-bit model on CPU, where bitsandbytes' int8 matmul has a high cost per
# call: 10 games of 300 tokens take 0.59 s a step in one batch, 0.77 s in groups of 3.
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
class Drawn:
    """One command drawn by `Policy.sample_tokens`."""

    tokens: list[int]  # up to and including the first stop token
    logps: list[float]  # each token's log-prob under the distribution it was drawn from
    dists: list[torch.Tensor]  # those distributions ([vocab] log-probs; keep_dists only)
    value: float | None = None  # the value of the prompt (keep_dists only)


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
        value_head: ValueHead | None,
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
            in_8bit = getattr(model, "is_loaded_in_8bit", False)
            max_batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" and not in_8bit else 0
        self.max_batch_tokens = int(max_batch_tokens)
        vocab = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(vocab)])
        self.stop_ids = {i for i, t in enumerate(texts) if "\n" in t} | {tokenizer.eos_token_id}

    def trainable_parameters(self) -> list[nn.Parameter]:
        lora = [p for p in self.model.parameters() if p.requires_grad]
        return lora + (list(self.value_head.parameters()) if self.value_head is not None else [])

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
        """Log-probs of each option's tokens after its prompt, and the value of the prompt.

        Prompts are left-padded and options right-padded, so that every prompt ends in the
        same column and the options follow it: logits are computed only at the option
        positions (over a 49k or 152k vocabulary, logits over the whole prompts would cost
        more than the model), and the value reads the same column of the LM head's input."""
        n, prompt_width, longest = len(prompts), max(map(len, prompts)), max(map(len, options))
        ids = torch.full((n, prompt_width + longest), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        option_ids = torch.zeros((n, longest), dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.bool)
        for r, (p, o) in enumerate(zip(prompts, options, strict=True)):
            start, end = prompt_width - len(p), prompt_width + len(o)
            ids[r, start:end] = torch.tensor(p + o)
            attention[r, start:end] = 1
            option_ids[r, : len(o)] = torch.tensor(o)
            mask[r, : len(o)] = True
        ids, attention = ids.to(self.device), attention.to(self.device)
        option_ids, mask = option_ids.to(self.device), mask.to(self.device)
        kwargs = {
            "input_ids": ids,
            "attention_mask": attention,
            "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
            "use_cache": False,
            # the last prompt token's column predicts option token 0, and so on: longest + 1
            # columns from it (the last predicts past the options and is dropped)
            "logits_to_keep": longest + 1,
        }
        wants_values = not reference and self.value_head is not None
        if reference:
            with self.model.disable_adapter():
                out = self.model(**kwargs)
        else:
            with self._last_hidden_state() if wants_values else nullcontext() as last:
                out = self.model(**kwargs)
        # Same tempered distribution the sampler draws from, so PPO's ratios are on-policy.
        logp_full = F.log_softmax(out.logits[:, :longest].float() / self.temperature, dim=-1)
        token_logp = logp_full.gather(-1, option_ids[..., None]).squeeze(-1).masked_fill(~mask, 0.0)
        if wants_values:
            values = self.value_head(last[0][:, 0])  # the last prompt token's column
        else:
            values = torch.zeros(n, device=self.device)
        return Scored(token_logp, mask, values, logp_full if full else None)

    @torch.no_grad()
    def values(self, prompts: list[list[int]]) -> torch.Tensor:
        """Value of each prompt alone (for bootstrapping the last turn of a rollout)."""

        # The option is a placeholder: a value is read at the prompt's last token, as in rollouts.
        def run(group: list[list[int]]) -> list[float]:
            return self.forward(group, [[self.tokenizer.eos_token_id]] * len(group)).values.tolist()

        values = self.in_buckets(run, prompts, [len(p) + 1 for p in prompts])
        return torch.tensor(values, device=self.device)

    def in_buckets(
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
    def decode_command(self, tokens: list[int]) -> str:
        return parse_command(self.tokenizer.decode(tokens, skip_special_tokens=True))

    @torch.no_grad()
    def generate_commands(self, prompts: list[str], generator: torch.Generator | None):
        """One command per prompt, sampled (generator None: greedy) from the whole vocabulary;
        forwards grouped by length (max_batch_tokens)."""
        prompt_ids = self.encode_prompts(prompts)

        def run(group: list[list[int]]) -> list[str]:
            return [self.decode_command(d.tokens) for d in self.sample_tokens(group, generator)]

        return self.in_buckets(run, prompt_ids, [len(p) + self.max_new_tokens for p in prompt_ids])

    @torch.no_grad()
    def sample_tokens(
        self,
        prompt_ids: list[list[int]],
        generator: torch.Generator | None,
        allowed: Callable[[int, list[int]], list[int]] | None = None,
        max_tokens: int | None = None,
        keep_dists: bool = False,
    ) -> list[Drawn]:
        """Per prompt, the command tokens (up to and including the first stop token) and each
        token's log-prob under the distribution it was drawn from. generator None: greedy.
        The one sampler: rollouts, evaluation and SFT's replay check all decode through it.

        Each token is drawn from the whole vocabulary at `temperature`, for at most
        `max_tokens` (default max_new_tokens) tokens; with `allowed(row, tokens so far)`, only
        among the ids it returns, renormalised over them (a mode's constraint). keep_dists:
        also each drawn token's whole distribution and the prompt's value, so that a rollout
        need not score its actions again."""
        width = max(map(len, prompt_ids))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device
        )
        cache, positions = None, (attention.cumsum(-1) - 1).clamp(min=0)
        drawn = [Drawn([], [], []) for _ in prompt_ids]
        finished = [False] * len(prompt_ids)
        step_ids = ids
        for step in range(max_tokens or self.max_new_tokens):
            with self._last_hidden_state() if keep_dists and step == 0 else nullcontext() as last:
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,  # the prompt's other positions predict nothing we sample
                )
            if last is not None:  # values of the prompts, as `forward` reads them
                values = self.value_head(last[0][:, -1]).tolist()
                for d, value in zip(drawn, values, strict=True):
                    d.value = value
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            if allowed is not None:
                keep = torch.zeros_like(logits, dtype=torch.bool)
                for r, d in enumerate(drawn):
                    # a finished row keeps drawing (and discarding) its last token
                    keep[r, allowed(r, d.tokens[:-1] if finished[r] else d.tokens)] = True
                logits = logits.masked_fill(~keep, float("-inf"))
            logp = F.log_softmax(logits / self.temperature, dim=-1)
            if generator is None:  # greedy decoding
                next_ids = logits.argmax(-1, keepdim=True)
            else:
                probs = F.softmax(logits / self.temperature, dim=-1)
                next_ids = torch.multinomial(probs.cpu(), 1, generator=generator).to(self.device)
            next_logp = logp.gather(1, next_ids)[:, 0].tolist()
            for r, t in enumerate(next_ids[:, 0].tolist()):
                if not finished[r]:
                    drawn[r].tokens.append(t)
                    drawn[r].logps.append(next_logp[r])
                    if keep_dists:
                        drawn[r].dists.append(logp[r])
                    finished[r] = t in self.stop_ids
            if all(finished):
                break
            step_ids = next_ids
            attention = torch.cat([attention, torch.ones_like(next_ids)], dim=1)
            positions = positions[:, -1:] + 1
        return drawn

    @contextlib.contextmanager
    def _last_hidden_state(self):
        """Within the block, the input of the LM head (the last layer's normed hidden states
        at the positions whose logits are kept) is caught into the yielded list."""
        caught: list[torch.Tensor] = []
        hook = self.model.get_output_embeddings().register_forward_pre_hook(
            lambda _module, inputs: caught.append(inputs[0])
        )
        try:
            yield caught
        finally:
            hook.remove()


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
