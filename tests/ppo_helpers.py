"""A tiny policy and PPO settings for fast PPO tests (no files, no game ROM)."""

import math

import torch

from zorkppo.config import PpoParams
from zorkppo.envs import ToyRoom
from zorkppo.model import attach_lora, build_tiny_llama, pretrain, train_tokenizer
from zorkppo.modes import ConstrainedMode, rank_distribution
from zorkppo.policy import Policy, ValueHead
from zorkppo.prompt import Turn, render_prompt


def toy_prompt() -> str:
    return render_prompt(
        ToyRoom.DESCRIPTION, "You are empty-handed.", [Turn("", "You wake up in a vault.")]
    )


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_policy(
    seed: int = 0, pretrain_steps: int = 0, prompt: str | None = None, commands=ToyRoom.COMMANDS
) -> Policy:
    """A tiny Llama + LoRA, its tokenizer trained on `prompt` (default: the toy room's) and
    `commands`; untrained, it ranks those commands near uniformly."""
    torch.manual_seed(seed)
    texts = [(prompt or toy_prompt()) + " " + c + "\n" for c in commands] * 4
    tokenizer = train_tokenizer(texts, vocab_size=500)
    model = build_tiny_llama(tokenizer, 32, 64, 2, 2, 512)
    stream = [t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    pretrain(
        model,
        stream,
        steps=pretrain_steps,
        batch_size=8,
        seq_len=32,
        lr=3e-3,
        seed=seed,
        device="cpu",
    )
    model = attach_lora(model, 8, 32, 0.0, ALL_LINEAR)
    return Policy(model, tokenizer, ValueHead(32), max_prompt_tokens=256, max_new_tokens=4)


def ppo_settings(**overrides) -> PpoParams:
    base = {
        "num_envs": 4,
        "rollout_turns": 4,
        "iterations": 4,
        "ppo_epochs": 4,
        "minibatch_size": 8,
        "learning_rate": 3e-3,
        "max_steps": 6,
        "action_mode": "rank",
        "target_kl": 10.0,
    }
    return PpoParams(**{**base, **overrides})


def best_command_probability(policy: Policy, mode: str = "rank") -> float:
    """P(pull) in the toy room: over the 8 commands ranked, or generated along their trie."""
    if mode == "constrained":
        logprobs = ConstrainedMode().command_logprobs(policy, toy_prompt(), list(ToyRoom.COMMANDS))
        return math.exp(logprobs[ToyRoom.BEST])
    prompt_ids = policy.encode_prompts([toy_prompt()])
    options = [policy.encode_commands(ToyRoom.COMMANDS)]
    with torch.no_grad():
        dist, _ = rank_distribution(policy, prompt_ids, options)
    return float(dist[0, ToyRoom.COMMANDS.index(ToyRoom.BEST)].exp())
