import pytest
import yaml
from conftest import ROOT
from pydantic import ValidationError

from zorkppo.config import Params, load_params, parse_params
from zorkppo.errors import UserError


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"ppo": {"kl": {"up": 1.5}}} -> {"ppo.kl.up": 1.5}"""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_params_yaml_lists_every_field_at_its_typed_default():
    """One source of defaults: zorkppo/config.py's. params.yaml (what DVC tracks and `-S`
    edits) spells every one of them out, at the same value."""
    written = flatten(yaml.safe_load((ROOT / "params.yaml").read_text()))
    defaults = flatten(Params().model_dump())
    assert sorted(written) == sorted(defaults)  # no field left out, none extra
    different = {k: (written[k], defaults[k]) for k in defaults if written[k] != defaults[k]}
    assert different == {}, "params.yaml value, typed default"


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(UserError) as err:
        parse_params({"collect": {"max_stpes": 5}})
    message = str(err.value)
    assert "unknown key 'collect.max_stpes'" in message
    assert "max_steps" in message and "\n" not in message


def test_unknown_top_level_section():
    with pytest.raises(UserError, match="unknown key 'colect'"):
        parse_params({"colect": {}})


def test_wrong_type_names_the_key():
    with pytest.raises(UserError, match=r"collect.max_steps = 'many' is invalid"):
        parse_params({"collect": {"max_steps": "many"}})


def test_out_of_range_value():
    with pytest.raises(UserError, match="collect.episodes.random"):
        parse_params({"collect": {"episodes": {"random": -1}}})
    with pytest.raises(UserError, match="sft.imitate_best"):
        parse_params({"sft": {"imitate_best": 0}})  # a share of episodes: (0, 1]


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(ValidationError):
        params.seed = 3  # type: ignore[misc]


def test_missing_and_malformed_params_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserError, match="mapping"):
        load_params(bad)


def test_unseen_game_seeds_must_stay_out_of_training():
    assert parse_params({"eval": {"game_seeds": [1, 2]}}).eval.game_seeds == [1, 2]
    with pytest.raises(UserError, match=r"params: eval.game_seeds \[12\] are trained on"):
        parse_params({"eval": {"game_seeds": [12, 2]}})  # game.seed trains when ppo's is empty
    with pytest.raises(UserError, match=r"eval.game_seeds \[3\] are trained on"):
        parse_params({"ppo": {"game_seeds": [3, 4]}, "eval": {"game_seeds": [1, 3]}})
