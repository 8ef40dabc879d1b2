import pytest

from zorkppo.errors import UserError
from zorkppo.rom import ZORK1_MD5, install_rom, md5_of, verify_rom


def test_the_real_rom_verifies(rom_path):
    assert md5_of(rom_path) == ZORK1_MD5
    assert verify_rom(rom_path) == rom_path


def test_install_copies_a_local_rom(tmp_path, rom_path, monkeypatch):
    monkeypatch.delenv("ZORK_ROM", raising=False)
    dest = tmp_path / "roms/zork1.z5"
    assert install_rom(dest, local_path=str(rom_path)) == str(rom_path)
    assert md5_of(dest) == ZORK1_MD5


def test_install_reads_the_environment_variable(tmp_path, rom_path, monkeypatch):
    monkeypatch.setenv("ZORK_ROM", str(rom_path))
    dest = tmp_path / "zork1.z5"
    install_rom(dest)
    assert md5_of(dest) == ZORK1_MD5


def test_wrong_md5_is_rejected_and_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.delenv("ZORK_ROM", raising=False)
    fake = tmp_path / "fake.z5"
    fake.write_bytes(b"not zork")
    dest = tmp_path / "out/zork1.z5"
    with pytest.raises(UserError, match=f"expected {ZORK1_MD5}") as err:
        install_rom(dest, local_path=str(fake))
    assert "ZORK_ROM" in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_missing_rom_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("ZORK_ROM", raising=False)
    with pytest.raises(UserError, match="ROM not found"):
        install_rom(tmp_path / "zork1.z5", local_path=str(tmp_path / "nowhere.z5"))


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ZORK_ROM", raising=False)
    dest = tmp_path / "zork1.z5"
    with pytest.raises(UserError, match="could not download"):
        install_rom(dest, url="http://127.0.0.1:9/zork1.z5")
    assert list(tmp_path.iterdir()) == []
