import pytest
import yaml
from pydantic import ValidationError

from zorkppo.config import Params, load_params, parse_params
from zorkppo.errors import UserError


def test_params_yaml_matches_the_typed_defaults():
    params = load_params("params.yaml")
    assert isinstance(params, Params)
    assert params.collect.max_steps == 100
    assert params.game.seed == 12


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


def test_exploration_needs_a_mode_with_valid_actions():
    with pytest.raises(UserError, match="ppo.explore = 0.1 is invalid.*rank or constrained"):
        parse_params({"ppo": {"explore": 0.1}})  # action_mode defaults to generate
    assert parse_params({"ppo": {"action_mode": "constrained", "explore": 0.1}}).ppo.explore == 0.1


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
