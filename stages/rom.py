"""Stage `rom`: put a md5-verified zork1.z5 at data/roms/zork1.z5 (local path, $ZORK_ROM, or download)."""

from __future__ import annotations

from zorkppo import paths
from zorkppo.config import params_from_cli
from zorkppo.errors import exit_on_user_error
from zorkppo.rom import ZORK1_MD5, install_rom


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    game = params_from_cli(__doc__, argv).game
    origin = install_rom(paths.ROM, local_path=game.rom_path, url=game.rom_url)
    print(f"rom: {paths.ROM} (md5 {ZORK1_MD5}) from {origin}")


if __name__ == "__main__":
    main()
