"""Action modes: how the policy acts on a batch of game states, and rescores what it did.

Each mode is one object with one interface, so the trainer and evaluation never test a
mode's name (`action_mode(name, max_candidates)` builds it):

  act(policy, prompts, valid, generator, rng) -> [Sample]   a rollout turn: the command,
      its log-prob under the policy and the reference, the value, the action distribution
  choose(policy, prompts, valid, generator, rng) -> [str]   evaluation (generator None: greedy)
  rescore(policy, batch) -> {logprob, values, entropy, kl, js}   the PPO update's terms
  kl_units(sample) -> int      what the rollout KL is averaged over (the loss's KL unit)

`valid` is each game's list of Jericho valid actions when `needs_valid_actions`, else None.

- generate: the command is sampled token by token from the whole vocabulary.
- rank (GLAM): a softmax over candidate commands (the valid actions, at most
  max_candidates by a seeded draw) of their summed token log-probs.
- constrained: token by token, but each token only among those that continue one of the
  valid actions (a trie of their tokens), with log-probs renormalised over those tokens.
  Per-token credit like generate, and every command is valid like rank.

One module each (generate.py, rank.py, constrained.py); common.py holds the Sample a turn
leaves and the padding and KL helpers they share.
"""

from __future__ import annotations

from zorkppo.modes.common import Sample
from zorkppo.modes.constrained import CommandTrie, ConstrainedMode
from zorkppo.modes.generate import GenerateMode
from zorkppo.modes.rank import RankMode, draw_candidates, rank_distribution

__all__ = [
    "ActionMode",
    "CommandTrie",
    "ConstrainedMode",
    "GenerateMode",
    "RankMode",
    "Sample",
    "action_mode",
    "draw_candidates",
    "rank_distribution",
]

ActionMode = GenerateMode | RankMode | ConstrainedMode


def action_mode(name: str, max_candidates: int = 8) -> ActionMode:
    """The mode object for a params value (`ppo.action_mode`, `eval.action_mode`)."""
    if name == "generate":
        return GenerateMode()
    if name == "rank":
        return RankMode(max_candidates)
    if name == "constrained":
        return ConstrainedMode()
    raise ValueError(f"unknown action mode {name!r}: use generate, rank or constrained")
