"""Named experiments: overrides checked before anything runs, and turned into dvc -S flags."""

import pytest
import yaml
from conftest import ROOT

from zorkppo.errors import UserError
from zorkppo.experiment import (
    dvc_flags,
    load_experiment,
    only_seeds,
    stage_seconds,
    with_overrides,
)


def test_every_shipped_experiment_is_valid_params():
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        experiment = load_experiment(path, ROOT / "params.yaml")
        assert experiment.name == path.stem, path


def test_overrides_land_in_the_params_and_become_flags(tmp_path):
    spec = {
        "name": "demo",
        "seeds": [3, 4],
        "params": {"sft": {"sources": ["random", "explorer"]}, "ppo": {"kl": {"up": 2.0}}},
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(spec))
    experiment = load_experiment(path, ROOT / "params.yaml")
    assert experiment.seeds == (3, 4) and experiment.params.seed == 3
    assert experiment.params.sft.sources == ["random", "explorer"]
    assert experiment.params.ppo.kl.up == 2.0 and experiment.params.ppo.kl.down == 0.8
    flags = dvc_flags(experiment.overrides)
    assert flags[::2] == ["-S", "-S"]
    assert sorted(flags[1::2]) == ["ppo.kl.up=2.0", "sft.sources=[random, explorer]"]
    assert with_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    assert only_seeds(experiment, None).seeds == (3, 4)
    assert only_seeds(experiment, [4]).seeds == (4,)
    with pytest.raises(UserError, match="--seed 5: experiment demo runs seeds \\[3, 4\\]"):
        only_seeds(experiment, [5])


def test_a_typo_in_an_experiment_stops_before_it_runs(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"name": "typo", "params": {"ppo": {"lerning_rate": 1}}}))
    with pytest.raises(UserError, match="unknown key 'ppo.lerning_rate'"):
        load_experiment(path, ROOT / "params.yaml")
    path.write_text(yaml.safe_dump({"params": {}}))
    with pytest.raises(UserError, match="needs `name`"):
        load_experiment(path, ROOT / "params.yaml")


def test_stage_seconds_run_from_one_stage_line_to_the_next():
    """Hand times: rom starts at 10, collect at 12.4 (rom 2 s), ppo at 20 (collect 8 s,
    rounded from 7.6), the run ends at 50.6 (ppo 31 s); other lines and an up-to-date stage
    (no "Running stage" line) add nothing."""
    lines = [
        (9.0, "Stage 'base' didn't change, skipping\n"),
        (10.0, "Running stage 'rom':\n"),
        (11.0, "> python -m stages.rom\n"),
        (12.4, "Running stage 'collect':\n"),
        (20.0, "Running stage 'ppo':\n"),
        (21.0, "ppo: iteration 1/6\n"),
    ]
    assert stage_seconds(lines, ended=50.6) == {"rom": 2, "collect": 8, "ppo": 31}
    assert stage_seconds([], ended=5.0) == {}
