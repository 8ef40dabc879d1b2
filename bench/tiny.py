"""The tiny policy the rollout and PPO-update benchmarks share, built from real game text.

Game text: the first walkthrough commands plus a few random-agent turns (uniform over valid
actions), recorded through the episode stepper, with the prompt history PPO sees.
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
    valid: list[list[str]]  # each state's valid actions, when asked for (rank, constrained)
    transcripts: list[str]  # `> command` + reply, for the tokenizer and pretraining
    states: int


def record_game_text(
    rom: str,
    walkthrough_steps: int,
    random_steps: int,
    history_turns: int,
    seed: int,
    valid_actions: bool = False,
    tokenizer=None,
) -> GameText:
    """Play Zork I (walkthrough, then random valid actions) and keep each state's prompt, and
    with `valid_actions` its valid actions (Jericho's search: ~0.3 s a state). `tokenizer`:
    a chat model's, to render its prompts with its chat template."""
    from zorkppo.envs import VecGames, zork_factory
    from zorkppo.episodes import Episodes

    games = VecGames(zork_factory(rom, 12), 1, processes=False)
    episodes = Episodes(games, history_turns)
    walkthrough = games.call("walkthrough")[0]
    rng = random.Random(seed)
    prompts, valid, transcripts = [], [], []
    for source, steps in (("walkthrough", walkthrough_steps), ("random", random_steps)):
        episodes.start()
        parts = [episodes.current[0].state.observation]
        for i in range(steps):
            prompts += episodes.prompts(tokenizer)
            if source == "random" or valid_actions:
                valid.append(episodes.valid_actions()[0] or ["look"])
            command = walkthrough[i] if source == "walkthrough" else rng.choice(valid[-1])
            (step,) = episodes.step([command])
            parts.append(f"> {command.lower()}\n{step.after.observation}")
            if step.after.done:
                break
        transcripts.append("\n".join(parts))
    return GameText(prompts, valid if valid_actions else [], transcripts, len(prompts))


def load_settings(params_path: str = "params.yaml"):
    from zorkppo.config import load_params

    return load_params(params_path)


def build_tiny_model(params, texts: list[str], pretrain_steps: int, seed: int):
    """Tokenizer trained on the game text; Llama at model.tiny sizes; a short pretrain."""
    from zorkppo.model import build_tiny_model as build
    from zorkppo.model import pretrain, token_stream

    torch.manual_seed(seed)
    tiny = params.model.tiny
    tokenizer, model = build(tiny, texts)
    seconds = 0.0
    if pretrain_steps > 0:
        started = time.perf_counter()
        pretrain(
            model,
            token_stream(tokenizer, texts),
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


def make_policy(model, tokenizer, params):
    """LoRA (ppo.lora) + ValueHead + Policy, as stages.ppo.build_policy does after loading."""
    from zorkppo.policy import policy_with_fresh_adapter

    policy = policy_with_fresh_adapter(
        model, tokenizer, params.ppo, params.prompt.max_prompt_tokens
    )
    policy.model.eval()
    return policy
