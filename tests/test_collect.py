import io
import json
import os
import subprocess
import sys
import zlib

import pytest
from conftest import ROOT

from stages import collect as collect_stage
from zorkppo.collect import episode_specs
from zorkppo.records import TRAJECTORIES, read_table

TINY = {
    "seed": 3,
    "collect": {
        "episodes": {"walkthrough": 1, "random": 1, "explorer": 1},
        "max_steps": 6,
        "workers": 2,
    },
}


def test_episode_specs_are_seeded_and_ordered():
    specs = episode_specs({"random": 2, "walkthrough": 1}, seed=1)
    assert [s.episode_id for s in specs] == ["walkthrough-0000", "random-0000", "random-0001"]
    assert specs == episode_specs({"random": 2, "walkthrough": 1}, seed=1)
    assert specs[1].agent_seed == zlib.crc32(b"1/random-0000")
    assert specs[1].agent_seed != episode_specs({"random": 2}, seed=2)[0].agent_seed


def test_collect_stage_smoke(project):
    project.write_params(TINY)
    collect_stage.main([])
    table = read_table("data/trajectories.parquet", TRAJECTORIES)
    df = table.to_pandas()
    assert list(df.groupby("source").size().sort_index().items()) == [
        ("explorer", 6),
        ("random", 6),
        ("walkthrough", 6),
    ]
    walk = df[df.source == "walkthrough"]
    assert list(walk.action) == ["N", "N", "U", "Get egg", "D", "S"]
    assert walk.iloc[0].observation.startswith("Copyright")
    assert all(len(v) > 0 for v in df.valid_actions)
    random_rows = df[df.source == "random"]
    assert all(a in v for a, v in zip(random_rows.action, random_rows.valid_actions, strict=True))
    assert list(random_rows.valid_action) == list(random_rows.action)
    # the walkthrough's commands in Jericho's valid-action form (one command per outcome)
    assert list(walk.valid_action) == [
        "north",
        "north",
        "up",
        "take all from nest",
        "down",
        "south",
    ]
    report = json.loads((project / "reports/collect.json").read_text())
    assert report["total_rows"] == 18

    first = (project / "data/trajectories.parquet").read_bytes()
    collect_stage.main([])
    assert (project / "data/trajectories.parquet").read_bytes() == first  # deterministic


def test_collect_stage_with_missing_rom_fails_cleanly(project):
    project.write_params(TINY)
    (project / "data/roms/zork1.z5").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "stages.collect"],
        capture_output=True,
        text=True,
        cwd=project,
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"]},
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ROM not found at data/roms/zork1.z5")
    assert "dvc repro rom" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "data/trajectories.parquet").exists()


def test_human_source_records_keyboard_play(rom_path, monkeypatch):
    from zorkppo.collect import EpisodeSpec, play_specs
    from zorkppo.envs import VecGames, zork_factory

    # An arrow key's escape sequence must be cleaned, never sent to the engine.
    monkeypatch.setattr(sys, "stdin", io.StringIO("open mailbox\n\x1b[Atake leaflet\nquit\n"))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    games = VecGames(zork_factory(str(rom_path), 12), 1, processes=False)
    rows = play_specs(games, [EpisodeSpec("human-0000", "human", 0)], max_steps=10)
    assert [r["action"] for r in rows] == ["open mailbox", "[Atake leaflet"]
    assert [r["source"] for r in rows] == ["human", "human"]


def test_collecting_nothing_is_refused(project, capsys):
    project.write_params({"collect": {"episodes": {"walkthrough": 0, "random": 0, "explorer": 0}}})
    with pytest.raises(SystemExit) as exit_info:
        collect_stage.main([])
    assert exit_info.value.code == 2
    assert "collect played no turns" in capsys.readouterr().err
    assert not (project / "data/trajectories.parquet").exists()
