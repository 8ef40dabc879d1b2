"""Stage `sft`: LoRA warm-start on (prompt, action) pairs by TRL's SFTTrainer; held-out accuracy
before and after.

Run through `python -m zorkppo.launch stages.sft`: with `processes` > 1 the trainer runs
data-parallel (DDP, through Accelerate) over that many replicas, each taking
`sft.batch_size / processes` rows of every batch; every replica scores, rank 0 writes.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from dvclive import Live

from zorkppo import paths
from zorkppo.checkpoint import clear, fingerprint, keep_only_resumable
from zorkppo.config import params_from_cli
from zorkppo.distributed import close_replicas, init_replicas
from zorkppo.errors import UserError, exit_on_user_error
from zorkppo.examples import (
    build_examples,
    heldout_examples,
    imitated_rows,
    imitated_sources,
    split_episodes,
)
from zorkppo.io import write_json
from zorkppo.model import (
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    save_adapter,
    seed_everything,
)
from zorkppo.quantize import quantization_config
from zorkppo.records import TRAJECTORIES, atomic_dir, read_table
from zorkppo.scoring import evaluate_actions
from zorkppo.sft import train_lora


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    params = params_from_cli(__doc__, argv)
    sft, prompt = params.sft, params.prompt
    started = time.perf_counter()
    seed_everything(params.seed)
    replicas, device = init_replicas(resolve_device(params.model.device))
    per_replica_batch = replicas.split(sft.batch_size, "sft.batch_size")

    # 1. Rows -> examples, split by episode, training rows filtered by source.
    df = read_table(paths.TRAJECTORIES, TRAJECTORIES).to_pandas()
    train_ids, heldout_ids = split_episodes(
        df.episode_id, params.split.heldout_fraction, params.seed
    )
    tokenizer = load_tokenizer(paths.BASE_MODEL)
    imitated = imitated_sources(sft)
    train_df = imitated_rows(df, sft, train_ids)
    if train_df.empty:
        raise UserError(
            f"the SFT training set is empty: no training episodes from sources {imitated} "
            f"(sft.sources {sft.sources} and sft.imitate {sft.imitate}); add sources to both "
            "or episodes to collect.episodes"
            + (
                " (sft.imitate_until last_gain keeps nothing of an episode that never scored)"
                if sft.imitate_until == "last_gain"
                else ""
            )
        )
    train = build_examples(train_df, tokenizer, prompt.history_turns)
    heldout = heldout_examples(df, params.split, params.seed, tokenizer, prompt.history_turns)
    source_of = dict(zip(df.episode_id, df.source, strict=True))

    def score(examples, scored=None):
        return evaluate_actions(
            model if scored is None else scored,
            tokenizer,
            examples,
            prompt.max_prompt_tokens,
            sft.max_new_tokens,
        )

    # 2. Base model (8/4-bit for QLoRA-style SFT); held-out scores before training.
    model = load_causal_lm(
        paths.BASE_MODEL, device, params.model.dtype, quantization_config(sft.load_in_bits)
    )
    before = score(heldout)

    # 3. SFTTrainer until the imitated commands are learned (greedy exact match 1.0 on them,
    # checked every sft.check_every epochs) or sft.epochs run out; the loss curve goes to
    # dvclive. The trainer checkpoints every epoch in SFT_CHECKPOINTS, so a rerun after an
    # interruption resumes there, if params, data and base model are the same. The reports
    # folder is written aside and put in place with the adapter.
    resume_key = fingerprint(
        params.model_dump(include={"seed", "processes", "split", "model", "prompt", "sft"}),
        paths.BASE_MODEL,
        (paths.TRAJECTORIES,),
    )
    if replicas.main:
        keep_only_resumable(paths.SFT_CHECKPOINTS, resume_key)
    replicas.barrier()
    # Rank 0 writes the reports; the other replicas train and score alike, and write nothing.
    with atomic_dir(paths.SFT_REPORTS) if replicas.main else nullcontext() as reports:
        live = (
            Live(str(reports), save_dvc_exp=False, dvcyaml=None, report=None) if reports else None
        )
        with live or nullcontext():
            model, updates = train_lora(
                model,
                tokenizer,
                train,
                sft.model_copy(update={"batch_size": per_replica_batch}),
                prompt.max_prompt_tokens,
                params.seed,
                paths.SFT_CHECKPOINTS,
                # one decision for all replicas: rank 0's (theirs is the same, greedy on
                # the same weights, but a diverging stop would hang the others)
                lambda model: replicas.broadcast(score(train, model)["exact_match"] == 1.0),
                live,
            )
        digest = replicas.check_identical(
            [p for p in model.parameters() if p.requires_grad], "LoRA weights"
        )
        after = score(heldout)

        # Per imitated source: does greedy decoding replay its commands, on the training
        # episodes and on held-out ones (none when all of a source's episodes trained).
        def of_source(examples, source):
            return [e for e in examples if source_of[e.episode_id] == source]

        per_source = {
            source: {
                split: score(rows)
                for split, rows in (
                    ("train", of_source(train, source)),
                    ("heldout", of_source(heldout, source)),
                )
                if rows
            }
            for source in imitated
        }

        # 4. Artifacts: the adapter and the held-out metrics.
        if not replicas.main:
            close_replicas(replicas)
            return
        with atomic_dir(paths.SFT_ADAPTER) as out:
            save_adapter(model, out)
        metrics = {
            "imitated_sources": imitated,
            "imitated_episodes": sorted(train_df.episode_id.unique()),
            "train_examples": len(train),
            "heldout_examples": len(heldout),
            "updates": updates,
            "heldout_episodes": sorted(heldout_ids),
            "before": before,
            "after": after,
            "imitated": per_source,
        }
        write_json(metrics, reports / "metrics.json")
    clear(paths.SFT_CHECKPOINTS)  # done: a rerun starts over
    close_replicas(replicas)
    if replicas.world > 1:
        print(f"sft: {replicas.world} replicas end with identical weights (sha256 {digest[:16]})")
    print(
        f"sft: {len(train)} train / {len(heldout)} held-out examples, {updates} updates in "
        f"{time.perf_counter() - started:.1f} s"
    )
    for name, m in (("before", before), ("after", after)):
        print(
            f"sft: {name:6s} loss {m['action_loss']:.3f} exact {m['exact_match']:.1%} "
            f"valid {m['valid_command_rate']:.1%}"
        )
    for source, splits in per_source.items():
        for split, m in splits.items():
            print(
                f"sft: {source} {split} rows: exact {m['exact_match']:.1%} "
                f"({m['examples']} commands), loss {m['action_loss']:.3f}"
            )


if __name__ == "__main__":
    main()
