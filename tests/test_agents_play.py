"""Agents that play the real game: SFT learns to replay the walkthrough's opening, and a short
PPO run on Zork I from that warm start does not make it play worse."""

import contextlib
import copy
import random
from pathlib import Path

import pytest
import torch

from zorkppo.config import LoraParams, SftParams, load_params
from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import play_episodes, policy_chooser
from zorkppo.examples import build_examples, evaluate_actions
from zorkppo.model import load_causal_lm, load_tokenizer
from zorkppo.policy import Policy, ValueHead, policy_with_fresh_adapter
from zorkppo.ppo import AdaptiveKLController
from zorkppo.records import TRAJECTORIES, read_table
from zorkppo.sft import train_lora
from zorkppo.trainer import start_rollout, train_iteration

HISTORY, MAX_PROMPT = 2, 128  # as TINY_PIPELINE's prompt params
EPOCHS = 400  # at most; the 8 rows are learned well before (a 2-layer, 32-wide model)


@pytest.fixture(scope="module")
def warm_start(tiny_pipeline):
    """The tiny pipeline's base model with a LoRA trained on its walkthrough rows (8 turns) until
    greedy decoding replays every one, by the SFT stage's own loop and stopping rule."""
    with contextlib.chdir(tiny_pipeline):
        df = read_table("data/trajectories.parquet", TRAJECTORIES).to_pandas()
        tokenizer = load_tokenizer("models/base")
        model = load_causal_lm("models/base", torch.device("cpu"), "float32")
    torch.manual_seed(0)
    walkthrough = build_examples(df[df.source == "walkthrough"], tokenizer, HISTORY)

    def exact(model) -> float:
        return evaluate_actions(model, tokenizer, walkthrough, MAX_PROMPT, 4)["exact_match"]

    sft = SftParams(
        epochs=EPOCHS,
        batch_size=8,
        learning_rate=5e-3,
        check_every=20,
        lora=LoraParams(
            r=16, alpha=64, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        ),
    )
    model, updates = train_lora(
        model, tokenizer, walkthrough, sft, MAX_PROMPT, seed=0, learned=lambda m: exact(m) == 1.0
    )
    return model, tokenizer, walkthrough, updates, exact(model)


def greedy_commands(policy: Policy, rom_path, steps: int) -> list[str]:
    games = VecGames(zork_factory(str(rom_path), 12), 1, processes=False)
    chooser = policy_chooser(policy, policy.tokenizer, None, "generate", 8)
    rows = play_episodes("test", games, chooser, steps, HISTORY)
    return [r["action"] for r in rows]


def test_sft_learns_the_walkthrough_rows_and_replays_them_in_the_game(warm_start, rom_path):
    model, tokenizer, walkthrough, updates, exact = warm_start
    assert exact == 1.0, f"exact match {exact:.0%} after {updates} updates"
    assert updates < EPOCHS, "the early stop never fired"  # one batch an epoch here
    policy = Policy(model, tokenizer, ValueHead(model.config.hidden_size), MAX_PROMPT, 4)
    played = greedy_commands(policy, rom_path, len(walkthrough))
    assert played == [e.action for e in walkthrough]


def walkthrough_logprob(policy: Policy, walkthrough) -> float:
    """Mean log-prob of the walkthrough's commands at its own states, as PPO scores actions."""
    prompts = policy.encode_prompts([e.prompt for e in walkthrough])
    options = policy.encode_commands([e.action for e in walkthrough])
    with torch.no_grad():
        scored = policy.forward(prompts, options)
    return float((scored.token_logp.sum(-1)).mean())


def test_ppo_on_zork_keeps_what_the_warm_start_plays(warm_start, rom_path):
    """The shipped PPO settings (only the run's size is cut down), from the warm start, on the
    real game's opening: the walkthrough's commands stay at least as likely, the world-unchanged
    rate does not rise, and greedy play still replays them."""
    sft_model, tokenizer, walkthrough, _, _ = warm_start
    # SFT merged into a copy (the quantize stage with bits none); the fixture's model stays
    merged = copy.deepcopy(sft_model).merge_and_unload()
    shipped = load_params(Path(__file__).parents[1] / "params.yaml").ppo
    size = {"num_envs": 2, "rollout_turns": 4, "iterations": 4, "max_steps": len(walkthrough)}
    cfg = shipped.model_copy(update=size)
    torch.manual_seed(0)
    policy = policy_with_fresh_adapter(merged, tokenizer, cfg, MAX_PROMPT)
    before = walkthrough_logprob(policy, walkthrough)

    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    controller = AdaptiveKLController(cfg.kl.init_coef)
    games = VecGames(zork_factory(str(rom_path), 12), cfg.num_envs, processes=False)
    rollout = start_rollout(games, HISTORY)
    generator, rng = torch.Generator().manual_seed(0), random.Random(0)
    step, unchanged = 0, []
    for _ in range(cfg.iterations):
        metrics, _, updates = train_iteration(
            policy, games, rollout, optimizer, controller, cfg, step, 64, generator, rng
        )
        step += updates
        unchanged.append(metrics["invalid_command_rate"])

    after = walkthrough_logprob(policy, walkthrough)
    assert after >= before - 0.01, f"walkthrough log-prob fell from {before:.3f} to {after:.3f}"
    assert unchanged[-1] <= unchanged[0], f"world-unchanged rate rose: {unchanged}"
    policy.model.eval()
    assert greedy_commands(policy, rom_path, len(walkthrough)) == [e.action for e in walkthrough]
