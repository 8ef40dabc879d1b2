"""A tiny policy, PPO settings and runs for fast PPO tests (no files, no game ROM)."""

import math

import torch
from toy_room import ToyRoom

from zorkppo.config import PpoParams
from zorkppo.envs import VecGames
from zorkppo.model import attach_lora, build_tiny_llama, pretrain, train_tokenizer
from zorkppo.modes import ConstrainedMode, rank_distribution
from zorkppo.policy import Policy, ValueHead
from zorkppo.prompt import Turn, render_prompt
from zorkppo.trainer import PpoRun, start_episodes, train_iteration


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


def with_random_value_head(policy: Policy, seed: int = 0) -> Policy:
    """The policy with value-head weights drawn from N(0, 1): values that differ by prompt, so
    a check that compares values can fail (a fresh head predicts 0 everywhere)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.value_head.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return policy


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
        # the settings these tests' learning was measured with (the shipped ones differ)
        "temperature": 1.0,
        "normalize_advantages": True,
        "center_advantages": True,
        "value_coef": 0.5,
        "entropy_coef": 0.01,
    }
    return PpoParams(**{**base, **overrides})


def run_iterations(policy, cfg, iterations, seed=0, games=None, history_turns=3):
    """`iterations` PPO iterations in `games` (default: cfg.num_envs toy rooms, in process).
    Returns [(metrics, rows)] per iteration, and the run and its episodes."""
    games = games or VecGames(ToyRoom, cfg.num_envs, processes=False)
    run = PpoRun.start(cfg, policy, seed)
    episodes = start_episodes(games, history_turns)
    history = [train_iteration(run, episodes)[:2] for _ in range(iterations)]
    return history, run, episodes


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
