"""The tiny policy the rollout and PPO-update benchmarks share, built from real game text.

Game text: the first walkthrough commands plus a few random-agent turns (uniform over valid
actions), recorded with the same prompt history the PPO trainer keeps (`EpisodeTracker`).
Model: `train_tokenizer` + `build_tiny_llama` at the `model.tiny` sizes of params.yaml,
optionally pretrained for a few steps on the transcripts (so generated commands end at a
newline at realistic lengths instead of always running to max_new_tokens), then LoRA
(`ppo.lora`) and a `ValueHead`, wrapped in `Policy` with the `ppo` settings.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch


@dataclass
class GameText:
    prompts: list[str]  # render_prompt of every recorded state
    transcripts: list[str]  # `> command` + reply, for the tokenizer and pretraining
    states: int


def record_game_text(
    rom: str, walkthrough_steps: int, random_steps: int, history_turns: int, seed: int
) -> GameText:
    """Play Zork I (walkthrough, then random valid actions) and keep each state's prompt."""
    from zorkppo.game import ZorkGame
    from zorkppo.prompt import render_prompt
    from zorkppo.rewards import EpisodeTracker

    game = ZorkGame(rom)
    rng = random.Random(seed)
    prompts, transcripts = [], []
    for source, steps in (("walkthrough", walkthrough_steps), ("random", random_steps)):
        state = game.reset()
        tracker = EpisodeTracker(history_turns)
        tracker.start(state)
        commands = game.walkthrough()
        parts = [state.observation]
        for i in range(steps):
            prompts.append(render_prompt(state.description, state.inventory, list(tracker.history)))
            if source == "walkthrough":
                command = commands[i]
            else:
                command = rng.choice(game.valid_actions() or ["look"])
            after = game.step(command)
            tracker.record(state, command, after, _NoWeights)
            parts.append(f"> {command.lower()}\n{after.observation}")
            state = after
            if state.done:
                break
        transcripts.append("\n".join(parts))
    return GameText(prompts, transcripts, len(prompts))


class _NoWeights:  # reward weights for EpisodeTracker.record; rewards are not used here
    score = new_location = death = valid_command = novelty = 0.0


def load_settings(params_path: str = "params.yaml"):
    from zorkppo.config import load_params

    return load_params(params_path)


def build_tiny_model(params, texts: list[str], pretrain_steps: int, seed: int):
    """Tokenizer trained on the game text; Llama at model.tiny sizes; a short pretrain."""
    from stages.base import pretrain
    from zorkppo.model import build_tiny_llama, train_tokenizer
    from zorkppo.prompt import INSTRUCTION

    torch.manual_seed(seed)
    tiny = params.model.tiny
    tokenizer = train_tokenizer(
        texts + [INSTRUCTION, "Room: Inventory: Recent turns:"], tiny.vocab_size
    )
    model = build_tiny_llama(
        tokenizer,
        tiny.hidden_size,
        tiny.intermediate_size,
        tiny.num_layers,
        tiny.num_heads,
        tiny.max_positions,
    )
    seconds = 0.0
    if pretrain_steps > 0:
        stream = [
            t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        ]
        started = time.perf_counter()
        pretrain(
            model,
            stream,
            pretrain_steps,
            tiny.pretrain_batch_size,
            tiny.pretrain_seq_len,
            tiny.pretrain_learning_rate,
            seed,
            "cpu",
        )
        seconds = time.perf_counter() - started
    model.eval()
    return tokenizer, model, seconds


def make_policy(model, tokenizer, params, device="cpu"):
    """LoRA (ppo.lora) + ValueHead + Policy, as stages.ppo.build_policy does after loading."""
    from zorkppo.model import attach_lora
    from zorkppo.policy import Policy, ValueHead

    cfg = params.ppo
    model = attach_lora(
        model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules
    )
    model.eval()
    value_head = ValueHead(model.config.hidden_size).to(device)
    return Policy(
        model,
        tokenizer,
        value_head,
        cfg.max_prompt_tokens,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.js_top_k,
    )
