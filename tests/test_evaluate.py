"""Evaluation: walkthrough ceiling, random baseline, metrics, README table, watch/play."""

import io
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from zorkppo import results_table
from zorkppo.config import parse_params
from zorkppo.curve import write_curve
from zorkppo.envs import VecGames, zork_factory
from zorkppo.evaluate import agent_chooser, pick_episodes, play, protocol_line, summarize
from zorkppo.game import ZorkGame


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
    choose = agent_chooser("walkthrough", parse_params({}), "greedy", walkthrough)
    rows = play("walkthrough", games, choose, 1, 40, 3)
    assert [r["action"] for r in rows] == walkthrough[:40]
    summary = summarize(rows)
    assert summary["score_mean"] == summary["score_max"] == expected == 59
    assert summary["score_std"] == 0 and summary["deaths"] == 0


def test_random_agent_plays_its_seeded_draws_over_the_valid_actions(games, rom_path):
    """Episode i's agent draws from random.Random(seed * 1000 + i) over Jericho's valid
    actions: replayed by hand in a game of its own, it types the same commands."""
    choose = agent_chooser("random", parse_params({"seed": 3}), "sample", [])
    rows = play("random", games, choose, 2, 15, 3)
    assert {r["episode"] for r in rows} == {0, 1}
    game, rng = ZorkGame(rom_path), random.Random(3 * 1000 + 1)
    game.reset()
    for row in [r for r in rows if r["episode"] == 1]:
        command = rng.choice(game.valid_actions())
        assert row["action"] == command
        assert row["score"] == game.step(command).score
    again = play(
        "random", games, agent_chooser("random", parse_params({"seed": 3}), "", []), 2, 15, 3
    )
    assert again == rows


def test_summary_and_picked_episodes_hand_values():
    def row(episode, step, score, location, changed, died=False):
        return {
            "episode": episode,
            "step": step,
            "score": score,
            "moves": step + 1,
            "location": location,
            "world_changed": changed,
            "died": died,
        }

    rows = [
        row(0, 0, 0, "West of House", True),
        row(0, 1, 5, "North of House", True),
        row(1, 0, 0, "West of House", False),
        row(1, 1, 5, "West of House", True),  # reached 5, then died: final -10
        row(1, 2, -10, "Forest", True, died=True),
        row(2, 0, 0, "West of House", False),
    ]
    assert summarize(rows) == {
        "episodes": 3,
        "score_mean": pytest.approx(-5 / 3),
        "score_std": pytest.approx(6.2360956),  # population std of 5, -10, 0
        "score_max": 5,
        "reached_mean": pytest.approx(10 / 3),  # 5, 5, 0
        "reached_max": 5,
        "moves_mean": pytest.approx(2.0),  # 2, 3, 1
        "unique_locations_mean": pytest.approx(5 / 3),  # 2, 2, 1
        "valid_command_rate": pytest.approx(4 / 6),
        "deaths": 1,
    }
    picked = pick_episodes(rows)
    assert picked["best"][0]["episode"] == 0 and picked["median"][0]["episode"] == 2


