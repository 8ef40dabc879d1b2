"""Typed params: params.yaml -> frozen, validated config objects that reject unknown keys.

A typo in `dvc exp run -S ppo.lerning_rate=...` must fail loudly, so every section
forbids extra keys and the error is one line naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zorkppo.errors import UserError

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class GameParams(Section):
    rom_path: str = ""  # local zork1.z5; empty: $ZORK_ROM, then rom_url
    rom_url: str = (
        "https://github.com/BYU-PCCL/z-machine-games/raw/master/jericho-game-suite/zork1.z5"
    )
    rom_md5: str = "b732a93a6244ddd92a9b9a3e3a46c687"
    seed: int = 12  # the game's own RNG seed; Jericho's walkthrough wins only with 12


class CollectSources(Section):
    walkthrough: int = Field(1, ge=0)
    random: int = Field(2, ge=0)
    explorer: int = Field(2, ge=0)
    human: int = Field(0, ge=0)  # reads commands from stdin; keep 0 for `dvc repro`


class CollectParams(Section):
    episodes: CollectSources = CollectSources()
    max_steps: int = Field(100, ge=1)
    workers: int = Field(2, ge=1)


class SplitParams(Section):
    heldout_fraction: float = Field(0.2, gt=0, lt=1)  # of episodes, never of rows


class TinyModelParams(Section):
    vocab_size: int = Field(2000, ge=300)
    hidden_size: int = Field(256, ge=16)
    intermediate_size: int = Field(704, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    max_positions: int = Field(1024, ge=64)
    pretrain_steps: int = Field(150, ge=0)
    pretrain_batch_size: int = Field(16, ge=1)
    pretrain_seq_len: int = Field(128, ge=8)
    pretrain_learning_rate: float = Field(1e-3, gt=0)


HUB_PROFILES = {  # name and pinned revision of the presets; `hub` takes model.name/revision
    "qwen7b": ("Qwen/Qwen2.5-7B-Instruct", "a09a35458c702b33eeacc393d103063234e8bc28"),
}


class ModelParams(Section):
    profile: Literal["tiny", "hub", "qwen7b"] = "tiny"
    name: str = ""  # hub model id, profile `hub`
    revision: str = ""  # pinned commit, profile `hub`
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # bf16 is ~20x slower on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tiny: TinyModelParams = TinyModelParams()

    def hub_reference(self) -> tuple[str, str]:
        if self.profile in HUB_PROFILES:
            return HUB_PROFILES[self.profile]
        if not self.name:
            raise UserError(
                "model.profile is 'hub' but model.name is empty: set -S model.name=ORG/MODEL"
            )
        return self.name, self.revision


class PromptParams(Section):
    history_turns: int = Field(3, ge=1)
    max_prompt_tokens: int = Field(384, ge=16)


class LoraParams(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]


class SftParams(Section):
    sources: list[Literal["walkthrough", "random", "explorer", "human"]] = [
        "walkthrough",
        "random",
        "explorer",
        "human",
    ]
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lora: LoraParams = LoraParams()
    max_new_tokens: int = Field(10, ge=1)


class Params(Section):
    seed: int = 0
    game: GameParams = GameParams()
    collect: CollectParams = CollectParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    prompt: PromptParams = PromptParams()
    sft: SftParams = SftParams()


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        section = _section_of(err["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "?"
        where = ".".join(str(p) for p in err["loc"][:-1]) or "top level"
        return f"{source}: unknown key '{key}' (allowed in {where}: {allowed})"
    return f"{source}: {key} = {err.get('input')!r} is invalid: {err['msg']}"


def _section_of(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def parse_params(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise UserError(_describe(exc, source)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run from the project root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, source=str(path))


def dump_defaults() -> dict:
    return Params().model_dump()
