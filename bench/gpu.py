"""One PPO iteration of a 7B-shaped Llama on one GPU: peak memory, generation speed, update time.

    python -m bench.gpu                      # needs CUDA: Llama-2-7B shapes, random weights
    python -m bench.gpu --variants int8      # only the 8-bit run
    python -m bench.gpu --checkpointing on   # only with ppo.gradient_checkpointing
    python -m bench.gpu --dry-run            # CPU smoke test: 2 small layers, same code path

The model has Llama-2-7B's dimensions (hidden 4096, 32 layers, 32 heads, intermediate
11008, vocab 32000) and RANDOM weights (std 0.02, RMSNorm weights 0.25): nothing is
downloaded. The norm weights keep activations under LLM.int8's outlier threshold (6), as in
trained models, whose outliers sit in a few feature columns: with norm weights 1, the
product silu(gate) * up reaches 6 in nearly every column of a 4096-token batch, LLM.int8
then keeps a dequantized copy of every down_proj weight, and the 8-bit run ran out of an
80 GB H100's memory during generation (2026-11-26). It is
built on the meta device (no memory), its random bf16 weights are written shard by shard
(each tensor made on the GPU, ~2 GB per safetensors shard, ~13.5 GB on disk) and then
loaded exactly as the pipeline loads `models/quantized`: `zorkppo.model.load_causal_lm`
with `BitsAndBytesConfig(load_in_8bit=True)` (quantized while loading, never whole in
bf16 on the GPU) + `prepare_model_for_kbit_training`, or in bf16 for comparison; then LoRA
r=8 on q_proj/v_proj and a ValueHead, as stages.ppo.build_policy does.

Per variant (int8, bf16), loaded once, after a warm-up call:
  1. generation alone: Policy.sample_tokens for G prompts x 8 new tokens -> tokens/s, batched
     (one call for the G games) and one call per game (the seed's approach);
  2. one PPO iteration per --checkpointing setting (off, on), peak GPU memory over it:
     Policy.act_generate on the G prompts of P tokens for T turns (8 games x 512 tokens x 2
     turns by default: 16 samples, one minibatch of params.yaml's 16), then
     trainer.ppo_update on those samples (params.yaml ppo settings, ppo.gradient_checkpointing
     as set; target_kl lifted so every epoch runs).
The tokenizer is the project's byte-level BPE trained to 32000 tokens on game text plus
synthetic words (a random model's ids all decode); prompts are real Zork I prompts when the
ROM is found (otherwise fixed game-like text), extended on the left to >= P tokens and cut
to P by Policy.encode_prompts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import table, write_report
from bench.random_llama import (
    build_tokenizer,
    game_prompts,
    llama_config,
    long_prompts,
    write_random_checkpoint,
)

LLAMA2_7B = {"hidden": 4096, "layers": 32, "heads": 32, "intermediate": 11008, "vocab": 32000}
DRY_RUN = {"hidden": 256, "layers": 2, "heads": 4, "intermediate": 704, "vocab": 2000}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="int8,bf16", help="int8 and/or bf16")
    parser.add_argument("--games", type=int, default=8, help="prompts per turn (one per game)")
    parser.add_argument(
        "--turns", type=int, default=2, help="turns per iteration: samples = games x turns"
    )
    parser.add_argument(
        "--checkpointing",
        default="off,on",
        help="gradient checkpointing settings to run the iteration with (off and/or on)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument(
        "--hidden", type=int, default=None, help="override model sizes (default Llama-2-7B)"
    )
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--intermediate", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument(
        "--norm-weight",
        type=float,
        default=0.25,
        help="RMSNorm weights of the random model (see the module docstring)",
    )
    parser.add_argument("--gen-repeats", type=int, default=3, help="generation timing: best of")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the random checkpoint is written (default a temp dir)",
    )
    parser.add_argument("--keep-checkpoint", action="store_true")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rom", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU smoke test: small model, 2 games x 64 tokens"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.variants = args.variants.split(",")
    args.checkpointing = [c == "on" for c in args.checkpointing.split(",")]
    sizes = DRY_RUN if args.dry_run else LLAMA2_7B
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dry_run:
        if args.games == 8:
            args.games = 2
        if args.prompt_tokens == 512:
            args.prompt_tokens = 64
        args.gen_repeats = min(args.gen_repeats, 1)
    return args


# -- one variant ------------------------------------------------------------------------
def run_variant(variant: str, checkpoint: Path, prompts: list[str], params, args, device) -> list:
    """Load once; time generation; then one PPO iteration per gradient-checkpointing setting."""
    import torch

    from zorkppo.model import load_causal_lm, load_tokenizer
    from zorkppo.modes import GenerateMode
    from zorkppo.policy import policy_with_fresh_adapter
    from zorkppo.quantize import quantization_config

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    tokenizer = load_tokenizer(checkpoint)
    quantization = None
    if variant.startswith("int8"):
        quantization = quantization_config(8, params.quantize.llm_int8_threshold)
    model = load_causal_lm(checkpoint, device, "bfloat16", quantization)
    cfg = params.ppo.model_copy(
        update={
            "target_kl": 1e9,  # every epoch runs: the iteration's full cost
            "max_new_tokens": args.new_tokens,
            "lora": params.ppo.lora.model_copy(
                update={"r": args.lora_r, "target_modules": ["q_proj", "v_proj"]}
            ),
        }
    )
    # int8 is the pipeline's recipe; int8-noupcast skips the fp32 upcast of k-bit preparation
    policy = policy_with_fresh_adapter(
        model, tokenizer, cfg, args.prompt_tokens, variant != "int8-noupcast"
    )
    policy.model.eval()  # as train_iteration
    sync()
    loaded = {
        "variant": variant,
        "load_s": time.perf_counter() - started,
        "weights_gib": _cuda_gib("memory_allocated"),
        "load_peak_gib": _cuda_gib("max_memory_allocated"),
        "trainable": sum(p.numel() for p in policy.trainable_parameters()),
    }
    print(f"  {variant}: loaded, {loaded['weights_gib']:.2f} GiB on the device", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    prompt_ids = policy.encode_prompts(prompts)
    assert all(len(p) == args.prompt_tokens for p in prompt_ids), [len(p) for p in prompt_ids]
    GenerateMode().act(
        policy, prompts[:1], None, generator, None
    )  # warm-up: kernels, cuBLAS workspaces
    sync()
    print(f"  {variant}: warmed up, peak {_peak_gib()} GiB", flush=True)

    # 1. generation alone (the sampling loop GenerateMode.act starts with), best of gen_repeats
    gen_s, tokens = min(
        _timed(sync, _sample_commands, policy, prompt_ids, generator)[::-1]
        for _ in range(args.gen_repeats)
    )
    gen_tokens = sum(map(len, tokens))
    # the seed's way: one sampling call per game, one after another
    per_game, per_game_s = _timed(sync, _one_call_per_game, policy, prompt_ids, generator)
    one_by_one = sum(map(len, per_game))
    loaded.update(
        gen_s=gen_s,
        gen_tokens_per_s=gen_tokens / gen_s,
        gen_per_game_tokens_per_s=one_by_one / per_game_s,
        gen_batched_speedup=(gen_tokens / gen_s) / (one_by_one / per_game_s),
    )
    print(f"  {variant}: generation timed, peak {_peak_gib()} GiB", flush=True)

    # 2. one PPO iteration per checkpointing setting: `turns` batched turns of the games, then
    #    ppo_epochs over minibatches of params' minibatch_size; peak GPU memory over all of it
    rows = []
    for checkpointing in args.checkpointing:
        row = dict(loaded, gradient_checkpointing=checkpointing)
        try:
            row.update(ppo_iteration(policy, prompts, cfg, checkpointing, params, args, sync))
        except torch.OutOfMemoryError as exc:
            row["error"] = f"OutOfMemoryError: {str(exc)[:160]}"
        rows.append(row)
        print(
            f"  {variant}: iteration, checkpointing {checkpointing}, peak {_peak_gib()} GiB",
            flush=True,
        )
        if cuda:
            torch.cuda.empty_cache()
    del policy, model
    if cuda:
        torch.cuda.empty_cache()
    return rows


def _sample_commands(policy, prompt_ids, generator) -> list[list[int]]:
    return [d.tokens for d in policy.sample_tokens(prompt_ids, generator)]


def _one_call_per_game(policy, prompt_ids, generator) -> list[list[int]]:
    return [_sample_commands(policy, [p], generator)[0] for p in prompt_ids]


def _timed(sync, fn, *args):
    """(fn(*args), seconds), the device synchronized on both sides."""
    sync()
    started = time.perf_counter()
    result = fn(*args)
    sync()
    return result, time.perf_counter() - started


def _cuda_gib(stat: str) -> float:
    """torch.cuda.<stat>() in GiB; 0 without CUDA (the dry run)."""
    import torch

    return getattr(torch.cuda, stat)() / 2**30 if torch.cuda.is_available() else 0.0


def _peak_gib() -> str:
    return f"{_cuda_gib('max_memory_allocated'):.2f} (now {_cuda_gib('memory_allocated'):.2f})"


def ppo_iteration(policy, prompts, cfg, checkpointing, params, args, sync) -> dict:
    import torch

    from zorkppo.modes import GenerateMode
    from zorkppo.trainer import PpoRun, ppo_update

    cuda = policy.device.type == "cuda"
    update = {"gradient_checkpointing": checkpointing, "action_mode": "generate"}
    cfg = cfg.model_copy(update=update)
    generator = torch.Generator().manual_seed(args.seed)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run = PpoRun.start(cfg, policy, 0)
    samples, act_s = _timed(
        sync,
        lambda: [
            GenerateMode().act(policy, prompts, None, generator, None) for _ in range(args.turns)
        ],
    )
    shape = (args.turns, len(prompts))
    advantages = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    returns = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed + 1))
    (stats, updates), update_s = _timed(sync, ppo_update, run, samples, advantages, returns)
    del run
    return {
        "samples": args.turns * len(prompts),
        "minibatch": cfg.minibatch_size,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": sum(len(s.options[0]) for row in samples for s in row)
        / (args.turns * len(prompts)),
        "act_generate_s": act_s,
        "update_s": update_s,
        "updates": updates,
        "iteration_s": act_s + update_s,
        "iteration_peak_gib": _cuda_gib("max_memory_allocated"),
        "iteration_reserved_gib": _cuda_gib("max_memory_reserved"),
        "finite_loss": all(v == v for v in stats.values()),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        sys.exit(
            "bench.gpu needs a CUDA GPU (torch.cuda.is_available() is False here, torch "
            f"{torch.__version__}); run it on a GPU machine, or `python -m bench.gpu --dry-run` for a CPU smoke test"
        )
    else:
        device = torch.device("cuda")
    from zorkppo.config import load_params

    params = load_params(args.params)
    texts, prompt_source = game_prompts(args)
    started = time.perf_counter()
    tokenizer = build_tokenizer(texts, args.vocab, args.seed)
    tokenizer_s = time.perf_counter() - started
    base_prompts = [t for t in texts if t.rstrip().endswith(">")] or texts
    prompts = long_prompts(base_prompts, texts, tokenizer, args.games, args.prompt_tokens)
    config = llama_config(args, tokenizer)
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, intermediate "
        f"{args.intermediate}, vocab {args.vocab} (tokenizer {len(tokenizer)}, trained in {tokenizer_s:.1f} s); "
        f"{args.games} games x {args.prompt_tokens} prompt tokens from {prompt_source}; device {device}",
        flush=True,
    )
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    checkpoint = workdir / "random-llama"
    rows, written = [], {}

    def report():  # after every variant, so a run cut short still leaves its numbers
        return write_report(
            "gpu_dry_run" if args.dry_run else "gpu",
            {
                "dry_run": args.dry_run,
                "prompt_source": prompt_source,
                "checkpoint": written,
                "gpu_total_gib": torch.cuda.get_device_properties(0).total_memory / 2**30
                if device.type == "cuda"
                else None,
                "rows": rows,
                "comparison": compare(rows),
            },
            args,
            args.out,
        )

    try:
        written = write_random_checkpoint(
            config, tokenizer, checkpoint, device, args.seed, args.norm_weight
        )
        print(
            f"random checkpoint: {written['bytes'] / 2**30:.2f} GiB bf16 in {written['shards']} shards, "
            f"{written['seconds']:.1f} s",
            flush=True,
        )
        for variant in args.variants:
            try:
                rows.extend(run_variant(variant, checkpoint, prompts, params, args, device))
            except Exception as exc:  # noqa: BLE001 - one variant failing still reports the rest
                traceback.print_exc()
                rows.append(
                    {"variant": variant, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                )
            print(f"  {variant}: done", flush=True)
            report()
    finally:
        if not args.keep_checkpoint:
            shutil.rmtree(checkpoint, ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    table(
        rows,
        ["variant", "gradient_checkpointing", "samples", "minibatch", "prompt_tokens", "weights_gib",
         "gen_tokens_per_s", "gen_batched_speedup", "act_generate_s", "update_s", "iteration_s", "iteration_peak_gib",
         "iteration_reserved_gib", "load_s", "finite_loss", "error"],
        f"one PPO iteration, {'DRY RUN (small model, CPU)' if args.dry_run else '7B-shaped Llama, random weights'}",
    )  # fmt: skip
    comparison = compare(rows)
    if comparison:
        print(
            f"int8 generation runs at {comparison['int8_over_bf16_gen_speed']:.2f}x the speed of bf16"
        )
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}")


def compare(rows: list[dict]) -> dict | None:
    by = {r["variant"]: r for r in rows if "gen_tokens_per_s" in r}
    if "int8" not in by or "bf16" not in by:
        return None
    return {
        "int8_over_bf16_gen_speed": by["int8"]["gen_tokens_per_s"] / by["bf16"]["gen_tokens_per_s"]
    }


if __name__ == "__main__":
    main()