def sample_metrics():
    agent = {
        "episodes": 3,
        "score_mean": 12.5,
        "score_std": 2.0,
        "score_max": 15,
        "reached_mean": 14.5,
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
    assert "| random | - | 12.5 ± 2.0 | 14.5 | 15 | 98 | 6.3 | 40% | 1 |" in text
    assert "| walkthrough | 102 | - | - | - | 98 |" in text
    assert "| ppo | 35 | 20.0 ± 2.0 | 14.5 | 15 |" in text and text.endswith("tail\n")
    assert (
        "at most 100 steps each, game seed 12" in text
        and "walkthrough data used in training: yes" in text
    )
    assert results_table.main(["--check"]) == 0


def test_experiment_sections_render_one_seed_and_the_mean_over_several(tmp_path, monkeypatch):
    """results:NAME renders reports/NAME/seed-N/: one seed as the single table with its
    curve; several as each agent's mean over the seeds ± the std between the seeds' means."""
    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:x:start -->\nold\n<!-- results:x:end -->\n")
    assert results_table.main([]) == 0 and "old" in readme.read_text()  # no run: left alone
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

    def seed(n: int, sampled: float, greedy: float) -> None:
        folder = tmp_path / f"reports/x/seed-{n}"
        folder.mkdir(parents=True)
        metrics = sample_metrics()
        metrics["agents"]["ppo"]["sample"]["score_mean"] = sampled
        metrics["agents"]["ppo"]["greedy"]["score_mean"] = greedy
        (folder / "metrics.json").write_text(json.dumps(metrics))
        run = {"commit": f"{n}" * 40, "seconds": 600 * (n + 1), "command": "exp run"}
        if n == 1:  # evaluation re-run at a later commit on the models trained at `commit`
            run["evaluated_at"] = "a" * 40
        if n == 2:  # a run whose stages ran one by one says so
            run["note"] = "stages run one by one"
        (folder / "run.json").write_text(json.dumps(run))
        late = later | {"training_episode_score_mean": 12.5, "sampled_score_mean": 20.0 + 10 * n}
        write_curve([point, late], folder / "curve.tsv")

    seed(0, 20.0, 35.0)
    assert results_table.main([]) == 0
    text = readme.read_text()
    assert "| ppo | 35 | 20.0 ± 2.0 | 14.5 | 15 |" in text
    assert "| 8 | 512 | 30 | 20.0 ± 5.0 | 25 | 2 | 3 (12.5) |" in text
    assert "seed 0: commit `0000000`, 10 min" in text
    seed(1, 30.0, 40.0)
    seed(2, 40.0, 45.0)
    assert results_table.main([]) == 0
    text = readme.read_text()
    # sampled means 20, 30, 40: mean 30, population std 8.16; greedy 35, 40, 45: 40 ± 4.08
    assert "| ppo | 40.0 ± 4.1 | 30.0 ± 8.2 | 20.0 / 30.0 / 40.0 | 14.5 ± 0.0 | 15 | 3 |" in text
    assert (
        "run seeds 0, 1, 2," in text
        and "seed 2: commit `2222222`, 30 min (stages run one by one)" in text
    )
    assert "seed 1: commit `1111111`, evaluated at `aaaaaaa`, 20 min" in text
    assert "| 8 | 512 | 30 / 30 / 30 | 20.0 / 30.0 / 40.0 | 30.0 |" in text  # the seeds' curves
    assert results_table.main(["--check"]) == 0


def test_an_experiment_renders_its_own_section_and_leaves_the_default_table(tmp_path, monkeypatch):
    """After `dvc exp run` the workspace's reports/eval hold the experiment's run: README's
    default `results` table (the `dvc repro` pipeline's) must not be rendered from them."""
    from zorkppo.experiment import Experiment, run_experiment

    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- results:start -->\nthe default pipeline's table\n<!-- results:end -->\n"
        "<!-- results:x:start -->\nold\n<!-- results:x:end -->\n"
    )
    fake_dvc = tmp_path / "fake-dvc"  # writes what a run leaves in the workspace
    fake_dvc.write_text(
        f"#!{sys.executable}\n"
        "import pathlib\n"
        "print(\"Running stage 'ppo':\")\n"
        "print(\"Running stage 'evaluate':\")\n"
        "eval_dir = pathlib.Path('reports/eval'); eval_dir.mkdir(parents=True)\n"
        f"eval_dir.joinpath('metrics.json').write_text({json.dumps(json.dumps(sample_metrics()))})\n"
        "for name in ('reports/eval/scores.png', 'reports/ppo/learning_curve.png'):\n"
        "    pathlib.Path(name).parent.mkdir(parents=True, exist_ok=True)\n"
        "    pathlib.Path(name).write_bytes(b'png')\n"
        "pathlib.Path('reports/ppo/curve.tsv').write_text('iteration\\tenv_steps\\n')\n"
        "pathlib.Path('params.yaml').write_text('seed: 0\\n')\n"
    )
    fake_dvc.chmod(0o755)
    run_experiment(Experiment("x", {}, (0,), parse_params({})), str(fake_dvc))
    text = readme.read_text()
    assert "the default pipeline's table" in text
    assert "old" not in text and "| ppo |" in text
    assert (tmp_path / "reports/x/seed-0/metrics.json").is_file()
    run = json.loads((tmp_path / "reports/x/seed-0/run.json").read_text())
    assert run["torch_threads"] == torch.get_num_threads()
    assert set(run["stage_seconds"]) == {"ppo", "evaluate"}  # from the lines dvc printed


