"""zorkppo.compare: the figures of a paired study, counted on hand-written episodes."""

import json

import pandas as pd
import pytest

from zorkppo import paths
from zorkppo.compare import (
    episode_figures,
    main,
    markdown_table,
    run_figures,
    training_figures,
)
from zorkppo.errors import UserError
from zorkppo.evaluate import EPISODES
from zorkppo.records import write_table


def turn(episode, step, action, score, reply="", died=False, decoding="sample", agent="ppo"):
    return {
        "agent": agent,
        "game_seed": 12,
        "episode": episode,
        "step": step,
        "location": "Cellar",
        "observation": "",
        "action": action,
        "reply": reply,
        "reward": 0,
        "score": score,
        "moves": step + 1,
        "done": died,
        "died": died,
        "world_changed": True,
        "decoding": decoding,
    }


# Sampled episode 0 lights the lamp, drops everything and dies to the grue at 30; episode 1
# takes the painting (44) and lives; the greedy episode and the other agent's would count
# for everything if the filter let them through.
ROWS = [
    turn(0, 0, "turn on lantern", 25),
    turn(0, 1, "put down all", 25),
    turn(0, 2, "north", 30, reply="Oh, no! You have been eaten by a grue.", died=True),
    turn(1, 0, "east", 40),
    turn(1, 1, "take painting", 44),
    turn(0, 0, "put down all", 50, reply="grue", died=True, decoding="greedy"),
    turn(0, 0, "light lamp", 50, reply="grue", died=True, agent="sft"),
]


def test_episode_figures_count_the_agents_sampled_episodes():
    figures = episode_figures(pd.DataFrame(ROWS), "ppo", above=40)
    assert figures == {
        "evaluation episodes died": "1 / 2",
        "of them to the grue": "1 / 2",
        "lit the lamp": "1 / 2",
        "typed `put down all`": "1 / 2",
        "turns of `put down all`": "1 / 5",
        "scored above 40": "1 / 2",
    }
    assert episode_figures(pd.DataFrame(ROWS), "ppo", above=44)["scored above 44"] == "0 / 2"


def test_training_figures():
    rollouts = pd.DataFrame(
        {
            "done": [False, True, False, True, True],
            "death": [0, -10, 0, 0, -10],
            "game_score": [40, 30, 44, 44, 5],
        }
    )
    assert training_figures(rollouts, above=40) == {
        "training episodes ended / died": "3 / 2",
        "training turns above 40": "2",
    }


def test_markdown_table_puts_a_dash_where_a_run_lacks_a_figure():
    table = markdown_table({"a": {"x": "1", "y": "2"}, "b": {"x": "3"}})
    assert table.splitlines() == ["| | a | b |", "|---|---|---|", "| x | 1 | 3 |", "| y | 2 | - |"]


def metrics(greedy, sampled, unseen):
    def run(g, s):
        return {"greedy": {"score_mean": g}, "sample": {"score_mean": s, "score_std": 1.0}}

    return {
        "protocol": {"game_seed": 12},
        "agents": {"ppo": run(greedy, sampled)},
        "game_seeds": {str(seed): {"ppo": run(g, s)} for seed, (g, s) in unseen.items()},
    }


def test_two_workspaces_side_by_side(tmp_path, capsys):
    for name, figures in {"control": (40, 30.5, 29.0), "arm": (44, 34.25, 33.0)}.items():
        ws = tmp_path / name
        (ws / paths.EVAL_REPORTS).mkdir(parents=True)
        greedy, sampled, unseen = figures
        report = metrics(greedy, sampled, {1: (30, unseen), 2: (40, unseen + 2)})
        (ws / paths.EVAL_REPORTS / "metrics.json").write_text(json.dumps(report))
        write_table(ROWS, ws / paths.EVAL_REPORTS / "episodes.parquet", EPISODES)
    main([str(tmp_path / "control"), str(tmp_path / "arm")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| | control | arm |"
    assert "| seed 12 sampled | 30.5 ± 1.0 | 34.2 ± 1.0 |" in lines
    assert "| seed 2 greedy / sampled | 40 / 31.0 | 40 / 35.0 |" in lines
    assert "| unseen sampled mean | 30.0 | 34.0 |" in lines
    assert "| of them to the grue | 1 / 2 | 1 / 2 |" in lines


def test_a_workspace_without_an_evaluation_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="run `dvc repro evaluate` in"):
        run_figures(tmp_path, "ppo", 40)
    (tmp_path / paths.EVAL_REPORTS).mkdir(parents=True)
    (tmp_path / paths.EVAL_REPORTS / "metrics.json").write_text(json.dumps(metrics(1, 1, {})))
    with pytest.raises(UserError, match="agent 'sft' is not in this evaluation"):
        run_figures(tmp_path, "sft", 40)
