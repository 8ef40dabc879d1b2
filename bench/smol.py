"""SmolLM2-135M-Instruct (`model.profile: smol`) on this machine: a PPO rollout turn per action
mode, evaluation's turn, the PPO update and peak memory, for the float32 and the 8-bit model;
and what the rollout's speed-ups bought, each against the code path it replaced, in one run.

    python -m bench.smol                          # 8 games, 3 turns a measurement, fp32 and int8
    python -m bench.smol --games 8,20 --turns 2 --variants int8
    python -m bench.smol --device cuda --games 8,32 --out reports/bench/smol_gpu.json

The model is converted from the wheel's GGUF file once (into --model-dir) as the `base` stage
converts it, and loaded as the pipeline loads it (8-bit: bitsandbytes LLM.int8, as `quantize`
writes it), with a fresh LoRA and value head at the settings of
experiments/smol-no-walkthrough.yaml. Prompts are rendered with the chat template from real
Zork I states (walkthrough and random play, with their valid actions); no game is stepped, so
the numbers are the policy's alone. Each variant runs in a process of its own (its peak
memory is its own).

Rows (N games, one batched call per turn):
  act <mode>                     a PPO rollout turn: sample, keep the sampler's distributions,
                                 score the reference
  act constrained, rescored      the same, the policy's forward run again after sampling (the
                                 code before 2026-12-05): `speedup` is what keeping them bought
  act constrained, one batch     every game in every forward (max_batch_tokens 0)
  choose constrained             evaluation's turn: sample only
  prefill                        the prompts' values alone: one forward over each prompt, the
                                 least any turn can cost; `prefills` on the act and choose rows
                                 is each one's time in prefills (the act also scores the
                                 reference model: a second prefill)
  update                         ppo_update on the constrained act's samples (samples/s counts
                                 each sample once per epoch)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, peak_rss_mb, rom_path, table, write_report

EXPERIMENT = ROOT / "experiments" / "smol-no-walkthrough.yaml"


def settings(params_path: str):
    """params.yaml with the smol experiment's overrides, as `dvc exp run` would apply them."""
    from zorkppo.experiment import load_experiment

    return load_experiment(EXPERIMENT, params_path).params


def convert(model_dir: Path) -> Path:
    """models/base as the base stage writes it for profile smol (once per --model-dir)."""
    from zorkppo.config import WHEEL_PROFILES
    from zorkppo.model import convert_gguf, wheel_file

    base = model_dir / "base"
    if not (base / "model.safetensors").is_file():
        tokenizer, model = convert_gguf(wheel_file(WHEEL_PROFILES["smol"], "smol"))
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
    return base


def rescored_act(policy, mode, prompts, valid, generator):
    """The constrained act as it was before 2026-12-05: sample, then a full forward of the
    policy over prompt and command (and the reference's), instead of keeping the sampler's."""
    import torch

    def run(group):
        prompt_ids, tries = (list(c) for c in zip(*group, strict=True))
        actions = [d.tokens for d in mode._sample(policy, prompt_ids, generator, tries)]
        positions = [t.positions(a) for a, t in zip(actions, tries, strict=True)]
        allowed, steps = zip(*positions, strict=True)
        for reference in (False, True):
            mode._masked(policy, prompt_ids, actions, allowed, steps, reference=reference)
        return [None] * len(group)

    with torch.no_grad():
        mode._in_buckets(policy, run, prompts, valid)


