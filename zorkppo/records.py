"""Versioned Parquet schemas and atomic, validated reads and writes.

Each table's schema carries `zorkppo.schema = <name>/<version>` in its Parquet metadata.
Readers check name, version and columns and refuse anything else with one clear line.
Writers write a temp file next to the target and rename it, so a crash never leaves a
half-written table under the real name.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zorkppo.errors import UserError

SCHEMA_KEY = b"zorkppo.schema"


@dataclass(frozen=True)
class TableSchema:
    name: str
    version: int
    arrow: pa.Schema

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"

    def with_metadata(self) -> pa.Schema:
        return self.arrow.with_metadata({SCHEMA_KEY: self.tag.encode()})


TRAJECTORIES = TableSchema(
    name="trajectories",
    version=2,  # v2: valid_action (the action in Jericho's valid-action form, "" if none)
    arrow=pa.schema(
        [
            ("episode_id", pa.string()),
            ("source", pa.string()),
            ("step", pa.int32()),
            ("observation", pa.string()),
            ("description", pa.string()),
            ("inventory", pa.string()),
            ("location", pa.string()),
            ("valid_actions", pa.list_(pa.string())),
            ("action", pa.string()),
            ("valid_action", pa.string()),
            ("reward", pa.int32()),
            ("score", pa.int32()),
            ("done", pa.bool_()),
            ("moves", pa.int32()),
            ("world_hash", pa.string()),
        ]
    ),
)


ROLLOUTS = TableSchema(
    name="rollouts",
    # v2: truncated (cut by ppo.max_steps; done includes it), world_changed; v3: weight;
    # v4: state_hash (the world hash the command was typed in: ppo.baseline state);
    # v5: no weight (ppo.explore removed); v6: start (where the episode began: "" the game's
    # start, else the archived place it returned to, "room @ score"); v7: explored (drawn
    # uniformly after a return; removed with it, back to v6); v8: explored (chosen by the
    # frontier's exploration, ppo.archive.frontier_explore: left out of the update)
    version=8,
    arrow=pa.schema(
        [
            ("iteration", pa.int32()),
            ("env", pa.int32()),
            ("episode", pa.int32()),
            ("step", pa.int32()),
            ("command", pa.string()),
            ("game_score", pa.int32()),
            ("location", pa.string()),
            ("state_hash", pa.string()),
            ("start", pa.string()),
            ("explored", pa.bool_()),
            ("done", pa.bool_()),
            ("truncated", pa.bool_()),
            ("world_changed", pa.bool_()),
        ]
        + [
            (name, pa.float64())
            for name in (
                "reward",
                "score",
                "new_location",
                "death",
                "valid_command",
                "novelty",
                "logprob",
                "ref_logprob",
                "value",
                "advantage",
                "return",
            )
        ]
    ),
)


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temp path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path):
    """Yield a temp folder beside `target`; it replaces `target` only if the block succeeds."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_table(rows: list[dict] | pa.Table, path: str | Path, schema: TableSchema) -> Path:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema.arrow)
    table = table.cast(schema.with_metadata())
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_table(path: str | Path, schema: TableSchema) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run the stage that writes it (dvc repro)")
    try:
        file_schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(
            f"{path} is not a readable Parquet file ({exc}): delete it and rerun the stage that writes it"
        ) from None
    tag = (file_schema.metadata or {}).get(SCHEMA_KEY, b"").decode()
    if tag != schema.tag:
        found = tag or "no zorkppo schema tag"
        raise UserError(
            f"{path} has schema {found!r}, expected {schema.tag!r}: regenerate it with the current code (dvc repro -f)"
        )
    expected = schema.arrow.remove_metadata()
    if not file_schema.remove_metadata().equals(expected):
        got = {f.name: str(f.type) for f in file_schema}
        want = {f.name: str(f.type) for f in expected}
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise UserError(
            f"{path} columns differ from {schema.tag} ({diff[:4]}): regenerate it (dvc repro -f)"
        )
    try:
        return pq.read_table(path, schema=schema.with_metadata())
    except (pa.ArrowException, OSError) as exc:
        raise UserError(
            f"{path} is corrupt ({exc}): delete it and rerun the stage that writes it"
        ) from None
