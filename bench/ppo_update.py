"""`trainer.ppo_update` throughput and memory for the tiny model, fp32 versus 8-bit.

    python -m bench.ppo_update                       # fp32 and int8, one PPO iteration's samples
    python -m bench.ppo_update --variants fp32,int8,nf4 --samples 128

The tiny Llama (model.tiny sizes, tokenizer trained on real game text) is built once and
saved; each variant then runs in its own process (so ru_maxrss is that variant's peak) and
loads it as stages.ppo does: fp32 as is, int8 with BitsAndBytesConfig(load_in_8bit=True)
(`zorkppo.quantize.quantization_config`) + prepare_model_for_kbit_training, then LoRA
(ppo.lora) and a ValueHead. Samples come from batched Policy.act_generate on recorded
Zork I prompts (ppo.num_envs prompts per call); advantages and returns are seeded random
numbers (throughput does not depend on them). target_kl is lifted so every epoch runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, current_rss_mb, peak_rss_mb, rom_path, table, write_report


def child(args) -> None:
    """One variant: load, act_generate the samples, time ppo_update; print a JSON line."""
    import torch

    from bench.tiny import load_settings
    from zorkppo.model import load_causal_lm, load_tokenizer
    from zorkppo.modes import GenerateMode
    from zorkppo.policy import policy_with_fresh_adapter
    from zorkppo.quantize import quantization_config
    from zorkppo.trainer import PpoRun, ppo_update

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    params = load_settings(args.params)
    cfg = params.ppo.model_copy(update={"target_kl": 1e9, "action_mode": "generate"})
    model_dir = Path(args.model_dir)
    prompts = json.loads((model_dir / "prompts.json").read_text())
    rss_start = current_rss_mb()

    started = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    bits = {"fp32": None, "int8": 8, "nf4": 4}[args.child]
    device = torch.device("cpu")
    model = load_causal_lm(
        model_dir,
        device,
        "float32",
        quantization_config(bits, params.quantize.llm_int8_threshold) if bits else None,
    )
    policy = policy_with_fresh_adapter(model, tokenizer, cfg, params.prompt.max_prompt_tokens)
    model = policy.model
    load_s = time.perf_counter() - started
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    model.eval()  # as train_iteration: dropout off for rollout and update

    # samples: [turns][games], one batched act_generate per turn, as the trainer collects them
    generator = torch.Generator().manual_seed(args.seed)
    games = cfg.num_envs
    turns = max(1, args.samples // games)
    started = time.perf_counter()
    samples = []
    for t in range(turns):
        batch = [prompts[(t * games + i * 5) % len(prompts)] for i in range(games)]
        samples.append(GenerateMode().act(policy, batch, None, generator, None))
    rollout_s = time.perf_counter() - started
    n = turns * games
    g = torch.Generator().manual_seed(args.seed)
    advantages, returns = (
        torch.randn(turns, games, generator=g),
        torch.randn(turns, games, generator=g),
    )
    run = PpoRun.start(cfg, policy, args.seed)
    rss_before = current_rss_mb()
    peak_before = peak_rss_mb()

    times, stats = [], {}
    for _ in range(args.iterations):
        started = time.perf_counter()
        stats, updates = ppo_update(run, samples, advantages, returns)
        times.append(time.perf_counter() - started)
    best = min(times)
    processed = n * cfg.ppo_epochs
    result = {
        "variant": args.child,
        "samples": n,
        "epochs": cfg.ppo_epochs,
        "minibatch": cfg.minibatch_size,
        "updates": updates,
        "update_s": best,
        "update_s_all": times,
        "samples_per_s": processed / best,
        "ms_per_update": 1000 * best / updates,
        "rollout_s": rollout_s,
        "gen_tokens": sum(len(s.options[0]) for row in samples for s in row),
        "load_s": load_s,
        "model_mb": model_bytes / 2**20,
        "trainable": sum(p.numel() for p in policy.trainable_parameters()),
        "rss_start_mb": rss_start,
        "rss_before_update_mb": rss_before,
        "peak_rss_before_update_mb": peak_before,
        "peak_rss_mb": peak_rss_mb(),
        "finite_loss": all(v == v for v in stats.values()),  # NaN check
        "linear_kinds": _linear_kinds(model),
        "torch_threads": torch.get_num_threads(),
    }
    result["update_peak_increase_mb"] = result["peak_rss_mb"] - peak_before
    print("RESULT " + json.dumps(result))


def _linear_kinds(model) -> dict:
    try:
        from zorkppo.quantize import quantized_linear_count

        return quantized_linear_count(model)
    except Exception:  # noqa: BLE001 - bitsandbytes missing: only plain layers
        return {}


def prepare(args, workdir: Path) -> dict:
    """Record real-game prompts, build and save the tiny model + tokenizer once."""
    from bench.tiny import build_tiny_model, load_settings, record_game_text

    params = load_settings(args.params)
    text = record_game_text(
        rom_path(args.rom),
        args.walkthrough_steps,
        args.random_steps,
        params.prompt.history_turns,
        args.seed,
    )
    tokenizer, model, pretrain_s = build_tiny_model(
        params, text.transcripts + text.prompts, args.pretrain_steps, args.seed
    )
    model.save_pretrained(workdir, safe_serialization=True)
    tokenizer.save_pretrained(workdir)
    (workdir / "prompts.json").write_text(json.dumps(text.prompts))
    return {
        "vocab": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain_steps": args.pretrain_steps,
        "recorded_states": text.states,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rom", default=None)
    parser.add_argument("--params", default="params.yaml", help="model.tiny sizes and ppo settings")
    parser.add_argument("--variants", default="fp32,int8", help="fp32, int8, nf4")
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="samples per update (default ppo.num_envs * ppo.rollout_turns)",
    )
    parser.add_argument(
        "--iterations", type=int, default=2, help="ppo_update calls per variant (best is reported)"
    )
    parser.add_argument("--walkthrough-steps", type=int, default=60)
    parser.add_argument("--random-steps", type=int, default=30)
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="tiny LM pretraining steps (0: random weights)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: steadier when other work shares the 2 cores; 0: torch default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", choices=["fp32", "int8", "nf4"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    from bench.tiny import load_settings

    params = load_settings(args.params)
    if args.samples is None:
        args.samples = params.ppo.num_envs * params.ppo.rollout_turns
    load_at_start = list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        workdir = Path(tmp)
        model_info = prepare(args, workdir)
        print(f"tiny model: {model_info}")
        for variant in args.variants.split(","):
            command = [
                sys.executable, "-m", "bench.ppo_update", "--child", variant, "--model-dir", str(workdir),
                "--params", args.params, "--samples", str(args.samples), "--iterations", str(args.iterations),
                "--seed", str(args.seed),
            ]  # fmt: skip
            if args.threads:
                command += ["--threads", str(args.threads)]
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                rows.append(
                    {"variant": variant, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
                )
                continue
            rows.append(json.loads(lines[-1][len("RESULT ") :]))
            print(f"  {variant}: {rows[-1]['samples_per_s']:.1f} samples/s", flush=True)
    table(
        rows,
        ["variant", "samples", "epochs", "updates", "update_s", "samples_per_s", "ms_per_update", "rollout_s",
         "model_mb", "rss_before_update_mb", "peak_rss_mb", "update_peak_increase_mb", "finite_loss", "error"],
        "ppo_update on one iteration's samples (samples/s counts each sample once per epoch)",
    )  # fmt: skip
    write_report(
        "ppo_update",
        {"model": model_info, "rows": rows, "load_average_at_start": load_at_start},
        args,
        args.out,
    )


if __name__ == "__main__":
    main()
