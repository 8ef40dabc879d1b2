"""PPO behaviour: rewards, token masks, rank mode, what an update touches, and real learning."""

from functools import partial

import pytest
import torch
from ppo_helpers import best_command_probability, ppo_settings, tiny_policy, toy_prompt
from ppo_helpers import run_iterations as run_with_state
from toy_room import ToyRoom

from zorkppo.config import RewardParams, parse_params
from zorkppo.envs import VecGames
from zorkppo.episodes import Step
from zorkppo.errors import UserError
from zorkppo.game import GameState
from zorkppo.model import recompute_layer_activations
from zorkppo.modes import action_mode, rank_distribution
from zorkppo.rewards import reward_terms
from zorkppo.trainer import advantages_per_game, rollout_kl


def run_iterations(policy, cfg, iterations, seed=0):
    return run_with_state(policy, cfg, iterations, seed)[0]


def a_step(reward=0, died=False, world_changed=True, new_location=False, visits=1) -> Step:
    state = GameState("", "", "", "Room", 0, 0, 0, False, False, False, "h0")
    after = GameState("", "", "", "Room", reward, 1, reward, died, False, died, "h1")
    return Step(0, 0, 0, state, "x", after, world_changed, new_location, visits, None, None)


def test_reward_terms_hand_values():
    weights = RewardParams(score=1.0, new_location=1.0, death=-5.0, valid_command=0.1, novelty=0.2)
    # +10 score, new room, alive, world changed, first visit: 10 + 1 + 0 + 0.1 + 0.2/sqrt(1)
    assert reward_terms(a_step(10, new_location=True), weights) == {
        "score": 10.0,
        "new_location": 1.0,
        "death": -0.0,
        "valid_command": 0.1,
        "novelty": 0.2,
    }
    # died (the game already took 10 points), nothing new, 4th visit: novelty 0.2/2
    terms = reward_terms(a_step(-10, died=True, visits=4), weights)
    assert terms == {
        "score": -10.0,
        "new_location": 0.0,
        "death": -5.0,
        "valid_command": 0.1,
        "novelty": 0.1,
    }
    # a command that changed nothing earns no novelty, however rarely its state was seen
    assert reward_terms(a_step(world_changed=False), weights)["novelty"] == 0.0


def test_only_option_tokens_carry_log_probs():
    policy = tiny_policy()
    prompt = policy.encode_prompts([toy_prompt()])[0]
    option = policy.tokenizer("pull\n", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        scored = policy.forward([prompt, prompt[:-3]], [option, option[:1]], full=True)
        logits = policy.model(input_ids=torch.tensor([prompt + option])).logits[0]
        short_logits = policy.model(input_ids=torch.tensor([prompt[:-3]])).logits[0, -1]
    manual = (
        torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
        .gather(-1, torch.tensor(option)[:, None])
        .squeeze(-1)
    )
    assert scored.mask.tolist() == [[True] * len(option), [True] + [False] * (len(option) - 1)]
    assert torch.allclose(scored.token_logp[0], manual, atol=1e-5)
    assert (scored.token_logp[1, 1:] == 0).all()  # padding positions carry nothing
    # rows of different prompt lengths in one batch: logits are kept from the shortest on
    short_manual = torch.log_softmax(short_logits, -1)[option[0]]
    assert torch.allclose(scored.token_logp[1, 0], short_manual, atol=1e-5)


def test_rank_policy_is_softmax_of_summed_candidate_log_probs():
    policy = tiny_policy()
    prompt = policy.encode_prompts([toy_prompt()])[0]
    options = [
        policy.tokenizer(c + "\n", add_special_tokens=False)["input_ids"]
        for c in ("pull", "look", "wait")
    ]
    with torch.no_grad():
        dist, _ = rank_distribution(policy, [prompt], [options])
        sums = torch.stack([policy.forward([prompt], [o]).token_logp.sum() for o in options])
    assert torch.allclose(dist[0], torch.log_softmax(sums, -1), atol=1e-5)


def test_one_iteration_changes_only_lora_and_value_head():
    policy = tiny_policy()
    # The untrained toy policy's commands change nothing, so every reward is 0: a value of 1
    # gives the value head something to learn.
    torch.nn.init.constant_(policy.value_head.linear.bias, 1.0)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in policy.value_head.named_parameters()}
    run_iterations(
        policy, ppo_settings(action_mode="generate", num_envs=2, rollout_turns=3, ppo_epochs=1), 1
    )
    for name, param in policy.model.named_parameters():
        assert torch.equal(param, before[name]) != ("lora_" in name), name
    assert any(not torch.equal(p, head_before[n]) for n, p in policy.value_head.named_parameters())


