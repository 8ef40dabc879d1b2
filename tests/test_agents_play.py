"""Agents that play the real game: SFT learns to replay the walkthrough's opening, and a short
PPO run on Zork I from that warm start reinforces the command that scores and keeps the replay."""

import contextlib
from pathlib import Path

import pytest
import torch

from zorkppo.config import LoraParams, SftParams, load_params
from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import play, policy_chooser
from zorkppo.examples import build_examples
from zorkppo.model import (
    load_causal_lm,
    load_tokenizer,
    pretrain,
    save_adapter,
    token_stream,
)
from zorkppo.policy import Policy, ValueHead, policy_with_fresh_adapter
from zorkppo.prompt import completion_text
from zorkppo.quantize import merge_adapter
from zorkppo.records import TRAJECTORIES, read_table
from zorkppo.scoring import evaluate_actions
from zorkppo.sft import train_lora
from zorkppo.trainer import PpoRun, start_episodes, train_iteration

HISTORY, MAX_PROMPT = 2, 128  # as TINY_PIPELINE's prompt params
EPOCHS = 400  # at most; the 8 rows are learned well before (a 2-layer, 32-wide model)


@pytest.fixture(scope="module")
def warm_start(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline's base model, first pretrained on the walkthrough's rows (the test
    pipeline's 32-wide base is near uniform: its samples would be noise), then given a LoRA
    trained on those rows (8 turns) until greedy decoding replays every one, by the SFT
    stage's own loop and stopping rule."""
    with contextlib.chdir(tiny_pipeline):
        df = read_table("data/trajectories.parquet", TRAJECTORIES).to_pandas()
        tokenizer = load_tokenizer("models/base")
        model = load_causal_lm("models/base", torch.device("cpu"), "float32")
    torch.manual_seed(0)
    walkthrough = build_examples(df[df.source == "walkthrough"], tokenizer, HISTORY)
    texts = [e.prompt + completion_text(e.action, tokenizer) for e in walkthrough]
    pretrain(model, token_stream(tokenizer, texts), 200, 8, 64, 3e-3, seed=0, device="cpu")
    base_dir = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(base_dir)

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
    return model, tokenizer, walkthrough, updates, exact(model), base_dir


def greedy_commands(policy: Policy, rom_path, steps: int) -> list[str]:
    games = VecGames(zork_factory(str(rom_path), 12), 1, processes=False)
    chooser = policy_chooser(policy, "generate", 8, None)
    rows = play("test", games, chooser, 1, steps, HISTORY)
    return [r["action"] for r in rows]


def test_sft_learns_the_walkthrough_rows_and_replays_them_in_the_game(warm_start, rom_path):
    model, tokenizer, walkthrough, updates, exact, _ = warm_start
    assert exact == 1.0, f"exact match {exact:.0%} after {updates} updates"
    assert updates < EPOCHS, "the early stop never fired"  # one batch an epoch here
    policy = Policy(model, tokenizer, ValueHead(model.config.hidden_size), MAX_PROMPT, 4)
    played = greedy_commands(policy, rom_path, len(walkthrough))
    assert played == [e.action for e in walkthrough]


def command_logprobs(policy: Policy, walkthrough) -> list[float]:
    """Each walkthrough command's log-prob at its own state, as PPO scores actions."""
    prompts = policy.encode_prompts([e.prompt for e in walkthrough])
    options = policy.encode_commands([e.action for e in walkthrough])
    with torch.no_grad():
        scored = policy.forward(prompts, options)
    return scored.token_logp.sum(-1).tolist()


def test_ppo_on_zork_raises_the_scoring_command_and_keeps_the_replay(
    warm_start, rom_path, tmp_path
):
    """The shipped PPO settings (only the run's size is cut down), from the warm start, on the
    real game's opening: rollouts follow the walkthrough, whose `get egg` scores 5; PPO makes
    that command more likely where it scores, and greedy play still replays every command."""
    sft_model, tokenizer, walkthrough, _, _, base_dir = warm_start
    # SFT merged into the base, as the quantize stage does with bits none
    save_adapter(sft_model, tmp_path / "adapter")
    merged = merge_adapter(base_dir, tmp_path / "adapter", torch.device("cpu"), "float32")
    shipped = load_params(Path(__file__).parents[1] / "params.yaml").ppo
    size = {"num_envs": 2, "rollout_turns": 4, "iterations": 4, "max_steps": len(walkthrough)}
    cfg = shipped.model_copy(update=size)
    torch.manual_seed(0)
    policy = policy_with_fresh_adapter(merged, tokenizer, cfg, MAX_PROMPT)
    scoring = [e.action for e in walkthrough].index("get egg")
    before = command_logprobs(policy, walkthrough)

    run = PpoRun.start(cfg, policy, seed=0)
    games = VecGames(zork_factory(str(rom_path), 12), cfg.num_envs, processes=False)
    episodes = start_episodes(games, HISTORY)
    metrics = [train_iteration(run, episodes)[0] for _ in range(cfg.iterations)]

    after = command_logprobs(policy, walkthrough)
    assert sum(m["reward/score"] for m in metrics) > 0  # the rollouts reached the egg
    assert after[scoring] > before[scoring] + 1e-3, (before, after)
    policy.model.eval()
    assert greedy_commands(policy, rom_path, len(walkthrough)) == [e.action for e in walkthrough]
