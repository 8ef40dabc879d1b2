"""Supervised warm-start: trajectories -> (prompt, action) -> LoRA updates by TRL's SFTTrainer.

The examples come from `zorkppo.examples`. The rows reach the trainer tokenized by
`encode_example`, the same encoding PPO and `quantize` score with; the trainer brings the
optimizer, schedule, gradient accumulation, mixed precision, gradient checkpointing,
checkpoints to resume from and multi-GPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset
from dvclive import Live
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import PrinterCallback, TrainerCallback
from transformers.integrations import DVCLiveCallback
from trl import SFTConfig, SFTTrainer

from zorkppo.config import SftParams
from zorkppo.errors import UserError
from zorkppo.examples import Example
from zorkppo.lm import IGNORE, encode_example


def sft_dataset(tokenizer, examples: list[Example], max_prompt_tokens: int) -> Dataset:
    """Pre-tokenized rows for SFTTrainer: our `encode_example` (prompt cut from the left, the
    command with its leading space and EOS) and a completion mask over the command tokens.
    TRL skips its own tokenization for rows that carry `input_ids`, and with
    `completion_only_loss` masks the prompt labels to -100 exactly as `encode_example` does."""
    encoded = [encode_example(tokenizer, e.prompt, e.action, max_prompt_tokens) for e in examples]
    return Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in encoded],
            "completion_mask": [[int(label != IGNORE) for label in e.labels] for e in encoded],
        }
    )


class LossCurve(DVCLiveCallback):
    """transformers' DVCLive callback, per-update logs only, as `train/<name>`: the
    end-of-training summary holds wall times (train_runtime, samples per second) that would make
    two identical runs differ, and the trainer's arguments are DVC params already."""

    def setup(self, args, state, model):
        self._initialized = True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # resumed: the checkpoint's history first, so the curve is the uninterrupted run's
        self.setup(args, state, model)
        for logs in state.log_history:
            self.on_log(args, state, control, model=model, logs=dict(logs), **kwargs)

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if logs and "train_runtime" not in logs:
            logs = {f"train_{key}": value for key, value in logs.items() if key != "step"}
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        pass  # the stage closes its Live


class StopWhenLearned(TrainerCallback):
    """Every `check_every` epochs ask `learned(model)` (greedy decoding replays every imitated
    command); stop once it says so. Greedy decoding draws no random numbers, so the check leaves
    the run's course unchanged."""

    def __init__(self, check_every: int, learned: Callable[[object], bool]):
        self.check_every, self.learned = check_every, learned

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch)
        if self.check_every and epoch % self.check_every == 0 and epoch < args.num_train_epochs:
            model.eval()
            control.should_training_stop = self.learned(model)
            model.train()


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The trainer's newest checkpoint that was written to the end (it writes trainer_state.json
    last); a run killed mid-save leaves a torn one, without that file or with it cut short."""
    done = [
        path
        for path in Path(checkpoint_dir).glob("checkpoint-*")
        if whole_json(path / "trainer_state.json")
    ]
    return str(max(done, key=lambda path: int(path.name.split("-")[-1]))) if done else None


def whole_json(path: Path) -> bool:
    """The file is there and parses: a kill while it was written leaves it empty or cut."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def train_lora(
    model,
    tokenizer,
    examples: list[Example],
    sft: SftParams,
    max_prompt_tokens: int,
    seed: int,
    checkpoint_dir: Path | None = None,
    learned: Callable[[object], bool] = lambda model: False,
    live: Live | None = None,
) -> tuple[object, int]:
    """LoRA SFT with TRL's SFTTrainer: AdamW, warm-up + cosine learning rate, gradient
    clipping, completion-only loss; returns the LoRA model and its number of updates.

    With `checkpoint_dir` the trainer saves its full state there every epoch and a rerun resumes
    from the last one (the caller clears it for a new run); without, nothing is written."""
    if not examples:
        raise UserError(
            "the SFT training set is empty after filtering: check sft.sources and split"
        )
    if sft.load_in_bits != "none":
        # QLoRA-style: norms and head in fp32, inputs that carry gradients into the frozen net
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=sft.gradient_checkpointing
        )
    device = next(model.parameters()).device
    config = SFTConfig(
        output_dir=str(checkpoint_dir or "unused"),
        num_train_epochs=sft.epochs,
        per_device_train_batch_size=sft.batch_size,
        gradient_accumulation_steps=sft.gradient_accumulation_steps,
        learning_rate=sft.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=sft.warmup_fraction,  # a fraction of all updates, below 1
        optim="adamw_torch",
        weight_decay=0.01,
        max_grad_norm=1.0,
        bf16=sft.bf16,
        gradient_checkpointing=sft.gradient_checkpointing,
        completion_only_loss=True,
        max_length=None,  # prompts are already cut to max_prompt_tokens, from the left
        seed=seed,
        data_seed=seed,
        use_cpu=device.type == "cpu",
        logging_steps=1,
        save_strategy="epoch" if checkpoint_dir else "no",
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        # Batches of similar prompt lengths: random batches of the walkthrough rows pad to
        # 28.9k tokens an epoch, length-grouped ones to 20.4k (18.8k real); the default
        # stage ran 191.6 s -> 155.1 s with the same 156 updates and the same replay.
        train_sampling_strategy="group_by_length",
    )
    lora = sft.lora
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=sft_dataset(tokenizer, examples, max_prompt_tokens),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        ),
        callbacks=[StopWhenLearned(sft.check_every, learned)]
        + ([LossCurve(live=live)] if live is not None else []),
    )
    trainer.remove_callback(PrinterCallback)  # one dict per update on stdout; dvclive has them
    resume = last_complete_checkpoint(checkpoint_dir) if checkpoint_dir else None
    if resume:
        print(f"sft: resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    trainer.model.eval()
    return trainer.model, trainer.state.global_step
