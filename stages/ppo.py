"""Stage `ppo`: PPO fine-tuning of the quantized model (fresh LoRA + value head) on live Zork I."""

from __future__ import annotations

import math
import random
import resource
import time
from contextlib import nullcontext

import torch
from dvclive import Live

from zorkppo import checkpoint, curve, paths
from zorkppo.config import params_from_cli
from zorkppo.envs import VecGames, zork_factory
from zorkppo.errors import exit_on_user_error
from zorkppo.model import load_causal_lm, load_tokenizer, resolve_device, seed_everything
from zorkppo.policy import Policy, policy_with_fresh_adapter
from zorkppo.ppo import AdaptiveKLController
from zorkppo.records import ROLLOUTS, write_table
from zorkppo.rom import installed_rom
from zorkppo.trainer import start_rollout, train_iteration


def build_policy(params, device) -> Policy:
    tokenizer = load_tokenizer(paths.QUANTIZED_MODEL)
    model = load_causal_lm(paths.QUANTIZED_MODEL, device, params.model.dtype)
    return policy_with_fresh_adapter(model, tokenizer, params.ppo, params.prompt.max_prompt_tokens)


def log_metrics(live: Live, metrics: dict) -> None:
    for name, value in sorted(metrics.items()):
        live.log_metric(name, value, timestamp=False)
    live.next_step()


def log_timing(iteration: int, steps_per_s: float, fresh: bool) -> None:
    """Game turns per second, per iteration, in a log that DVC does not track (see dvc.yaml plots)."""
    paths.PPO_TIMING.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.PPO_TIMING, "w" if fresh else "a") as f:
        f.write("step\tenv_steps_per_s\n" if fresh else "")
        f.write(f"{iteration}\t{steps_per_s:.3f}\n")


def learning_curve_point(policy, eval_games, params, iteration: int, episode_scores) -> dict:
    started = time.perf_counter()
    point = curve.curve_point(
        policy,
        eval_games,
        params.ppo,
        params.prompt.history_turns,
        params.seed,
        iteration,
        episode_scores,
    )
    print(
        f"ppo: curve at {point['env_steps']} turns: greedy {point['greedy_score']:.0f}, sampled "
        f"{point['sampled_score_mean']:.1f} ± {point['sampled_score_std']:.1f} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return point


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    params = params_from_cli(__doc__, argv)
    cfg = params.ppo
    device = resolve_device(params.model.device)
    rom = installed_rom(paths.ROM)
    seed_everything(params.seed)
    policy = build_policy(params, device)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    controller = AdaptiveKLController(
        cfg.kl.init_coef, cfg.kl.low, cfg.kl.high, cfg.kl.up, cfg.kl.down
    )
    generator, rng = torch.Generator().manual_seed(params.seed), random.Random(params.seed)
    samples_per_iteration = cfg.num_envs * cfg.rollout_turns
    total_updates = (
        cfg.iterations * cfg.ppo_epochs * math.ceil(samples_per_iteration / cfg.minibatch_size)
    )
    fingerprint = checkpoint.fingerprint(
        {
            "ppo": cfg.model_dump(),
            "prompt": params.prompt.model_dump(),
            "seed": params.seed,
            "game_seed": params.game.seed,
        },
        paths.QUANTIZED_MODEL,
    )

    make_game = zork_factory(str(rom), params.game.seed)
    # the learning curve plays in games of its own, so training games are never disturbed
    curve_games = VecGames(make_game, cfg.curve.episodes) if cfg.curve.every else nullcontext()
    with VecGames(make_game, cfg.num_envs) as games, curve_games as eval_games:
        # 1. Resume from an unfinished run with the same fingerprint, or start clean.
        state = checkpoint.load_resumable(paths.PPO_MODEL, fingerprint)
        if state:
            checkpoint.restore_weights(policy, state)
            optimizer.load_state_dict(state["optimizer"])
            controller.load_state_dict(state["controller"])
            generator.set_state(state["generator"])
            rng.setstate(state["rng"])
            rollout = state["rollout"]
            games.call("restore", [(s,) for s in state["game_saves"]])
            start, update_step, history = state["iteration"], state["update_step"], state["history"]
            points, episode_scores = state["curve"], state["curve_episode_scores"]
            print(f"ppo: resuming at iteration {start} of {cfg.iterations}")
        else:
            checkpoint.clear(paths.PPO_MODEL, paths.ROLLOUTS)
            rollout = start_rollout(games, params.prompt.history_turns)
            start, update_step, history = 0, 0, []
            points, episode_scores = [], []

        live = Live(str(paths.PPO_REPORTS), save_dvc_exp=False, dvcyaml=None, report=None)
        for past in history:  # the curves are rebuilt, so a resumed run has no gaps or repeats
            log_metrics(live, past)

        # 2. Iterate: rollout, advantages, update, KL control (trainer.train_iteration).
        if start == 0 and curve.due(0, cfg.curve.every, cfg.iterations):
            points.append(learning_curve_point(policy, eval_games, params, 0, []))  # the start
        for iteration in range(start, cfg.iterations):
            started = time.perf_counter()
            metrics, rows, updates = train_iteration(
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
            )
            update_step += updates
            write_table(
                [{"iteration": iteration, **r} for r in rows],
                paths.ROLLOUTS / f"iteration_{iteration:04d}.parquet",
                ROLLOUTS,
            )
            # Wall-clock numbers stay out of DVC-tracked outputs, which must be bit-identical.
            steps_per_s = metrics.pop("env_steps_per_s")
            log_timing(iteration, steps_per_s, fresh=iteration == 0)
            history.append(metrics)
            log_metrics(live, metrics)
            print(
                f"ppo: iteration {iteration + 1}/{cfg.iterations} score {metrics['score/current']:.1f} "
                f"reward {metrics['reward/mean']:.3f} kl {metrics['kl_rollout']:.4f} "
                f"invalid {metrics['invalid_command_rate']:.0%} ({time.perf_counter() - started:.1f} s, "
                f"{steps_per_s:.1f} turns/s)"
            )

            # The learning curve: evaluation episodes every few iterations, in games of its own.
            episode_scores += rollout.finished_scores
            if curve.due(iteration + 1, cfg.curve.every, cfg.iterations):
                points.append(
                    learning_curve_point(policy, eval_games, params, iteration + 1, episode_scores)
                )
                episode_scores = []

            # 3. Checkpoint: weights, optimizer, controller, RNGs, games, history.
            last = iteration + 1 == cfg.iterations
            if last or (iteration + 1) % cfg.save_every == 0:
                checkpoint.save(
                    paths.PPO_MODEL,
                    policy,
                    {
                        "fingerprint": fingerprint,
                        "complete": last,
                        "iteration": iteration + 1,
                        "update_step": update_step,
                        "history": history,
                        "optimizer": optimizer.state_dict(),
                        "controller": controller.state_dict(),
                        "generator": generator.get_state(),
                        "rng": rng.getstate(),
                        "rollout": rollout,
                        "game_saves": games.call("save"),
                        "curve": points,
                        "curve_episode_scores": episode_scores,
                    },
                )
        live.end()
        curve.write_curve(points, paths.PPO_CURVE)
        if points:
            curve.plot_curve(points, paths.PPO_CURVE_PNG, f"PPO on Zork I, {cfg.action_mode} mode")
        else:
            paths.PPO_CURVE_PNG.unlink(missing_ok=True)
        worker_mb = games.peak_rss_mb()
    print(
        f"ppo: peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
        f"(trainer), {worker_mb:.0f} MB (largest game worker)"
    )


if __name__ == "__main__":
    main()
