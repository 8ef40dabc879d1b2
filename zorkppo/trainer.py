"""Multi-turn PPO against live games. Read `train` top to bottom; the math is in ppo.py.

One iteration: every game plays `rollout_turns` turns (one batched policy call per turn
for all games), rewards are shaped, GAE runs per game over its turns (bootstrapped by the
value of the state it stopped in), then `ppo_epochs` passes of minibatch updates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from zorkppo import ppo
from zorkppo.distributed import ONE_PROCESS, Replicas
from zorkppo.model import recompute_layer_activations
from zorkppo.modes import ActionMode, Sample, action_mode
from zorkppo.policy import Policy
from zorkppo.prompt import render_prompt
from zorkppo.rewards import TERMS, EpisodeTracker

if TYPE_CHECKING:  # the PPO update imports without the game engine (bench/gpu.py on a GPU host)
    from zorkppo.envs import VecGames
    from zorkppo.game import GameState


@dataclass
class RolloutState:
    """Where every game is between iterations; pickled into checkpoints for exact resume."""

    trackers: list[EpisodeTracker]
    states: list[GameState]
    episodes_started: int  # the next episode's number
    finished_scores: list[int] = field(default_factory=list)
    # With several replicas, replica r plays games r*n .. r*n+n-1 and numbers its later
    # episodes r, r+R, r+2R, ... past the first round: numbers unique across replicas.
    first_env: int = 0
    episode_stride: int = 1


def start_rollout(games: VecGames, history_turns: int, replicas: Replicas = ONE_PROCESS):
    states = games.call("reset")
    first = replicas.rank * games.count
    trackers = [EpisodeTracker(history_turns, episode=first + i) for i in range(games.count)]
    for tracker, state in zip(trackers, states, strict=True):
        tracker.start(state)
    started = games.count * replicas.world + replicas.rank
    return RolloutState(trackers, states, started, first_env=first, episode_stride=replicas.world)


def prompts_for(rollout: RolloutState, tokenizer, only: list[int] | None = None) -> list[str]:
    games = range(len(rollout.states)) if only is None else only
    return [
        render_prompt(
            rollout.states[i].description,
            rollout.states[i].inventory,
            list(rollout.trackers[i].history),
            tokenizer,
        )
        for i in games
    ]


def play_turns(
    policy: Policy, mode: ActionMode, games: VecGames, rollout: RolloutState, cfg, generator, rng
) -> tuple[list, list]:
    """Play cfg.rollout_turns turns in every game. Returns samples [T][N] and turn records [T][N]."""
    samples, records = [], []
    for _ in range(cfg.rollout_turns):
        prompts = prompts_for(rollout, policy.tokenizer)
        valid = games.call("valid_actions") if mode.needs_valid_actions else None
        turn = mode.act(policy, prompts, valid, generator, rng)
        commands = [s.command or "look" for s in turn]  # an empty generation still costs a turn
        after = games.call("step", [(c,) for c in commands])
        turn_records, resets = [], []
        for i, state in enumerate(after):
            tracker = rollout.trackers[i]
            terms = tracker.record(rollout.states[i], commands[i], state, cfg.rewards)
            truncated = not state.done and tracker.steps >= cfg.max_steps
            turn_records.append(
                {
                    "env": rollout.first_env + i,
                    "episode": tracker.episode,
                    "step": tracker.steps - 1,
                    "command": commands[i],
                    "game_score": state.score,
                    "location": state.location,
                    "state_hash": rollout.states[i].world_hash,
                    "done": state.done or truncated,
                    "truncated": truncated,
                    "world_changed": state.world_hash != rollout.states[i].world_hash,
                    "reward": sum(terms.values()),
                    **terms,
                }
            )
            rollout.states[i] = state
            if state.done or truncated:
                rollout.finished_scores.append(state.score)
                resets.append(i)
        # A game cut at max_steps has not ended: GAE needs the value of where it was cut,
        # read now, before the reset replaces that state.
        cut = [i for i in resets if turn_records[i]["truncated"]]
        if cut:
            cut_values = policy.values(
                policy.encode_prompts(prompts_for(rollout, policy.tokenizer, cut))
            )
            for i, value in zip(cut, cut_values.tolist(), strict=True):
                turn_records[i]["cut_value"] = value
        for i, state in zip(
            resets, games.call("reset", only=resets) if resets else [], strict=True
        ):
            rollout.trackers[i].episode = rollout.episodes_started
            rollout.episodes_started += rollout.episode_stride
            rollout.trackers[i].start(state)
            rollout.states[i] = state
        samples.append(turn)
        records.append(turn_records)
    return samples, records


def advantages_per_game(
    records, samples, last_values, gamma, lam
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE down each game's column of turns; returns [T, N] advantages and returns.

    A turn cut by max_steps ends its episode's GAE chain (the next turn starts a new game),
    but the game was not over: its TD target is reward + gamma * value of the state it was
    cut in (`cut_value`), as if that state's future had been played out."""
    rewards = torch.tensor(
        [[r["reward"] + gamma * r.get("cut_value", 0.0) for r in row] for row in records],
        dtype=torch.float32,
    )
    dones = torch.tensor([[float(r["done"]) for r in row] for row in records])
    values = torch.tensor([[s.value for s in row] for row in samples], dtype=torch.float32)
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for i in range(rewards.shape[1]):
        advantages[:, i], returns[:, i] = ppo.gae(
            rewards[:, i], values[:, i], dones[:, i], last_values[i], gamma, lam
        )
    return advantages, returns


