"""Small atomic writers for JSON and text reports."""

from __future__ import annotations

import json
from pathlib import Path

from zorkppo.records import atomic_path


def write_json(data: dict, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)
