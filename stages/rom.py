"""Stage `rom`: put a md5-verified zork1.z5 at data/roms/zork1.z5 (local path, $ZORK_ROM, or download)."""

from __future__ import annotations

import argparse

from zorkppo import paths
from zorkppo.config import load_params
from zorkppo.errors import exit_on_user_error
from zorkppo.rom import install_rom


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    game = load_params(args.params).game
    origin = install_rom(paths.ROM, local_path=game.rom_path, url=game.rom_url, md5=game.rom_md5)
    print(f"rom: {paths.ROM} (md5 {game.rom_md5}) from {origin}")


if __name__ == "__main__":
    main()
