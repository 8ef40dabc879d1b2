"""Locate, download and verify the Zork I story file. The ROM is never committed."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from zorkppo.errors import UserError

ZORK1_MD5 = "b732a93a6244ddd92a9b9a3e3a46c687"
ROM_ENV_VAR = "ZORK_ROM"
HOW_TO_GET = (
    f"set game.rom_path in params.yaml or the {ROM_ENV_VAR} environment variable to a local "
    "zork1.z5 (md5 " + ZORK1_MD5 + ", from the Jericho game suite)"
)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_rom(path: Path, fix: str = HOW_TO_GET) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ROM not found at {path}: {fix}")
    actual = md5_of(path)
    if actual != ZORK1_MD5:
        raise UserError(
            f"ROM {path} has md5 {actual}, expected {ZORK1_MD5} (the Zork I build Jericho "
            f"supports, revision 88): {fix}"
        )
    return path


def installed_rom(path: Path) -> Path:
    """The ROM the `rom` stage put in place, checked again by the stages that play."""
    return verify_rom(
        path,
        "run the rom stage first (dvc repro rom): it installs a verified copy from "
        f"game.rom_path, ${ROM_ENV_VAR} or game.rom_url",
    )


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as exc:
        raise UserError(f"could not download the ROM from {url} ({exc}): {HOW_TO_GET}") from None


def install_rom(dest: Path, local_path: str = "", url: str = "") -> str:
    """Put a verified ROM at `dest`; return where it came from.

    Order: `local_path` (param), then $ZORK_ROM, then `url`. The copy goes to a temp file
    in the destination folder and is renamed only once its md5 is right, so a failed or
    wrong download never leaves a ROM behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = local_path or os.environ.get(ROM_ENV_VAR, "")
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".rom-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if source:
            verify_rom(Path(source))
            shutil.copyfile(source, tmp)
            origin = str(source)
        elif url:
            _download(url, tmp)
            origin = url
        else:
            raise UserError(f"no ROM source given: {HOW_TO_GET}")
        verify_rom(tmp)
        os.replace(tmp, dest)
        return origin
    finally:
        tmp.unlink(missing_ok=True)
