"""Multi-turn PPO against live games. Read `train_iteration` top to bottom; the math is in
ppo.py.

One iteration: every game plays `rollout_turns` turns (one batched policy call per turn
for all games), rewards are shaped, GAE runs per game over its turns (bootstrapped by the
value of the state it stopped in), then `ppo_epochs` passes of minibatch updates.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from zorkppo import ppo
from zorkppo.archive import Archive, act_or_explore, cell_of
from zorkppo.distributed import ONE_PROCESS, Replicas
from zorkppo.episodes import Episodes
from zorkppo.model import recompute_layer_activations
from zorkppo.modes import ActionMode, Sample, action_mode
from zorkppo.policy import Policy
from zorkppo.rewards import TERMS, reward_terms
from zorkppo.self_imitation import BestWays

if TYPE_CHECKING:  # the PPO update imports without the game engine (bench/gpu.py on a GPU host)
    from zorkppo.config import PpoParams
    from zorkppo.envs import VecGames


@dataclass
class PpoRun:
    """What one PPO run carries from iteration to iteration: the policy and how it acts, the
    optimizer, the KL controller, the random streams and the replicas. stages.ppo checkpoints
    it (`state_dict`) with the games."""

    cfg: PpoParams
    policy: Policy
    mode: ActionMode
    optimizer: torch.optim.Optimizer
    controller: ppo.AdaptiveKLController
    generator: torch.Generator  # the policy's sampling
    rng: random.Random  # minibatch order, rank mode's candidate draws
    total_updates: int  # over the whole run: the entropy bonus decays over them
    replicas: Replicas = ONE_PROCESS
    update_step: int = 0
    archive: Archive | None = None  # ppo.archive share or frontier_explore > 0: cells reached
    best_ways: BestWays | None = None  # ppo.self_imitation.coef > 0: the ways it imitates

    @classmethod
    def start(cls, cfg, policy: Policy, seed: int, replicas: Replicas = ONE_PROCESS) -> PpoRun:
        kl = cfg.kl
        samples = cfg.num_envs * cfg.rollout_turns  # an iteration's, over every replica
        # Each replica samples its own games from its own streams (rank 0's are one process's).
        own_seed = seed + replicas.rank
        return cls(
            cfg,
            policy,
            action_mode(cfg.action_mode, cfg.max_candidates),
            torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate),
            ppo.AdaptiveKLController(kl.init_coef, kl.low, kl.high, kl.up, kl.down),
            torch.Generator().manual_seed(own_seed),
            random.Random(own_seed),
            cfg.iterations * cfg.ppo_epochs * math.ceil(samples / cfg.minibatch_size),
            replicas,
            archive=(
                Archive(cfg.archive.inventory)
                if cfg.archive.share > 0 or cfg.archive.frontier_explore > 0
                else None
            ),
            best_ways=(
                BestWays(cfg.self_imitation.keep, cfg.self_imitation.rank)
                if cfg.self_imitation.coef > 0
                else None
            ),
        )

    def state_dict(self) -> dict:
        """The optimizer, controller and update count: the same on every replica."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "controller": self.controller.state_dict(),
            "update_step": self.update_step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state["controller"])
        self.update_step = state["update_step"]

    def streams(self) -> dict:
        """This replica's random streams, its archive and its best ways."""
        return {
            "generator": self.generator.get_state(),
            "rng": self.rng.getstate(),
            "archive": self.archive,
            "best_ways": self.best_ways,
        }

    def load_streams(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.rng.setstate(state["rng"])
        self.archive = state["archive"]
        self.best_ways = state["best_ways"]


def start_episodes(games: VecGames, history_turns: int, replicas: Replicas = ONE_PROCESS):
    """Every game's first episode. With several replicas, replica r plays games r*n .. r*n+n-1,
    whose first episodes have those numbers; its later ones are numbered r, r+R, r+2R, ...
    past the first round: numbers unique across replicas."""
    first = replicas.rank * games.count
    episodes = Episodes(
        games, history_turns, games.count * replicas.world + replicas.rank, replicas.world
    )
    episodes.start(numbers=range(first, first + games.count))
    return episodes


def play_turns(run: PpoRun, episodes: Episodes) -> tuple[list, list, list[int]]:
    """cfg.rollout_turns turns in every game, a game restarting as its episode ends. Returns
    samples [T][N], turn records [T][N] and the final scores of the episodes that ended."""
    cfg, policy, mode = run.cfg, run.policy, run.mode
    first_game = run.replicas.rank * episodes.games.count
    samples, records, finished = [], [], []
    for _ in range(cfg.rollout_turns):
        prompts = episodes.prompts(policy.tokenizer)
        valid = episodes.valid_actions() if mode.needs_valid_actions else None
        turn = act_or_explore(run, episodes, prompts, valid)
        # an empty generation still costs a turn
        steps = episodes.step([s.command or "look" for s in turn])
        turn_records = []
        for step in steps:
            terms = reward_terms(step, cfg.rewards)
            truncated = not step.after.done and step.step + 1 >= cfg.max_steps
            turn_records.append(
                {
                    "env": first_game + step.game,
                    "episode": step.episode,
                    "step": step.step,
                    "command": step.command,
                    "game_score": step.after.score,
                    "location": step.after.location,
                    "state_hash": step.before.world_hash,
                    "start": episodes.current[step.game].start,
                    "explored": turn[step.game].explored,
                    "done": step.after.done or truncated,
                    "truncated": truncated,
                    "world_changed": step.world_changed,
                    "reward": sum(terms.values()),
                    **terms,
                }
            )
        if run.best_ways is not None:  # each game's way from the start, offered as it scores
            counting = run.best_ways.rank == "risk"  # where episodes die, counted
            for step, sample, record in zip(steps, turn, turn_records, strict=True):
                trail = episodes.current[step.game].trail
                trail.append(sample)
                scored = step.after.score > step.before.score
                end = cell_of(step.after) if scored or counting else ()
                if scored:
                    run.best_ways.offer(step.after.score, trail, end)
                if counting:
                    run.best_ways.observe(step.episode, end, record["done"], step.after.died)
        ended = [i for i, r in enumerate(turn_records) if r["done"]]
        finished += [steps[i].after.score for i in ended]
        # A game cut at max_steps has not ended: GAE needs the value of where it was cut,
        # read now, before the restart replaces that state.
        cut = [i for i in ended if turn_records[i]["truncated"]]
        if cut:
            cut_values = policy.values(
                policy.encode_prompts(episodes.prompts(policy.tokenizer, cut))
            )
            for i, value in zip(cut, cut_values.tolist(), strict=True):
                turn_records[i]["cut_value"] = value
        if run.archive is None:
            episodes.start(ended)
        else:  # return to a reached state, or start over
            if cfg.archive.frontier_explore:  # the counts it explores by
                run.archive.count_typed(steps)
            run.archive.record(episodes, steps, cfg.max_steps)
            run.archive.restart(episodes, ended, cfg.archive.share, run.rng)
        samples.append(turn)
        records.append(turn_records)
    return samples, records, finished


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


def ppo_update(run: PpoRun, samples, advantages, returns) -> tuple[dict, int]:
    """cfg.ppo_epochs passes of clipped-PPO minibatch updates, at the KL coefficient the
    controller holds now. Returns (stats, updates done); run.update_step advances by them.

    With several replicas each takes its share of every minibatch from its own turns, and
    the gradients are averaged before the step: one global minibatch, as in one process."""
    cfg, policy, mode, replicas = run.cfg, run.policy, run.mode, run.replicas
    kl_coef, first_update = run.controller.coef, run.update_step
    every = [s for row in samples for s in row]
    # explored turns were not the policy's draws: no update learns from them
    policy_turns = [k for k, s in enumerate(every) if not s.explored]
    flat = [every[k] for k in policy_turns]
    if not flat:  # every turn explored: nothing of the policy's to update
        return {}, 0
    adv = advantages.flatten()[policy_turns]
    if cfg.normalize_advantages:  # over every replica's turns
        moments = replicas.moments(adv) if replicas.world > 1 else None
        adv = ppo.normalize(adv, moments=moments, center=cfg.center_advantages)
    ret = returns.flatten()[policy_turns]
    old_logprob = torch.tensor([s.logprob for s in flat])
    old_values = torch.tensor([s.value for s in flat])
    params = policy.trainable_parameters()
    minibatch_size = replicas.split(cfg.minibatch_size, "ppo.minibatch_size")
    stats: dict[str, list[float]] = {}
    for epoch in range(cfg.ppo_epochs):
        order = list(range(len(flat)))
        run.rng.shuffle(order)
        epoch_kl = []
        for start in range(0, len(order), minibatch_size):
            idx = order[start : start + minibatch_size]
            clip = ppo.clip_range(run.update_step, cfg.clip_start, cfg.clip_floor, cfg.clip_horizon)
            ent_coef = ppo.entropy_coef(run.update_step, cfg.entropy_coef, run.total_updates)
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
            if run.best_ways:  # self-imitation: raise the best ways' commands
                sil_loss = self_imitation_loss(run)
                loss = loss + cfg.self_imitation.coef * sil_loss
                stats.setdefault("self_imitation/loss", []).append(sil_loss.item())
            run.optimizer.zero_grad()
            loss.backward()
            replicas.average_gradients(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            run.optimizer.step()
            run.update_step += 1
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
            stats.setdefault("early_stop_epoch", []).append(epoch)
            break
    stats = {k: replicas.mean(sum(v) / len(v)) for k, v in stats.items()}
    return stats, run.update_step - first_update


def self_imitation_loss(run: PpoRun) -> torch.Tensor:
    """The mean negative log-prob, under the policy now, of cfg.self_imitation.batch turns
    drawn from the best ways (zorkppo.self_imitation)."""
    turns = run.best_ways.draw(run.cfg.self_imitation.batch, run.rng)
    with recompute_layer_activations(run.policy.model, run.cfg.gradient_checkpointing):
        return -run.mode.rescore(run.policy, turns)["logprob"].mean()


def rollout_kl(samples: list[list[Sample]], mode: ActionMode) -> tuple[float, int]:
    """The rollout's summed KL to the reference and its count in the loss's unit
    (`mode.kl_units`): command tokens when generating (the loss's KL is per token), turns
    when ranking. Their ratio is the mean the KL controller reads."""
    flat = [s for row in samples for s in row if not s.explored]
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


def train_iteration(run: PpoRun, episodes: Episodes) -> tuple[dict, list[dict], list[int]]:
    """One PPO iteration, steps 1-5. Returns (metrics, turn records with advantages, final
    scores of this replica's episodes that ended).

    With several replicas, the metrics and the rows cover every replica's games (rows in
    rank order), and are the same on every replica."""
    cfg, policy, replicas = run.cfg, run.policy, run.replicas
    policy.model.eval()  # dropout off: rollout and update must score actions identically
    # 1. Rollout: every game plays rollout_turns turns; one batched policy call per turn.
    started = time.perf_counter()
    samples, records, finished = play_turns(run, episodes)
    seconds = time.perf_counter() - started
    # 2. Advantages: GAE per game, bootstrapped from the value of where each game stands now
    #    (or, ppo.baseline state, each return against the other games' returns from the
    #    same game state).
    last_values = policy.values(policy.encode_prompts(episodes.prompts(policy.tokenizer)))
    advantages, returns = advantages_per_game(
        records, samples, last_values.cpu(), cfg.gamma, cfg.gae_lambda
    )
    if cfg.baseline == "state":  # against the other games' turns in the same game state
        advantages = same_state_over_replicas(records, advantages, returns, replicas)
    # 3. Update: clipped PPO epochs over shuffled minibatches, early stop past target_kl.
    update_started = time.perf_counter()
    update_stats, updates = ppo_update(run, samples, advantages, returns)
    update_seconds = time.perf_counter() - update_started
    # 4. Adaptive KL coefficient from this rollout's measured KL to the reference (all games).
    kl_sum, kl_units = replicas.sum(list(rollout_kl(samples, run.mode)))
    local = (
        turn_rows(records, samples, advantages, returns),
        [e.state.score for e in episodes.current],
        finished,
    )
    everyone = replicas.gather(local)
    # turn by turn, and within a turn the games in order: replica 0's, then replica 1's, ...
    rows = [row for t in range(len(records)) for turns, _, _ in everyone for row in turns[t]]
    metrics = iteration_metrics(
        rows,
        update_stats,
        [score for _, scores, _ in everyone for score in scores],
        [score for _, _, finished in everyone for score in finished],
        run.controller.coef,
        kl_sum / max(1, kl_units),
        seconds,
    )
    metrics["update_samples_per_s"] = updates * cfg.minibatch_size / update_seconds  # wall
    if run.best_ways is not None:  # the best way kept (mean over replicas)
        best = run.best_ways.ways[0] if run.best_ways else None
        metrics["self_imitation/best_score"] = replicas.mean(best.score if best else 0.0)
        metrics["self_imitation/best_turns"] = replicas.mean(len(best.samples) if best else 0.0)
    if run.archive is not None:  # cells archived (mean over replicas)
        metrics["archive/cells"] = replicas.mean(len(run.archive))
    run.controller.update(metrics["kl_rollout"])
    # 5. Turn-level records for the rollouts table: returned with the metrics.
    return metrics, rows, finished
