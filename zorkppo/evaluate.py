"""Evaluation: agents play batched episodes; metrics, Markdown transcripts.

All of an agent's episodes run at once (one game per worker process), so a language-model
agent makes one batched call per turn. Episodes end at death, victory or `max_steps`.
A command is counted valid when it changed the world (Jericho's own notion of a valid
action), which needs no extra valid-action search.
"""

from __future__ import annotations

import random
import statistics

import pyarrow as pa
import torch

from zorkppo import paths
from zorkppo.agents import BASELINES, AgentChooser, make_agent
from zorkppo.config import agent_and_mode
from zorkppo.episodes import Episodes, Step, play_episodes
from zorkppo.model import (
    load_adapter,
    load_causal_lm,
    load_tokenizer,
    require_adapter,
    require_model,
)
from zorkppo.modes import action_mode
from zorkppo.policy import Policy
from zorkppo.records import TableSchema

EPISODES = TableSchema(
    name="eval_episodes",
    version=3,  # v3: game_seed (eval.game_seeds)
    arrow=pa.schema(
        [
            ("agent", pa.string()),
            ("game_seed", pa.int32()),
            ("episode", pa.int32()),
            ("step", pa.int32()),
            ("location", pa.string()),
            ("observation", pa.string()),
            ("action", pa.string()),
            ("reply", pa.string()),
            ("reward", pa.int32()),
            ("score", pa.int32()),
            ("moves", pa.int32()),
            ("done", pa.bool_()),
            ("died", pa.bool_()),
            ("world_changed", pa.bool_()),
            ("decoding", pa.string()),  # greedy | sample
        ]
    ),
)

# model agent -> (model directory, adapter directory or None)
MODEL_AGENTS = {
    "base": (paths.BASE_MODEL, None),
    "sft": (paths.BASE_MODEL, paths.SFT_ADAPTER),
    "quantized": (paths.QUANTIZED_MODEL, None),
    "ppo": (paths.QUANTIZED_MODEL, paths.PPO_MODEL / "adapter"),
}


def require_agent_models(agents: list[str]) -> None:
    """Every model the agents play with is in place, before any game is played."""
    for agent in agents:
        if agent in MODEL_AGENTS:
            model_dir, adapter = MODEL_AGENTS[agent]
            require_model(model_dir)
            if adapter is not None:
                require_adapter(adapter)


def load_agent_policy(agent: str, params, device) -> Policy:
    model_dir, adapter = MODEL_AGENTS[agent]
    model = load_causal_lm(model_dir, device, params.model.dtype)
    if adapter is not None:
        model = load_adapter(model, adapter)
    model.eval()
    tokenizer = load_tokenizer(model_dir)
    return Policy(  # no value head: evaluation only chooses commands
        model,
        tokenizer,
        None,
        params.prompt.max_prompt_tokens,
        params.eval.max_new_tokens,
        params.eval.temperature,
        max_batch_tokens=params.ppo.max_batch_tokens,
    )


def policy_chooser(policy: Policy, mode_name: str, max_candidates: int, generator, seed=0):
    """A language-model agent: its action mode acts as in PPO's rollouts (generator None:
    greedy decoding)."""
    rng = random.Random(seed)  # rank mode's candidate draws
    mode = action_mode(mode_name, max_candidates)

    def choose(episodes: Episodes, active: list[int]) -> list[str]:
        prompts = episodes.prompts(policy.tokenizer, active)
        valid = episodes.valid_actions(active) if mode.needs_valid_actions else None
        return mode.choose(policy, prompts, valid, generator, rng)

    return choose


def agent_chooser(agent: str, params, decoding: str, walkthrough: list[str], policy=None):
    """The one map from an agent (an `eval.agents` entry) to how it chooses its commands.
    Baselines: the walkthrough, and random and explorer seeded per episode (seed * 1000 +
    episode); model agents: `policy` in the entry's action mode (`base:generate`) or else
    `eval.action_mode`, greedy or sampled at `eval.temperature`."""
    name, mode = agent_and_mode(agent)
    if name in BASELINES:
        return AgentChooser(lambda n: (make_agent(name, walkthrough), params.seed * 1000 + n))
    generator = torch.Generator().manual_seed(params.seed) if decoding == "sample" else None
    ev = params.eval
    return policy_chooser(policy, mode or ev.action_mode, ev.max_candidates, generator, params.seed)


