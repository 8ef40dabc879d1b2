"""Artifact locations, relative to the project root (where dvc.yaml is)."""

from pathlib import Path

ROM = Path("data/roms/zork1.z5")
TRAJECTORIES = Path("data/trajectories.parquet")
REPORTS = Path("reports")
COLLECT_REPORT = REPORTS / "collect.json"
BASE_MODEL = Path("models/base")
SFT_ADAPTER = Path("models/sft")
SFT_CHECKPOINTS = Path("models/.sft-checkpoints")  # the trainer's, while a run is unfinished
BASE_REPORT = REPORTS / "base.json"
SFT_REPORTS = REPORTS / "sft"
QUANTIZED_MODEL = Path("models/quantized")
QUANTIZE_REPORT = REPORTS / "quantize.json"
PPO_MODEL = Path("models/ppo")
ROLLOUTS = Path("data/rollouts")
PPO_REPORTS = REPORTS / "ppo"
PPO_CURVE = PPO_REPORTS / "curve.tsv"  # the learning curve (ppo.curve)
PPO_CURVE_PNG = PPO_REPORTS / "learning_curve.png"
PPO_TIMING = REPORTS / "timing/ppo_env_steps_per_s.tsv"  # not a DVC output: wall-clock
EVAL_REPORTS = REPORTS / "eval"
