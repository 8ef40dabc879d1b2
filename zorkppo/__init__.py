"""zorkppo: PPO post-training of a causal LM (8-bit + LoRA) to play Zork I."""

__version__ = "0.1.0"