def test_rollout_records_are_consistent():
    policy = tiny_policy()
    # no valid-command bonus: the invalid-command rate must not read the weighted term
    rewards = RewardParams(valid_command=0.0)
    ((metrics, rows),) = run_iterations(
        policy, ppo_settings(num_envs=3, rollout_turns=4, ppo_epochs=1, rewards=rewards), 1
    )
    assert len(rows) == 12 and {r["env"] for r in rows} == {0, 1, 2}
    for r in rows:
        assert r["reward"] == pytest.approx(
            sum(r[t] for t in ("score", "new_location", "death", "valid_command", "novelty"))
        )
        assert r["return"] == pytest.approx(r["advantage"] + r["value"], abs=1e-5)
        assert r["done"] == (r["command"] == ToyRoom.BEST)  # max_steps 6 > 4 turns: no cuts
        assert not r["truncated"]
        assert r["world_changed"] == (r["command"] == ToyRoom.BEST)  # only the lever moves
    pulls = sum(r["command"] == ToyRoom.BEST for r in rows)
    assert metrics["invalid_command_rate"] == pytest.approx(1 - pulls / len(rows))
    for key in (
        "loss/policy",
        "loss/value",
        "entropy",
        "kl_ref",
        "js",
        "clip_fraction",
        "clip_range",
        "explained_variance",
        "kl_coef",
        "invalid_command_rate",
        "env_steps_per_s",
        "update_samples_per_s",
        "score/current",
    ):
        assert key in metrics, key


def test_state_baseline_judges_each_turn_against_the_other_games_in_its_state():
    """ppo.baseline state: a row's advantage is its return minus the mean return of the
    other games' rows typed in the same world state (the grouping itself is checked by
    hand in test_ppo_math). The toy room has one state a command is typed in (the pull
    that ends an episode leads to another, which resets), so every row is compared."""
    cfg = ppo_settings(num_envs=3, rollout_turns=4, ppo_epochs=1, baseline="state")
    ((_, rows),) = run_iterations(tiny_policy(), cfg, 1)
    # the hash of the state the command was typed in, not of the one it led to
    assert {r["state_hash"] for r in rows} == {ToyRoom().reset().world_hash}
    assert any(r["command"] == ToyRoom.BEST for r in rows)  # some rows did lead elsewhere
    for r in rows:
        others = [o["return"] for o in rows if o["env"] != r["env"]]
        assert r["advantage"] == pytest.approx(r["return"] - sum(others) / len(others), abs=1e-5)


def test_gae_runs_down_each_game_separately():
    class S:
        def __init__(self, value):
            self.value = value

    records = [
        [{"reward": 1.0, "done": False}, {"reward": 0.0, "done": True}],
        [{"reward": 0.0, "done": True}, {"reward": 2.0, "done": False}],
    ]
    samples = [[S(0.0), S(0.0)], [S(0.0), S(0.0)]]
    adv, ret = advantages_per_game(records, samples, torch.tensor([0.0, 5.0]), gamma=0.5, lam=1.0)
    # game 0: turn 1 ends the episode -> adv1 = 0; turn 0: 1 + 0.5*0 ... = 1 (no leak past done)
    # game 1: turn 0 done -> 0; turn 1: 2 + 0.5 * 5 (bootstrap) = 4.5
    assert adv.tolist() == [[1.0, 0.0], [0.0, 4.5]]
    assert torch.equal(adv, ret)


def test_gae_bootstraps_a_game_cut_by_max_steps():
    class S:
        def __init__(self, value):
            self.value = value

    # one game: turn 0 reward 1; turn 1 reward 0, cut by max_steps in a state worth 4.
    # The next turn is a new game, so the rollout's last value (100) must not leak in.
    records = [[{"reward": 1.0, "done": False}], [{"reward": 0.0, "done": True, "cut_value": 4.0}]]
    adv, ret = advantages_per_game(
        records, [[S(0.0)], [S(0.0)]], torch.tensor([100.0]), gamma=0.5, lam=1.0
    )
    # turn 1: 0 + 0.5 * 4 = 2; turn 0: 1 + 0.5 * V1 (0) + 0.5 * 1 * 2 = 2
    assert adv.flatten().tolist() == [2.0, 2.0]


def test_cut_games_carry_the_value_of_where_they_were_cut():
    policy = tiny_policy()
    torch.nn.init.constant_(policy.value_head.linear.bias, 3.0)  # every state is worth 3
    cfg = ppo_settings(
        num_envs=3, rollout_turns=4, ppo_epochs=1, max_steps=2, gamma=0.5, gae_lambda=0.0
    )
    ((metrics, rows),) = run_iterations(policy, cfg, 1)
    cut = [r for r in rows if r["truncated"]]
    assert cut and metrics["truncated_episodes"] == len(cut)
    for r in rows:
        assert r["value"] == pytest.approx(3.0)
        if r["truncated"]:  # the game went on: reward + gamma * 3 - 3
            assert r["done"] and r["advantage"] == pytest.approx(r["reward"] + 1.5 - 3.0)
        elif r["done"]:  # the game ended: nothing after it
            assert r["advantage"] == pytest.approx(r["reward"] - 3.0)


