"""Stage `ppo`: PPO fine-tuning of the quantized model (fresh LoRA + value head) on live Zork I.

Run through `python -m zorkppo.launch stages.ppo`: with `processes` > 1 it starts that many
data-parallel replicas (torchrun); each plays its share of the games, rank 0 writes.
"""

from __future__ import annotations

import resource
import time
from contextlib import nullcontext

from dvclive import Live

from zorkppo import checkpoint, curve, paths
from zorkppo.config import params_from_cli
from zorkppo.distributed import close_replicas, init_replicas
from zorkppo.envs import VecGames, zork_factory
from zorkppo.errors import exit_on_user_error
from zorkppo.model import load_causal_lm, load_tokenizer, resolve_device, seed_everything
from zorkppo.policy import Policy, policy_with_fresh_adapter
from zorkppo.records import ROLLOUTS, write_table
from zorkppo.rom import installed_rom
from zorkppo.trainer import PpoRun, start_episodes, train_iteration


def build_policy(params, device) -> Policy:
    tokenizer = load_tokenizer(paths.QUANTIZED_MODEL)
    model = load_causal_lm(paths.QUANTIZED_MODEL, device, params.model.dtype)
    return policy_with_fresh_adapter(model, tokenizer, params.ppo, params.prompt.max_prompt_tokens)


def log_metrics(live: Live | None, metrics: dict) -> None:
    if live is None:  # not rank 0
        return
    for name, value in sorted(metrics.items()):
        live.log_metric(name, value, timestamp=False)
    live.next_step()


