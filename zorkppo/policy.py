"""The PPO policy: a LoRA-adapted causal LM plus a value head on the prompt's last hidden state.

The reference policy is the same model with the adapter disabled, so it costs no memory.
This module holds what every action mode needs from the model: scoring options after
prompts (`forward`), values, token-by-token sampling (optionally along a trie of allowed
commands), and batching by length. The modes themselves, and their distributions, are in
modes.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zorkppo.prompt import completion_text

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
            in_8bit = getattr(model, "is_loaded_in_8bit", False)
            max_batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" and not in_8bit else 0
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
    @torch.no_grad()
    def sample_tokens(
        self, prompt_ids: list[list[int]], generator: torch.Generator | None, tries=None
    ) -> list[tuple[list[int], list[float]]]:
        """Per prompt, the command tokens (up to and including the first stop token) and each
        token's log-prob under the distribution it was drawn from. generator None: greedy.

        Free: up to max_new_tokens from the whole vocabulary at `temperature`. With `tries`
        (one `modes.CommandTrie` per prompt): each token only among those the trie allows
        after the tokens so far, renormalised over them, until a command is complete."""
        width = max(map(len, prompt_ids))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device
        )
        cache, positions = None, (attention.cumsum(-1) - 1).clamp(min=0)
        tokens: list[list[int]] = [[] for _ in prompt_ids]
        logps: list[list[float]] = [[] for _ in prompt_ids]
        finished = [False] * len(prompt_ids)
        step_ids = ids
        longest = self.max_new_tokens if tries is None else max(t.depth for t in tries)
        for _ in range(longest):
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # the prompt's other positions predict nothing we sample
            )
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            if tries is not None:
                allowed = torch.zeros_like(logits, dtype=torch.bool)
                for r, trie in enumerate(tries):
                    # a finished row keeps drawing (and discarding) its stop token
                    prefix = tokens[r][:-1] if finished[r] else tokens[r]
                    allowed[r, trie.allowed(prefix)] = True
                logits = logits.masked_fill(~allowed, float("-inf"))
            logp = F.log_softmax(logits / self.temperature, dim=-1)
            if generator is None:  # greedy decoding
                next_ids = logits.argmax(-1, keepdim=True)
            else:
                probs = F.softmax(logits / self.temperature, dim=-1)
                next_ids = torch.multinomial(probs.cpu(), 1, generator=generator).to(self.device)
            next_logp = logp.gather(1, next_ids)[:, 0].tolist()
            for r, t in enumerate(next_ids[:, 0].tolist()):
                if not finished[r]:
                    tokens[r].append(t)
                    logps[r].append(next_logp[r])
                    finished[r] = t in self.stop_ids
            if all(finished):
                break
            step_ids = next_ids
            attention = torch.cat([attention, torch.ones_like(next_ids)], dim=1)
            positions = positions[:, -1:] + 1
        return list(zip(tokens, logps, strict=True))


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
