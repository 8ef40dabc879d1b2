"""PPO checkpoints: everything needed to continue an interrupted run exactly where it stopped.

A checkpoint holds the LoRA and value-head weights, optimizer, KL controller, RNG states,
the games' saved states and episode trackers, and the metric history. It is reused only
by a run with the same fingerprint (params + input model) that had not finished; a
finished run, or one with other params, starts over.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file

from zorkppo.model import save_adapter
from zorkppo.records import atomic_dir, atomic_path

CHECKPOINT = "checkpoint.pt"


def fingerprint(params_json: dict, model_dir: Path, data: tuple[Path, ...] = ()) -> str:
    digest = hashlib.sha256(json.dumps(params_json, sort_keys=True).encode())
    for file in [*sorted(Path(model_dir).glob("*.safetensors")), *map(Path, data)]:
        digest.update(hashlib.md5(file.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def keep_only_resumable(checkpoint_dir: Path, key: str) -> None:
    """Keep what an interrupted run with fingerprint `key` left in `checkpoint_dir` (the SFT
    trainer's checkpoints), clear anything else, and mark the folder with `key`."""
    marker = Path(checkpoint_dir) / "fingerprint"
    if marker.is_file() and marker.read_text() == key:
        return
    clear(checkpoint_dir)
    marker.parent.mkdir(parents=True)
    marker.write_text(key)


def save(out_dir: Path, policy, state: dict) -> None:
    """Write the adapter, value head and the full training state (atomically, each)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir / "adapter") as tmp:
        save_adapter(policy.model, tmp)
    with atomic_path(out_dir / "value_head.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in policy.value_head.state_dict().items()}, str(tmp))
    payload = {
        **state,
        "adapter": get_peft_model_state_dict(policy.model),
        "value_head": policy.value_head.state_dict(),
    }
    # Into memory first: torch.save names the zip's root folder after the file it writes to,
    # and the temp file's random name would make identical checkpoints differ.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(out_dir / CHECKPOINT) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_resumable(out_dir: Path, expected_fingerprint: str) -> dict | None:
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception:  # a checkpoint torn by a crash mid-write cannot exist (atomic), but be safe
        return None
    if state.get("complete") or state.get("fingerprint") != expected_fingerprint:
        return None
    return state


def restore_weights(policy, state: dict) -> None:
    set_peft_model_state_dict(policy.model, state["adapter"])
    policy.value_head.load_state_dict(state["value_head"])


def clear(*paths: Path) -> None:
    for path in paths:
        if Path(path).exists():
            shutil.rmtree(path)