def log_timing(iteration: int, steps_per_s: float, samples_per_s: float, fresh: bool) -> None:
    """Game turns and update samples per second (every replica's), per iteration, in a log
    that DVC does not track (see dvc.yaml plots)."""
    paths.PPO_TIMING.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.PPO_TIMING, "w" if fresh else "a") as f:
        f.write("step\tenv_steps_per_s\tupdate_samples_per_s\n" if fresh else "")
        f.write(f"{iteration}\t{steps_per_s:.3f}\t{samples_per_s:.3f}\n")


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
    replicas, device = init_replicas(resolve_device(params.model.device))
    local_envs = replicas.split(cfg.num_envs, "ppo.num_envs")
    replicas.split(cfg.minibatch_size, "ppo.minibatch_size")
    rom = installed_rom(paths.ROM)
    seed_everything(params.seed)
    policy = build_policy(params, device)
    replicas.broadcast_parameters(policy.trainable_parameters())
    run = PpoRun.start(cfg, policy, params.seed, replicas)
    run_params = {
        "ppo": cfg.model_dump(),
        "prompt": params.prompt.model_dump(),
        "seed": params.seed,
        "game_seed": params.game.seed,
    }
    if replicas.world > 1:  # a checkpoint resumes only with the replicas that wrote it
        run_params["replicas"] = replicas.world
    fingerprint = checkpoint.fingerprint(run_params, paths.QUANTIZED_MODEL)

    # Game i (over every replica's) plays ppo.game_seeds[i], cycled; by default game.seed.
    seeds = cfg.game_seeds or [params.game.seed]
    first = replicas.rank * local_envs
    training = [zork_factory(str(rom), seeds[(first + i) % len(seeds)]) for i in range(local_envs)]
    # the learning curve plays the protocol's game, in games of its own
    curve_on = cfg.curve.every and replicas.main  # rank 0 plays the curve, the rest wait
    make_curve_game = zork_factory(str(rom), params.game.seed)
    curve_games = VecGames(make_curve_game, cfg.curve.episodes) if curve_on else nullcontext()
    with VecGames(training, local_envs) as games, curve_games as eval_games:
        # 1. Resume from an unfinished run with the same fingerprint, or start clean.
        loaded = checkpoint.load_resumable(paths.PPO_MODEL, fingerprint) if replicas.main else None
        state = replicas.broadcast(loaded)
        episodes = start_episodes(games, params.prompt.history_turns, replicas)
        if state:
            own = state["replicas"][replicas.rank] if replicas.world > 1 else state
            checkpoint.restore_weights(policy, state)
            run.load_state_dict(state["run"])
            run.load_streams(own["streams"])
            episodes.load_state_dict(own["episodes"])
            games.call("restore", [(s,) for s in own["game_saves"]])
            start, history = state["iteration"], state["history"]
            points, episode_scores = state["curve"], state["curve_episode_scores"]
            if replicas.main:
                print(f"ppo: resuming at iteration {start} of {cfg.iterations}")
        else:
            if replicas.main:
                checkpoint.clear(paths.PPO_MODEL, paths.ROLLOUTS)
            start, history = 0, []
            points, episode_scores = [], []

        live = (
            Live(str(paths.PPO_REPORTS), save_dvc_exp=False, dvcyaml=None, report=None)
            if replicas.main
            else None
        )
        for past in history:  # the curves are rebuilt, so a resumed run has no gaps or repeats
            log_metrics(live, past)

        # 2. Iterate: rollout, advantages, update, KL control (trainer.train_iteration).
        if curve_on and start == 0 and curve.due(0, cfg.curve.every, cfg.iterations):
            points.append(learning_curve_point(policy, eval_games, params, 0, []))  # the start
        for iteration in range(start, cfg.iterations):
            started = time.perf_counter()
            metrics, rows, finished = train_iteration(run, episodes)
            # Every replica's finished episodes count in the curve (a collective: all call it).
            finished = [score for scores in replicas.gather(finished) for score in scores]
            last = iteration + 1 == cfg.iterations
            save_now = last or (iteration + 1) % cfg.save_every == 0
            # Each replica's own streams and games, for an exact resume of every replica.
            streams = {
                "streams": run.streams(),
                "episodes": episodes.state_dict(),
                "game_saves": games.call("save") if save_now else None,
            }
            everyone = replicas.gather(streams) if save_now else None
            if not replicas.main:
                continue  # rank 0 writes; the others go on to the next rollout
            write_table(
                [{"iteration": iteration, **r} for r in rows],
                paths.ROLLOUTS / f"iteration_{iteration:04d}.parquet",
                ROLLOUTS,
            )
            # Wall-clock numbers stay out of DVC-tracked outputs, which must be bit-identical.
            steps_per_s = metrics.pop("env_steps_per_s")
            samples_per_s = metrics.pop("update_samples_per_s")
            log_timing(iteration, steps_per_s, samples_per_s, fresh=iteration == 0)
            history.append(metrics)
            log_metrics(live, metrics)
            print(
                f"ppo: iteration {iteration + 1}/{cfg.iterations} score {metrics['score/current']:.1f} "
                f"reward {metrics['reward/mean']:.3f} kl {metrics['kl_rollout']:.4f} "
                f"invalid {metrics['invalid_command_rate']:.0%} ({time.perf_counter() - started:.1f} s, "
                f"{steps_per_s:.1f} turns/s, update {samples_per_s:.1f} samples/s)"
            )

            # The learning curve: evaluation episodes every few iterations, in games of its own.
            episode_scores += finished
            if curve_on and curve.due(iteration + 1, cfg.curve.every, cfg.iterations):
                points.append(
                    learning_curve_point(policy, eval_games, params, iteration + 1, episode_scores)
                )
                episode_scores = []

            # 3. Checkpoint: weights, optimizer, controller, RNGs, games, history.
            if save_now:
                checkpoint.save(
                    paths.PPO_MODEL,
                    policy,
                    {
                        "fingerprint": fingerprint,
                        "complete": last,
                        "iteration": iteration + 1,
                        "history": history,
                        "run": run.state_dict(),
                        **(streams if replicas.world == 1 else {"replicas": everyone}),
                        "curve": points,
                        "curve_episode_scores": episode_scores,
                    },
                )
        # Replicas must end with the same weights: checked, not assumed.
        digest = replicas.check_identical(
            policy.trainable_parameters(), "LoRA and value-head weights"
        )
        if replicas.world > 1 and replicas.main:
            print(
                f"ppo: {replicas.world} replicas end with identical weights (sha256 {digest[:16]})"
            )
        worker_mb = max(replicas.gather(games.peak_rss_mb()))
        if not replicas.main:
            close_replicas(replicas)
            return
        live.end()
        curve.write_curve(points, paths.PPO_CURVE)
        title = f"PPO on Zork I, {cfg.action_mode} mode"
        curve.plot_curve(points, paths.PPO_CURVE_PNG, title if points else "ppo.curve is off")
    close_replicas(replicas)
    print(
        f"ppo: peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
        f"(trainer), {worker_mb:.0f} MB (largest game worker)"
    )


if __name__ == "__main__":
    main()