def test_unseen_game_seeds_table_hand_values():
    """Per game seed: the sampled mean (the walkthrough's greedy replay), averaged over the
    run seeds, and the mean over the unseen seeds."""

    def run(walkthrough: float, ppo: list[float]) -> dict:
        metrics = sample_metrics()
        metrics["protocol"] |= {"unseen_game_seeds": [1, 2], "seed_episodes": 10}
        metrics["agents"] = {
            "walkthrough": {"greedy": {"score_mean": 102.0}},
            "ppo": {"greedy": {"score_mean": 40.0}, "sample": {"score_mean": ppo[0]}},
        }
        metrics["game_seeds"] = {
            str(seed): {
                "walkthrough": {"greedy": {"score_mean": walkthrough}},
                "ppo": {"greedy": {"score_mean": 0.0}, "sample": {"score_mean": score}},
            }
            for seed, score in zip((1, 2), ppo[1:], strict=True)
        }
        return metrics

    text = results_table.render_game_seeds(
        [run(30.0, [38.0, 20.0, 30.0]), run(30.0, [36.0, 30.0, 40.0])]
    )
    assert "| agent | game seed 12 (training) | seed 1 | seed 2 | unseen seeds, mean |" in text
    assert "| walkthrough | 102.0 | 30.0 | 30.0 | 30.0 |" in text
    assert "| ppo | 37.0 | 25.0 | 35.0 | 30.0 |" in text  # (20+30)/2, (30+40)/2, then (25+35)/2


def test_committed_readme_tables_match_the_committed_metrics():
    """README's results come from the metrics files through the script, not by hand. Checked
    on the committed state: a user's own `make repro` rewrites reports/, not the commit."""
    readme = results_table.Committed(ROOT).read(Path("README.md"))
    if readme is None:
        pytest.skip("not a git checkout")
    assert results_table.updated_readme(readme, results_table.Committed(ROOT)) == readme


def test_watch_and_human_play(project, monkeypatch):
    from zorkppo import play as play_module

    project.write_params({})
    screen = io.StringIO()
    rows = play_module.watch(
        "walkthrough",
        play_module.load_params("params.yaml"),
        max_steps=3,
        delay=0,
        greedy=True,
        out=screen,
    )
    assert [r["action"] for r in rows] == ["N", "N", "U"]
    assert "> N" in screen.getvalue() and "final score 0 after 3 turns" in screen.getvalue()

    monkeypatch.setattr(sys, "stdin", io.StringIO("open mailbox\ntake leaflet\n"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    play_module.main(["--human"])
    assert "Opening the small mailbox reveals a leaflet." in out.getvalue()
    assert out.getvalue().rstrip().endswith("final score 0 after 2 turns")


def test_evaluate_refuses_missing_models_before_playing(project, capsys):
    from stages import evaluate

    project.write_params({"eval": {"agents": ["random", "ppo"], "episodes": 1, "max_steps": 2}})
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([])
    assert exit_info.value.code == 2
    assert "model directory models/quantized does not exist" in capsys.readouterr().err
    assert not (project / "reports").exists()  # the random agent did not play and write first


def test_run_line_says_when_runs_reused_a_warm_start():
    """A run that trained PPO on another run's collect data and SFT models names that run,
    and the line drops "from scratch"."""
    scratch = {"0": {"commit": "1" * 40, "seconds": 600}}
    assert results_table.run_line(scratch) == (
        "Runs (from scratch, on a 2-core CPU): seed 0: commit `1111111`, 10 min."
    )
    threaded = {"0": {"commit": "1" * 40, "seconds": 600, "torch_threads": 2}}
    assert results_table.run_line(threaded) == (
        "Runs (from scratch, on a 2-core CPU): seed 0: commit `1111111`, 10 min, 2 torch threads."
    )
    reused = {"0": {"commit": "2" * 40, "seconds": 1800, "warm_start": "`x/seed-0`"}}
    assert results_table.run_line(reused) == (
        "Runs (on a 2-core CPU): seed 0: commit `2222222`, PPO and evaluation only, "
        "on the warm start of `x/seed-0`, 30 min."
    )


def test_protocol_line_names_only_the_baselines_that_played():
    p = {"greedy_episodes": 1, "episodes": 20, "temperature": 0.7, "max_steps": 100,
         "game_seed": 12, "seed": 0, "action_mode": "constrained", "model_profile": "tiny",
         "walkthrough_data_in_training": False}  # fmt: skip
    assert "; random 20 episodes, walkthrough 1; at most 100" in protocol_line(
        p, ["random", "walkthrough", "ppo"]
    )
    assert "; random and explorer 20 episodes; at most" in protocol_line(p, ["random", "explorer"])
    assert "temperature 0.7; at most 100 steps each" in protocol_line(p, ["ppo"])