def same_state_over_replicas(records, advantages, returns, replicas: Replicas):
    """ppo.same_state_advantages over every replica's games (columns in rank order), this
    replica's columns back."""
    states = [[r["state_hash"] for r in row] for row in records]
    everyone = replicas.gather((states, returns, advantages))
    all_states = [sum((s[t] for s, _, _ in everyone), []) for t in range(len(states))]
    all_returns = torch.cat([r for _, r, _ in everyone], dim=1)
    all_advantages = torch.cat([a for _, _, a in everyone], dim=1)
    mine = slice(replicas.rank * returns.shape[1], (replicas.rank + 1) * returns.shape[1])
    return ppo.same_state_advantages(all_returns, all_states, all_advantages)[:, mine]


def ppo_update(
    policy,
    mode,
    optimizer,
    samples,
    advantages,
    returns,
    cfg,
    kl_coef,
    update_step,
    total_updates,
    rng,
    replicas: Replicas = ONE_PROCESS,
):
    """cfg.ppo_epochs passes of clipped-PPO minibatch updates. Returns (stats, updates done).

    With several replicas each takes its share of every minibatch from its own turns, and
    the gradients are averaged before the step: one global minibatch, as in one process."""
    flat = [s for row in samples for s in row]
    adv = advantages.flatten()
    if cfg.normalize_advantages:  # over every replica's turns
        moments = replicas.moments(adv) if replicas.world > 1 else None
        adv = ppo.normalize(adv, moments=moments, center=cfg.center_advantages)
    ret = returns.flatten()
    old_logprob = torch.tensor([s.logprob for s in flat])
    old_values = torch.tensor([s.value for s in flat])
    weights = torch.tensor([s.weight for s in flat])
    params = policy.trainable_parameters()
    minibatch_size = replicas.split(cfg.minibatch_size, "ppo.minibatch_size")
    stats: dict[str, list[float]] = {}
    updates = 0
    for _epoch in range(cfg.ppo_epochs):
        order = list(range(len(flat)))
        rng.shuffle(order)
        epoch_kl = []
        for start in range(0, len(order), minibatch_size):
            idx = order[start : start + minibatch_size]
            clip = ppo.clip_range(
                update_step + updates, cfg.clip_start, cfg.clip_floor, cfg.clip_horizon
            )
            ent_coef = ppo.entropy_coef(update_step + updates, cfg.entropy_coef, total_updates)
            # Gradient checkpointing (param) trades recompute for activation memory: the 7B
            # profile's need. Only the forward runs inside: reentrant recompute needs no flags.
            with recompute_layer_activations(policy.model, cfg.gradient_checkpointing):
                # New log-probs, values, entropy, KL to reference and JS to the rollout policy.
                terms = mode.rescore(policy, [flat[i] for i in idx])
            device = terms["logprob"].device
            pg_loss, clip_frac, approx_kl = ppo.policy_loss(
                terms["logprob"],
                old_logprob[idx].to(device),
                adv[idx].to(device),
                clip,
                weights[idx].to(device),
            )
            v_loss = ppo.value_loss(
                terms["values"], old_values[idx].to(device), ret[idx].to(device), cfg.value_clip
            )
            loss = (
                pg_loss
                + cfg.value_coef * v_loss
                - ent_coef * terms["entropy"]
                + kl_coef * terms["kl"]
                + cfg.js_coef * terms["js"]
            )
            optimizer.zero_grad()
            loss.backward()
            replicas.average_gradients(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            updates += 1
            epoch_kl.append(float(approx_kl))
            for name, value in (
                ("loss/policy", pg_loss),
                ("loss/value", v_loss),
                ("entropy", terms["entropy"]),
                ("kl_ref", terms["kl"]),
                ("js", terms["js"]),
                ("clip_fraction", clip_frac),
                ("approx_kl", approx_kl),
                ("grad_norm", grad_norm),
                ("clip_range", clip),
                ("entropy_coef", ent_coef),
            ):
                stats.setdefault(name, []).append(value.item() if torch.is_tensor(value) else value)
        if replicas.mean(sum(epoch_kl) / len(epoch_kl)) > cfg.target_kl:
            stats.setdefault("early_stop_epoch", []).append(_epoch)
            break
    return {k: replicas.mean(sum(v) / len(v)) for k, v in stats.items()}, updates


def rollout_kl(samples: list[list[Sample]], mode: ActionMode) -> tuple[float, int]:
    """The rollout's summed KL to the reference and its count in the loss's unit
    (`mode.kl_units`): command tokens when generating (the loss's KL is per token), turns
    when ranking. Their ratio is the mean the KL controller reads."""
    flat = [s for row in samples for s in row]
    return sum(s.kl for s in flat), sum(mode.kl_units(s) for s in flat)


def turn_rows(records, samples, advantages, returns) -> list[list[dict]]:
    """The rollouts table's rows, [turn][game]: a record of each game's turn, with its sample."""
    return [
        [
            {
                **r,
                "logprob": s.logprob,
                "ref_logprob": s.ref_logprob,
                "value": s.value,
                "advantage": float(advantages[t, i]),
                "return": float(returns[t, i]),
                "weight": s.weight,
            }
            for i, (r, s) in enumerate(zip(row, srow, strict=True))
        ]
        for t, (row, srow) in enumerate(zip(records, samples, strict=True))
    ]


def iteration_metrics(
    rows, update_stats, current_scores, finished_scores, kl_coef, kl_rollout, seconds
):
    """The iteration's metrics from every game's turns (all replicas' rows)."""
    values = torch.tensor([r["value"] for r in rows])
    returns = torch.tensor([r["return"] for r in rows])
    metrics = {
        "score/current": sum(current_scores) / len(current_scores),
        "score/turn_mean": sum(r["game_score"] for r in rows) / len(rows),
        "return/mean": float(returns.mean()),
        "reward/mean": sum(r["reward"] for r in rows) / len(rows),
        "kl_coef": kl_coef,
        "kl_rollout": kl_rollout,
        "explained_variance": ppo.explained_variance(values, returns),
        "invalid_command_rate": sum(not r["world_changed"] for r in rows) / len(rows),
        "truncated_episodes": sum(r["truncated"] for r in rows),
        "env_steps_per_s": len(rows) / seconds,
        **{f"reward/{t}": sum(r[t] for r in rows) / len(rows) for t in TERMS},
        **update_stats,
    }
    if finished_scores:
        metrics["score/episode_mean"] = sum(finished_scores) / len(finished_scores)
    return metrics


def train_iteration(
    policy,
    games,
    rollout,
    optimizer,
    controller,
    cfg,
    update_step,
    total_updates,
    generator,
    rng,
    replicas: Replicas = ONE_PROCESS,
) -> tuple[dict, list[dict], int]:
    """One PPO iteration, steps 1-5. Returns (metrics, turn records with advantages, updates).

    With several replicas, the metrics and the rows cover every replica's games (rows in
    rank order), and are the same on every replica."""
    policy.model.eval()  # dropout off: rollout and update must score actions identically
    mode = action_mode(cfg.action_mode, cfg.max_candidates, cfg.explore)
    rollout.finished_scores = []
    # 1. Rollout: every game plays rollout_turns turns; one batched policy call per turn.
    started = time.perf_counter()
    samples, records = play_turns(policy, mode, games, rollout, cfg, generator, rng)
    seconds = time.perf_counter() - started
    # 2. Advantages: GAE per game, bootstrapped from the value of where each game stands now
    #    (or, ppo.baseline games, each return against the other games' at the same turn;
    #    state, against the other games' returns from the same game state).
    last_values = policy.values(policy.encode_prompts(prompts_for(rollout, policy.tokenizer)))
    advantages, returns = advantages_per_game(
        records, samples, last_values.cpu(), cfg.gamma, cfg.gae_lambda
    )
    if cfg.baseline == "games":  # against the other games at the same turn, every replica's
        *totals, count = replicas.sum(returns.sum(1).tolist() + [returns.shape[1]])
        advantages = ppo.leave_one_out_advantages(
            returns, torch.tensor(totals, dtype=returns.dtype)[:, None], int(count)
        )
    elif cfg.baseline == "state":  # against the other games' turns in the same game state
        advantages = same_state_over_replicas(records, advantages, returns, replicas)
    # 3. Update: clipped PPO epochs over shuffled minibatches, early stop past target_kl.
    update_started = time.perf_counter()
    update_stats, updates = ppo_update(
        policy,
        mode,
        optimizer,
        samples,
        advantages,
        returns,
        cfg,
        controller.coef,
        update_step,
        total_updates,
        rng,
        replicas,
    )
    update_seconds = time.perf_counter() - update_started
    # 4. Adaptive KL coefficient from this rollout's measured KL to the reference (all games).
    kl_sum, kl_units = replicas.sum(list(rollout_kl(samples, mode)))
    local = (
        turn_rows(records, samples, advantages, returns),
        [s.score for s in rollout.states],
        rollout.finished_scores,
    )
    everyone = replicas.gather(local)
    # turn by turn, and within a turn the games in order: replica 0's, then replica 1's, ...
    rows = [row for t in range(len(records)) for turns, _, _ in everyone for row in turns[t]]
    metrics = iteration_metrics(
        rows,
        update_stats,
        [score for _, scores, _ in everyone for score in scores],
        [score for _, _, finished in everyone for score in finished],
        controller.coef,
        kl_sum / max(1, kl_units),
        seconds,
    )
    metrics["update_samples_per_s"] = updates * cfg.minibatch_size / update_seconds  # wall
    controller.update(metrics["kl_rollout"])
    # 5. Turn-level records for the rollouts table: returned with the metrics.
    return metrics, rows, updates
