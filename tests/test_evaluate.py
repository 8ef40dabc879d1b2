"""Evaluation: walkthrough ceiling, random baseline, metrics schema, README table, watch/play."""

import io
import json
import sys

import pytest

from zorkppo import results_table
from zorkppo.curve import write_curve
from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import (
    agent_chooser,
    pick_episodes,
    play_episodes,
    summarize,
    walkthrough_chooser,
)
from zorkppo.game import ZorkGame

METRIC_KEYS = {
    "episodes",
    "score_mean",
    "score_std",
    "score_max",
    "moves_mean",
    "unique_locations_mean",
    "valid_command_rate",
    "deaths",
}


@pytest.fixture(scope="module")
def games(rom_path):
    with VecGames(zork_factory(str(rom_path), 12), 2) as vec:
        yield vec


def test_walkthrough_agent_scores_what_the_walkthrough_reaches(games, rom_path):
    game = ZorkGame(rom_path)
    game.reset()
    walkthrough = game.walkthrough()
    for command in walkthrough[:40]:
        expected = game.step(command).score
    rows = play_episodes("walkthrough", games, walkthrough_chooser(walkthrough), 40, 3)
    summary = summarize(rows)
    assert summary["score_mean"] == summary["score_max"] == expected and expected > 0
    assert summary["score_std"] == 0 and summary["deaths"] == 0


def test_random_agent_plays_within_the_game_range(games):
    rows = play_episodes("random", games, agent_chooser("random", seed=3), 15, 3)
    summary = summarize(rows)
    assert set(summary) == METRIC_KEYS
    assert -10 <= summary["score_mean"] <= 350 and summary["unique_locations_mean"] >= 1
    assert 0 <= summary["valid_command_rate"] <= 1 and summary["episodes"] == 2
    again = play_episodes("random", games, agent_chooser("random", seed=3), 15, 3)
    assert [r["action"] for r in again] == [r["action"] for r in rows]  # seeded
    picked = pick_episodes(rows)
    assert picked["best"][-1]["score"] >= picked["median"][-1]["score"]


def sample_metrics():
    agent = {
        "episodes": 3,
        "score_mean": 12.5,
        "score_std": 2.0,
        "score_max": 15,
        "moves_mean": 98.0,
        "unique_locations_mean": 6.333,
        "valid_command_rate": 0.4,
        "deaths": 1,
    }
    protocol = {
        "episodes": 3,
        "greedy_episodes": 1,
        "max_steps": 100,
        "game_seed": 12,
        "seed": 0,
        "temperature": 0.7,
        "action_mode": "generate",
        "model_profile": "tiny",
        "walkthrough_data_in_training": True,
    }
    greedy = {**agent, "episodes": 1, "score_mean": 35.0, "score_std": 0.0, "score_max": 35}
    return {
        "protocol": protocol,
        "agents": {
            "random": {"sample": agent},
            "walkthrough": {"greedy": {**greedy, "score_mean": 102.0}},
            "ppo": {"greedy": greedy, "sample": {**agent, "score_mean": 20.0}},
        },
    }


SECTIONS = (
    "# x\n<!-- results:start -->\nold\n<!-- results:end -->\n"
    "<!-- results:no-walkthrough:start -->\nold\n<!-- results:no-walkthrough:end -->\ntail\n"
)


def test_results_table_renders_and_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "reports/eval/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps(sample_metrics()))
    readme = tmp_path / "README.md"
    readme.write_text(SECTIONS)
    assert results_table.main(["--check"]) == 1
    assert results_table.main([]) == 0
    text = readme.read_text()
    assert "| random | - | 12.5 ± 2.0 | 15 | 98 | 6.3 | 40% | 1 |" in text
    assert "| walkthrough | 102 | - | - | 98 |" in text
    assert "| ppo | 35 | 20.0 ± 2.0 | 15 |" in text and text.endswith("tail\n")
    assert (
        "at most 100 steps each, game seed 12" in text
        and "walkthrough data used in training: yes" in text
    )
    assert results_table.main(["--check"]) == 0


def test_results_table_snapshots_the_no_walkthrough_run(tmp_path, monkeypatch):
    """--snapshot copies the workspace's run and fills only the no-walkthrough section."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no run to snapshot"):
        results_table.main(["--snapshot"])
    readme = tmp_path / "README.md"
    readme.write_text(SECTIONS)
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/eval/metrics.json").write_text(json.dumps(sample_metrics()))
    (tmp_path / "reports/eval/scores.png").write_bytes(b"png")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    point = {
        "iteration": 0,
        "env_steps": 0,
        "greedy_score": 30.0,
        "sampled_score_mean": 20.0,
        "sampled_score_std": 5.0,
        "sampled_score_max": 25,
        "sampled_deaths": 2,
        "training_episodes": 0,
        "training_episode_score_mean": "",
    }
    later = point | {"iteration": 8, "env_steps": 512, "training_episodes": 3}
    write_curve(
        [point, later | {"training_episode_score_mean": 12.5}], tmp_path / "reports/ppo/curve.tsv"
    )
    (tmp_path / "reports/ppo/learning_curve.png").write_bytes(b"png")
    assert results_table.main(["--snapshot"]) == 0
    text = readme.read_text()
    default, no_walkthrough = text.split("<!-- results:end -->")
    assert "old" in default  # the workspace holds the experiment: the default table stays
    assert "| ppo | 35 | 20.0 ± 2.0 | 15 |" in no_walkthrough
    assert "| 0 | 0 | 30 | 20.0 ± 5.0 | 25 | 2 | 0 |" in no_walkthrough
    assert "| 8 | 512 | 30 | 20.0 ± 5.0 | 25 | 2 | 3 (12.5) |" in no_walkthrough
    snapshot = tmp_path / "reports/no_walkthrough"
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "curve.tsv",
        "learning_curve.png",
        "metrics.json",
        "params.yaml",
        "scores.png",
    ]


def test_readme_table_matches_committed_metrics():
    """README's results come from reports/eval/metrics.json through the script, not by hand."""
    assert results_table.main(["--check"]) == 0


def test_watch_and_human_play(project, monkeypatch):
    from zorkppo import play
    from zorkppo.records import TRAJECTORIES, read_table

    project.write_params({})
    screen = io.StringIO()
    play.watch(
        "walkthrough",
        play.load_params("params.yaml"),
        max_steps=3,
        delay=0,
        greedy=True,
        out=screen,
    )
    assert "> N" in screen.getvalue() and "final score 0 after 3 turns" in screen.getvalue()

    monkeypatch.setattr(sys, "stdin", io.StringIO("open mailbox\ntake leaflet\n"))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    play.main(["--human", "--record", "human.parquet"])
    table = read_table("human.parquet", TRAJECTORIES).to_pandas()
    assert list(table.action) == ["open mailbox", "take leaflet"] and set(table.source) == {"human"}


def test_evaluate_refuses_missing_models_before_playing(project, capsys):
    from stages import evaluate

    project.write_params({"eval": {"agents": ["random", "ppo"], "episodes": 1, "max_steps": 2}})
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([])
    assert exit_info.value.code == 2
    assert "model directory models/quantized does not exist" in capsys.readouterr().err
    assert not (project / "reports").exists()  # the random agent did not play and write first
