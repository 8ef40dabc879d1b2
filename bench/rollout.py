"""Policy throughput in rollouts: one batched act per turn for all N games versus one call per
game (the seed's approach), and the three action modes (zorkppo.modes), with the tiny LoRA
Llama + value head.

    python -m bench.rollout                    # N = 1, 4, 16; prompts from real game states
    python -m bench.rollout --games            # also step real Zork I games (VecGames workers)
    python -m bench.rollout --sizes 8,16 --report rollout_modes \
        --methods "batched act_generate,batched act_rank,batched act_constrained"   # the modes

Valid actions (rank, constrained) are looked up before the clock starts in the default mode
and inside the game time with `--games`.

Default mode "prompts": every game's prompt each turn is `render_prompt` of a recorded real
Zork I state (walkthrough + random play, with the trainer's 3-turn history), rotated so the
N prompts of a turn differ in length; no game is stepped, so the numbers are the policy's
alone. `--games` steps N live games (one worker process each, as stages.ppo does) and
renders prompts from their states, so game time is included.

Rows:
  batched act_generate      one GenerateMode.act(N prompts) per turn (stages.ppo): forwards
                            over games grouped by length within ppo.max_batch_tokens
  one-batch act_generate    the same with max_batch_tokens 0: all N games in every forward
  per-game act_generate     N calls of act([prompt]) per turn
  batched act_rank          rank mode's act (N prompts): one forward row per candidate, at
                            most ppo.max_candidates valid actions per game
  batched act_constrained   constrained mode's act (N prompts): generation masked to a trie of
                            each state's valid actions (all of them), run until every command ends
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch

from bench.common import peak_rss_mb, rom_path, table, write_report
from bench.tiny import build_tiny_model, load_settings, make_policy, record_game_text

METHODS = (
    "batched act_generate",
    "one-batch act_generate",
    "per-game act_generate",
    "batched act_rank",
    "batched act_constrained",
)


def _act(
    policy, method: str, prompts: list[str], valid: list[list[str]], draw: tuple
) -> tuple[list[str], int | None]:
    """Commands for these prompts, and the number of command tokens (None if unknown).
    draw: (torch generator, random.Random for rank's candidate draw, ppo.max_candidates)."""
    from zorkppo.modes import action_mode

    generator, rng, max_candidates = draw
    layout, _, mode = method.partition(" act_")
    if mode:
        act = action_mode(mode, max_candidates)
        budget = policy.max_batch_tokens
        if layout == "one-batch":
            policy.max_batch_tokens = 0
        try:
            if layout == "per-game":
                samples = [
                    act.act(policy, [p], [v], generator, rng)[0]
                    for p, v in zip(prompts, valid, strict=True)
                ]
            else:
                samples = act.act(policy, prompts, valid, generator, rng)
        finally:
            policy.max_batch_tokens = budget
        tokens = sum(len(s.options[s.chosen]) for s in samples)
        return [s.command for s in samples], tokens
    raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")


def run_prompts(policy, text, n: int, turns: int, method: str, seed: int, candidates: int) -> dict:
    draw = (torch.Generator().manual_seed(seed), random.Random(seed), candidates)
    tokens, known = 0, True
    started = time.perf_counter()
    for t in range(turns):
        picks = [(t * n + i * 7) % len(text.prompts) for i in range(n)]
        prompts, valid = [text.prompts[i] for i in picks], [text.valid[i] for i in picks]
        _, count = _act(policy, method, prompts, valid, draw)
        if count is None:
            known = False
        else:
            tokens += count
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": tokens if known else None, "game_seconds": 0.0}


def run_games(
    policy, rom: str, n: int, turns: int, method: str, seed: int, history_turns: int, candidates
) -> dict:
    from zorkppo.envs import VecGames, zork_factory
    from zorkppo.episodes import Episodes

    draw = (torch.Generator().manual_seed(seed), random.Random(seed), candidates)
    with VecGames(zork_factory(rom, 12), n) as games:
        episodes = Episodes(games, history_turns)
        episodes.start()
        tokens, known, game_seconds = 0, True, 0.0
        started = time.perf_counter()
        for _ in range(turns):
            prompts = episodes.prompts(policy.tokenizer)
            t0 = time.perf_counter()
            valid = episodes.valid_actions() if method.endswith(("rank", "constrained")) else None
            game_seconds += time.perf_counter() - t0
            commands, count = _act(policy, method, prompts, valid, draw)
            if count is None:
                known = False
            else:
                tokens += count
            t0 = time.perf_counter()
            steps = episodes.step([c or "look" for c in commands])
            episodes.start([s.game for s in steps if s.after.done])
            game_seconds += time.perf_counter() - t0
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": tokens if known else None, "game_seconds": game_seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rom", default=None)
    parser.add_argument("--params", default="params.yaml", help="model.tiny sizes and ppo settings")
    parser.add_argument("--sizes", default="1,4,16", help="numbers of games N")
    parser.add_argument("--turns", type=int, default=4, help="turns per game per measurement")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"subset of: {', '.join(METHODS)}"
    )
    parser.add_argument(
        "--games",
        action="store_true",
        help="step real games (VecGames) instead of recorded prompts",
    )
    parser.add_argument(
        "--walkthrough-steps", type=int, default=60, help="recorded walkthrough states"
    )
    parser.add_argument("--random-steps", type=int, default=30, help="recorded random-play states")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="tiny LM pretraining steps on the game text (default 0: random weights, every command "
        "runs to max_new_tokens; a pretrained-only model tends to stop at once, and each step costs ~2 s)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per row")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: steadier when other work shares the 2 cores; 0: torch default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where the tiny policy runs"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--report", default="rollout", help="report name: reports/bench/<report>.json"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())
    rom = rom_path(args.rom)
    params = load_settings(args.params)
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")

    needs_valid = any(m.endswith(("rank", "constrained")) for m in methods)
    text = record_game_text(
        rom,
        args.walkthrough_steps,
        args.random_steps,
        params.prompt.history_turns,
        args.seed,
        valid_actions=needs_valid and not args.games,
    )
    tokenizer, model, pretrain_s = build_tiny_model(
        params, text.transcripts + text.prompts, args.pretrain_steps, args.seed
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU")
    policy = make_policy(model.to(args.device), tokenizer, params)
    prompt_tokens = [len(ids) for ids in policy.encode_prompts(text.prompts)]
    print(
        f"tiny policy: vocab {len(tokenizer)}, {sum(p.numel() for p in model.parameters()):,} parameters "
        f"({sum(p.numel() for p in policy.trainable_parameters()):,} trainable), pretrained {args.pretrain_steps} "
        f"steps in {pretrain_s:.1f} s; {text.states} recorded states, prompt tokens "
        f"{min(prompt_tokens)}-{max(prompt_tokens)} (mean {sum(prompt_tokens) / len(prompt_tokens):.0f}, "
        f"cut at {policy.max_prompt_tokens}); max_new_tokens {policy.max_new_tokens}; max_batch_tokens {policy.max_batch_tokens}; torch threads "
        f"{torch.get_num_threads()}; mode {'games' if args.games else 'prompts'}; device {args.device}"
    )
    warm_up = (torch.Generator().manual_seed(0), random.Random(0), params.ppo.max_candidates)
    _act(policy, "batched act_generate", text.prompts[:2], None, warm_up)

    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        best: dict[str, dict] = {}
        for _ in range(
            args.repeats
        ):  # methods interleaved, best of repeats: other load on the machine hurts less
            for method in methods:
                if args.games:
                    r = run_games(
                        policy,
                        rom,
                        n,
                        args.turns,
                        method,
                        args.seed,
                        params.prompt.history_turns,
                        params.ppo.max_candidates,
                    )
                else:
                    r = run_prompts(
                        policy, text, n, args.turns, method, args.seed, params.ppo.max_candidates
                    )
                if method not in best or r["seconds"] < best[method]["seconds"]:
                    best[method] = r
        for method in methods:
            r = best[method]
            turns = n * args.turns
            rows.append(
                {
                    "N": n,
                    "method": method,
                    "turns": turns,
                    "seconds": r["seconds"],
                    "turns_per_s": turns / r["seconds"],
                    "tokens": r["tokens"],
                    "tokens_per_turn": None if r["tokens"] is None else r["tokens"] / turns,
                    "tokens_per_s": None if r["tokens"] is None else r["tokens"] / r["seconds"],
                    "ms_per_turn": 1000 * r["seconds"] / turns,
                    "game_seconds": r["game_seconds"],
                }
            )
            print(f"  N={n:<3} {method:<22} {turns / r['seconds']:8.1f} turns/s", flush=True)
    print()
    by_key = {(r["N"], r["method"]): r for r in rows}
    for r in rows:
        base = by_key.get((r["N"], "per-game act_generate"))
        r["vs_per_game_act"] = r["turns_per_s"] / base["turns_per_s"] if base else None
    table(
        rows,
        [
            "N",
            "method",
            "turns",
            "seconds",
            "turns_per_s",
            "tokens_per_turn",
            "tokens_per_s",
            "ms_per_turn",
            "vs_per_game_act",
            "game_seconds",
        ],
        f"policy throughput ({'live games' if args.games else 'recorded real-game prompts, no game stepping'}; "
        "tokens = generated command tokens)",
    )
    largest = max(int(x) for x in args.sizes.split(","))
    target = None
    if ("batched act_generate" in methods) and ("per-game act_generate" in methods):
        speedup = (
            by_key[(largest, "batched act_generate")]["turns_per_s"]
            / by_key[(largest, "per-game act_generate")]["turns_per_s"]
        )
        target = {"N": largest, "speedup": speedup, "target": 5.0, "met": speedup >= 5.0}
        print(
            f"batched vs per-game act_generate at N={largest}: {speedup:.1f}x turns/s; target >= 5x: "
            f"{'MET' if target['met'] else 'NOT MET'}"
        )
    write_report(
        args.report,
        {
            "mode": "games" if args.games else "prompts",
            "model": {
                "vocab": len(tokenizer),
                "parameters": sum(p.numel() for p in model.parameters()),
                "trainable": sum(p.numel() for p in policy.trainable_parameters()),
                "pretrain_steps": args.pretrain_steps,
                "max_new_tokens": policy.max_new_tokens,
                "max_batch_tokens": policy.max_batch_tokens,
                "max_prompt_tokens": policy.max_prompt_tokens,
                "torch_threads": torch.get_num_threads(),
            },
            "prompt_tokens": {
                "min": min(prompt_tokens),
                "max": max(prompt_tokens),
                "mean": sum(prompt_tokens) / len(prompt_tokens),
            },
            "rows": rows,
            "target": target,
            "peak_rss_mb": peak_rss_mb(),
            "load_average_at_start": load_at_start,
        },
        args,
        args.out,
    )


if __name__ == "__main__":
    main()
