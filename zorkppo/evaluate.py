"""Evaluation: agents play batched episodes; metrics, Markdown transcripts and plots.

All of an agent's episodes run at once (one game per worker process), so a language-model
agent makes one batched call per turn. Episodes end at death, victory or `max_steps`.
A command is counted valid when it changed the world (Jericho's own notion of a valid
action), which needs no extra valid-action search.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from zorkppo import paths
from zorkppo.agents import Agent, make_agent
from zorkppo.envs import VecGames
from zorkppo.game import GameState
from zorkppo.model import (
    load_adapter,
    load_causal_lm,
    load_tokenizer,
    require_adapter,
    require_model,
)
from zorkppo.modes import action_mode
from zorkppo.policy import Policy, ValueHead
from zorkppo.prompt import Turn, render_prompt
from zorkppo.records import TableSchema, atomic_path
from zorkppo.rewards import EpisodeTracker

EPISODES = TableSchema(
    name="eval_episodes",
    version=2,
    arrow=pa.schema(
        [
            ("agent", pa.string()),
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

# agent -> (model directory, adapter directory or None)
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
    # The value head is unused when only choosing commands.
    return Policy(
        model,
        tokenizer,
        ValueHead(model.config.hidden_size).to(device),
        params.prompt.max_prompt_tokens,
        params.eval.max_new_tokens,
        params.eval.temperature,
        max_batch_tokens=params.ppo.max_batch_tokens,
    )


# chooser(active game indices, their states, their trackers, games) -> one command each
Chooser = Callable[[list[int], list[GameState], list[EpisodeTracker], VecGames], list[str]]


def play_episodes(
    agent: str,
    games: VecGames,
    choose: Chooser,
    max_steps: int,
    history_turns: int,
    episodes: int | None = None,
) -> list[dict]:
    """`episodes` episodes (default: one per game) in games 0..episodes-1, all at once."""
    active = list(range(games.count if episodes is None else episodes))
    states = games.call("reset", only=active)
    trackers = [EpisodeTracker(history_turns, episode=i) for i in active]
    for tracker, state in zip(trackers, states, strict=True):
        tracker.start(state)
    rows = []
    for step in range(max_steps):
        if not active:
            break
        commands = [
            c or "look"
            for c in choose(
                active, [states[i] for i in active], [trackers[i] for i in active], games
            )
        ]
        after = games.call("step", [(c,) for c in commands], only=active)
        for i, command, state in zip(active, commands, after, strict=True):
            before = states[i]
            trackers[i].steps += 1
            trackers[i].history.append(Turn(command, state.observation))
            rows.append(
                {
                    "agent": agent,
                    "episode": i,
                    "step": step,
                    "location": before.location,
                    "observation": before.observation,
                    "action": command,
                    "reply": state.observation,
                    "reward": state.reward,
                    "score": state.score,
                    "moves": state.moves,
                    "done": state.done,
                    "died": state.died,
                    "world_changed": state.world_hash != before.world_hash,
                }
            )
            states[i] = state
        active = [i for i in active if not states[i].done]
    return rows


class _GameInWorker:
    """One game of a VecGames, as the save/step/restore object a baseline agent looks ahead with."""

    def __init__(self, games: VecGames, index: int):
        self.games, self.index = games, index

    def save(self):
        return self.games.call("save", only=[self.index])[0]

    def step(self, command: str) -> GameState:
        return self.games.call("step", [(command,)], only=[self.index])[0]

    def restore(self, saved) -> GameState:
        return self.games.call("restore", [(saved,)], only=[self.index])[0]


def agent_chooser(name: str, seed: int) -> Chooser:
    """A baseline agent of zorkppo.agents (random, explorer) over Jericho's valid actions;
    game i's agent is seeded with seed * 1000 + i."""
    agents: dict[int, Agent] = {}

    def choose(active, states, trackers, games):
        valid = games.call("valid_actions", only=active)
        commands = []
        for i, state, tracker, actions in zip(active, states, trackers, valid, strict=True):
            game = _GameInWorker(games, i)
            if i not in agents or tracker.steps == 0:  # a new episode: a fresh agent
                agents[i] = make_agent(name)
                agents[i].reset(game, seed * 1000 + i)
            commands.append(agents[i].act(game, state, actions) or "look")
        return commands

    return choose


def walkthrough_chooser(walkthrough: list[str]) -> Chooser:
    def choose(active, states, trackers, games):
        return [walkthrough[t.steps] if t.steps < len(walkthrough) else "look" for t in trackers]

    return choose


def policy_chooser(
    policy, tokenizer, generator, mode_name: str, max_candidates: int, seed: int = 0
) -> Chooser:
    """generator None: greedy decoding. The action mode acts as in PPO's rollouts."""
    rng = random.Random(seed)
    mode = action_mode(mode_name, max_candidates)

    def choose(active, states, trackers, games):
        prompts = [
            render_prompt(s.description, s.inventory, list(t.history), tokenizer)
            for s, t in zip(states, trackers, strict=True)
        ]
        valid = games.call("valid_actions", only=active) if mode.needs_valid_actions else None
        return mode.choose(policy, prompts, valid, generator, rng)

    return choose


def protocol_line(p: dict, agents=("random",)) -> str:
    """The evaluation protocol in one sentence (transcripts, plots and the README table)."""
    baselines = " and ".join(a for a in ("random", "explorer") if a in agents) or "random"
    return (
        f"Protocol: each model agent plays {p['greedy_episodes']} greedy episode (game and policy "
        f"are deterministic) and {p['episodes']} sampled at temperature {p['temperature']}; "
        f"{baselines} {p['episodes']} episodes, walkthrough 1; at most {p['max_steps']} steps each, "
        f"game seed {p['game_seed']}, run seed {p['seed']}, {p['action_mode']} mode, model profile "
        f"`{p['model_profile']}`, walkthrough data used in training: "
        f"{'yes' if p['walkthrough_data_in_training'] else 'no'}."
    )


def summarize(rows: list[dict]) -> dict:
    episodes: dict[int, list[dict]] = {}
    for row in rows:
        episodes.setdefault(row["episode"], []).append(row)
    finals = [ep[-1]["score"] for ep in episodes.values()]
    return {
        "episodes": len(episodes),
        "score_mean": statistics.fmean(finals),
        "score_std": statistics.pstdev(finals),
        "score_max": max(finals),
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


def bar_chart(metrics: dict, path: Path, title: str) -> None:
    """Per agent: the greedy score and the sampled mean (± std, max) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    for offset, decoding, color in ((-0.2, "greedy", "#55a868"), (0.2, "sample", "#4c72b0")):
        runs = [metrics[n].get(decoding) for n in names]
        ax.bar(
            [i + offset for i, m in zip(x, runs, strict=True) if m],
            [m["score_mean"] for m in runs if m],
            width=0.4,
            yerr=[m["score_std"] for m in runs if m],
            capsize=3,
            color=color,
            label=f"{decoding} (mean ± std)",
        )
    sampled = [
        (i + 0.2, metrics[n]["sample"]["score_max"])
        for i, n in zip(x, names, strict=True)
        if "sample" in metrics[n]
    ]
    ax.scatter(
        [p for p, _ in sampled],
        [m for _, m in sampled],
        color="#dd8452",
        zorder=3,
        label="sampled max",
    )
    ax.set_xticks(list(x), names)
    ax.set_ylabel("Zork I score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save_png(fig, path)


def curve_chart(
    series: dict[str, list[tuple[int, float]]],
    path: Path,
    title: str,
    xlabel: str = "PPO iteration",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, points in series.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    """Write atomically, without the matplotlib version in the metadata (byte-identical reruns)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