def test_kl_for_the_controller_is_per_token_in_generate_mode():
    class S:
        explored = False  # the policy's own draw

        def __init__(self, kl, tokens):
            self.kl, self.options = kl, [[0] * tokens]

    samples = [[S(0.3, 3)], [S(0.1, 1)]]
    assert rollout_kl(samples, action_mode("generate")) == (pytest.approx(0.4), 4)
    assert rollout_kl(samples, action_mode("constrained")) == (pytest.approx(0.4), 4)
    assert rollout_kl(samples, action_mode("rank")) == (pytest.approx(0.4), 2)


def test_policy_learns_the_best_command_in_a_toy_room():
    """Real learning: in a room where only `pull` pays, its probability rises under PPO."""
    policy = tiny_policy()
    start = best_command_probability(policy)
    history = run_iterations(policy, ppo_settings(), 5)
    end = best_command_probability(policy)
    assert 0.05 < start < 0.35  # near uniform over 8 commands at the start
    assert end > start + 0.2, (start, end)
    assert history[-1][0]["reward/mean"] > history[0][0]["reward/mean"]


def test_constrained_policy_learns_the_best_command_in_a_toy_room():
    """The same room, commands generated along the trie of the 8 valid ones. Here each command
    is one word token then a forced newline, so only the first token's distribution (at one
    shared hidden state) can move; ranking also moves each command's continuation tokens.
    Measured over seeds 0-3, 5 iterations: P(pull) 0.12 -> 0.16-0.23 (rank: -> 0.25-0.36)."""
    policy = tiny_policy()
    start = best_command_probability(policy, "constrained")
    run_iterations(policy, ppo_settings(action_mode="constrained"), 5)
    end = best_command_probability(policy, "constrained")
    assert 0.05 < start < 0.35
    assert end > 1.2 * start, (start, end)


def test_zero_envs_is_refused():
    with pytest.raises(UserError, match="ppo.num_envs = 0 is invalid"):
        parse_params({"ppo": {"num_envs": 0}})
    with pytest.raises(UserError, match="ppo.num_envs is 0"):
        VecGames(ToyRoom, 0, processes=False)


def test_worker_processes_play_like_in_process_games_and_report_their_memory():
    with VecGames(ToyRoom, 2) as workers:
        workers.call("reset")
        played = workers.call("step", [("pull",), ("look",)])
        assert [s.score for s in played] == [10, 0]  # each worker runs its own game
        assert workers.peak_rss_mb() > 1.0  # forkserver children report their own peak
    seeded = VecGames([partial(ToyRoom, 10), partial(ToyRoom, 20)], 2, processes=False)
    assert [game.max_score for game in seeded.games] == [10, 20]  # game i from factory i
    in_process = VecGames(ToyRoom, 2, processes=False)
    in_process.call("reset")
    assert in_process.call("step", [("pull",), ("look",)]) == played
    assert in_process.peak_rss_mb() == 0.0


def test_gradient_checkpointing_recomputes_layers_with_the_same_gradients(monkeypatch):
    policy = tiny_policy(seed=1)
    policy.model.eval()
    torch.nn.init.normal_(policy.value_head.linear.weight)  # nonzero: its input's gradient counts
    prompt_ids = policy.encode_prompts([toy_prompt()] * 2)
    options = [
        policy.tokenizer(c, add_special_tokens=False)["input_ids"] for c in ToyRoom.COMMANDS[:2]
    ]
    calls = []
    real_checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint,
        "checkpoint",
        lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k),
    )

    def gradients(enabled: bool) -> list[torch.Tensor]:
        policy.model.zero_grad(set_to_none=True)
        policy.value_head.zero_grad(set_to_none=True)
        with recompute_layer_activations(policy.model, enabled):
            scored = policy.forward(prompt_ids, options)
            (scored.token_logp.sum() + scored.values.sum()).backward()
        return [p.grad.clone() for p in policy.trainable_parameters()]

    plain = gradients(False)
    assert calls == []
    recomputed = gradients(True)
    assert len(calls) == policy.model.config.num_hidden_layers  # each decoder layer, once
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed, strict=True))
    assert any(g.abs().sum() > 0 for g in plain)
    # the layers are back to plain eval mode afterwards: generation keeps its KV cache
    assert not any(m.training for m in policy.model.modules())