def child(args) -> None:
    """One variant in this process: every row, as one JSON line on stdout."""
    import random

    import torch

    from bench.tiny import record_game_text
    from zorkppo.model import load_causal_lm, load_tokenizer
    from zorkppo.modes import action_mode
    from zorkppo.policy import policy_with_fresh_adapter
    from zorkppo.quantize import quantization_config
    from zorkppo.trainer import PpoRun, ppo_update

    params = settings(args.params)
    base = Path(args.model_dir) / "base"
    tokenizer = load_tokenizer(base)
    text = record_game_text(
        rom_path(args.rom), 24, 16, params.prompt.history_turns, 0, True, tokenizer
    )
    quantization = quantization_config(8) if args.child == "int8" else None
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = load_causal_lm(base, device, "float32", quantization)
    policy = policy_with_fresh_adapter(
        model, tokenizer, params.ppo, params.prompt.max_prompt_tokens
    )
    policy.model.eval()
    rows = []

    def timed(name, n, call, repeat=args.turns) -> list:
        results, started = [], time.perf_counter()
        for t in range(repeat):
            picks = [(t * n + i * 7) % len(text.prompts) for i in range(n)]
            results.append(call([text.prompts[i] for i in picks], [text.valid[i] for i in picks]))
        sync()
        seconds = time.perf_counter() - started
        rows.append({"variant": args.child, "row": name, "N": n, "turns": n * repeat,
                     "seconds": seconds, "turns_per_s": n * repeat / seconds})  # fmt: skip
        return results

    def sync():  # CUDA runs asynchronously: a timer stops when its work is done
        if device.type == "cuda":
            torch.cuda.synchronize()

    generator, rng = torch.Generator().manual_seed(0), random.Random(0)
    constrained = action_mode("constrained")
    for n in args.sizes:
        for name in ("generate", "rank", "constrained"):
            mode = action_mode(name, params.ppo.max_candidates)
            acted = timed(
                f"act {name}", n, lambda p, v, m=mode: m.act(policy, p, v, generator, rng)
            )
        timed("act constrained, rescored", n,
              lambda p, v: rescored_act(policy, constrained, p, v, generator))  # fmt: skip
        budget, policy.max_batch_tokens = policy.max_batch_tokens, 0
        timed("act constrained, one batch", n,
              lambda p, v: constrained.act(policy, p, v, generator, rng))  # fmt: skip
        policy.max_batch_tokens = budget
        timed("choose constrained", n,
              lambda p, v: constrained.choose(policy, p, v, generator, rng))  # fmt: skip
        with torch.no_grad():
            timed("prefill", n, lambda p, v: policy.values(policy.encode_prompts(p)))
    samples = acted  # the last size's constrained act: [turns][N]
    run = PpoRun.start(params.ppo.model_copy(update={"target_kl": 1e9}), policy, seed=0)
    shape = (len(samples), len(samples[0]))
    advantages = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    started = time.perf_counter()
    _, updates = ppo_update(run, samples, advantages, advantages.clone())
    sync()
    seconds = time.perf_counter() - started
    processed = updates * params.ppo.minibatch_size
    rows.append({"variant": args.child, "row": "update", "N": params.ppo.minibatch_size,
                 "samples": processed, "seconds": seconds, "samples_per_s": processed / seconds})  # fmt: skip
    prompt_tokens = [len(p) for p in policy.encode_prompts(text.prompts)]
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(json.dumps({"rows": rows, "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu_peak,
                      "prompt_tokens": [min(prompt_tokens), max(prompt_tokens),
                                        sum(prompt_tokens) / len(prompt_tokens)]}))  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rom", default=None)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--games", default="8", help="numbers of games N, comma-separated")
    parser.add_argument("--turns", type=int, default=3, help="turns per measurement")
    parser.add_argument("--variants", default="fp32,int8")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model-dir", default=None, help="converted model (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default=None, help="report name (default smol, smol_<device>)")
    args = parser.parse_args(argv)
    args.sizes = [int(n) for n in args.games.split(",")]
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(args.model_dir or scratch)
        started = time.perf_counter()
        convert(model_dir)
        convert_s = time.perf_counter() - started
        results = {"convert_s": convert_s, "rows": [], "variants": {}}
        for variant in args.variants.split(","):
            command = [sys.executable, "-m", "bench.smol", "--child", variant,
                       "--model-dir", str(model_dir), "--games", args.games,
                       "--turns", str(args.turns), "--params", args.params,
                       "--device", args.device]  # fmt: skip
            if args.rom:
                command += ["--rom", args.rom]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            results["rows"] += report.pop("rows")
            results["variants"][variant] = report
    by_key = {(r["variant"], r["row"], r["N"]): r for r in results["rows"]}
    for r in results["rows"]:  # each change against the path it replaced, same variant and N
        before = {"act constrained": "act constrained, rescored"}.get(r["row"])
        baseline = by_key.get((r["variant"], before, r["N"])) if before else None
        r["speedup"] = r["turns_per_s"] / baseline["turns_per_s"] if baseline else None
        if r["row"] == "act constrained, one batch":  # what grouping by length buys
            grouped = by_key[(r["variant"], "act constrained", r["N"])]
            r["speedup"] = grouped["turns_per_s"] / r["turns_per_s"]
        prefill = by_key.get((r["variant"], "prefill", r["N"]))
        if prefill and r["row"].startswith(("act", "choose")):
            r["prefills"] = prefill["turns_per_s"] / r["turns_per_s"]
    columns = ["variant", "row", "N", "turns", "seconds", "turns_per_s", "samples_per_s",
               "speedup", "prefills"]  # fmt: skip
    text = table(
        results["rows"], columns, title=f"SmolLM2-135M-Instruct on this machine, {args.device}"
    )
    name = args.name or ("smol" if args.device == "cpu" else f"smol_{args.device}")
    write_report(name, {**results, "table": text}, args, args.out)


if __name__ == "__main__":
    main()