def episode_rows(agent: str, played: list[list[Step]]) -> list[dict]:
    """The evaluation table's rows (EPISODES) of every turn of these episodes."""
    return [
        {
            "agent": agent,
            "episode": step.episode,
            "step": step.step,
            "location": step.before.location,
            "observation": step.before.observation,
            "action": step.command,
            "reply": step.after.observation,
            "reward": step.after.reward,
            "score": step.after.score,
            "moves": step.after.moves,
            "done": step.after.done,
            "died": step.after.died,
            "world_changed": step.world_changed,
        }
        for steps in played
        for step in steps
    ]


def play(agent: str, games, choose, count: int, max_steps: int, history_turns: int) -> list[dict]:
    """`count` evaluation episodes of one agent (at most one per game at a time), as rows."""
    played = play_episodes(Episodes(games, history_turns), choose, count, max_steps)
    return episode_rows(agent, played)


def _run_seeds(seed) -> str:
    """`seed` of one run, or the list of seeds a table averages over."""
    seeds = seed if isinstance(seed, list) else [seed]
    return f"run seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def protocol_line(p: dict, agents=("random", "walkthrough")) -> str:
    """The evaluation protocol in one sentence (transcripts, plots and the README table); it
    names the baselines among `agents`."""
    baselines = " and ".join(a for a in ("random", "explorer") if a in agents)
    played = [f"{baselines} {p['episodes']} episodes"] if baselines else []
    played += ["walkthrough 1"] if "walkthrough" in agents else []
    return (
        f"Protocol: each model agent plays {p['greedy_episodes']} greedy episode (game and policy "
        f"are deterministic) and {p['episodes']} sampled at temperature {p['temperature']}; "
        + (", ".join(played) + "; " if played else "")
        + f"at most {p['max_steps']} steps each, "
        f"game seed {p['game_seed']}, {_run_seeds(p['seed'])}, {p['action_mode']} mode"
        + (" (an `agent:mode` row in that mode)" if any(":" in a for a in agents) else "")
        + f", model profile "
        f"`{p['model_profile']}`, walkthrough data used in training: "
        f"{'yes' if p['walkthrough_data_in_training'] else 'no'}."
    )


def summarize(rows: list[dict]) -> dict:
    """An agent's episodes in figures. Two score measures: the final score (`score_*`: where
    the episode ended, this project's measure) and the highest score reached during the
    episode (`reached_*`: TALES' measure, which a later loss of points does not take back)."""
    episodes: dict[int, list[dict]] = {}
    for row in rows:
        episodes.setdefault(row["episode"], []).append(row)
    finals = [ep[-1]["score"] for ep in episodes.values()]
    reached = [max(0, *(r["score"] for r in ep)) for ep in episodes.values()]
    return {
        "episodes": len(episodes),
        "score_mean": statistics.fmean(finals),
        "score_std": statistics.pstdev(finals),
        "score_max": max(finals),
        "reached_mean": statistics.fmean(reached),
        "reached_max": max(reached),
        "moves_mean": statistics.fmean(ep[-1]["moves"] for ep in episodes.values()),
        "unique_locations_mean": statistics.fmean(
            len({r["location"] for r in ep}) for ep in episodes.values()
        ),
        "valid_command_rate": sum(r["world_changed"] for r in rows) / len(rows),
        "deaths": sum(ep[-1]["died"] for ep in episodes.values()),
    }


def pick_episodes(rows: list[dict]) -> dict[str, list[dict]]:
    """The best episode (highest final score, earliest on ties) and the median one."""
    episodes: dict[int, list[dict]] = {}
    for row in rows:
        episodes.setdefault(row["episode"], []).append(row)
    ranked = sorted(episodes.values(), key=lambda ep: (ep[-1]["score"], -ep[0]["episode"]))
    return {"best": ranked[-1], "median": ranked[(len(ranked) - 1) // 2]}


def transcript_markdown(agent: str, which: str, episode: list[dict], protocol: str) -> str:
    last = episode[-1]
    ending = "died" if last["died"] else ("won" if last["done"] else "step limit")
    lines = [
        f"# {agent}: {which} episode (#{last['episode']}): score {last['score']} in {len(episode)} turns ({ending})",
        "",
        protocol,
        "",
        "```text",
        episode[0]["observation"].strip(),
        "```",
        "",
    ]
    for row in episode:
        lines += [
            f"**Turn {row['step'] + 1}** · {row['location']} · score {row['score']}",
            "",
            "```text",
            f"> {row['action']}",
            row["reply"].strip(),
            "```",
            "",
        ]
    return "\n".join(lines)
