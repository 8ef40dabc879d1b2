"""Zork I through Jericho: typed states, safe commands, cached valid actions, save/restore.

Offline facts this module works around (see shared FACTS.md):
- Jericho's object extraction loads spaCy's `en_core_web_sm` and tries to download it.
  We replace it with a regex that calls every word a noun; Jericho then keeps only the
  words in the game's dictionary, which gives the same valid-action classes.
- Control characters in a command segfault or hang frotz with no Python exception, a
  leading backslash is taken by dumb-frotz as an escape command, and Jericho silently
  truncates commands of 198 bytes or more. `step` refuses both; use
  `clean_command` on free text (model output, keyboard input) first.
- `get_valid_actions` costs ~0.3 s a call, so results are cached by world-state hash,
  and its choice of one command per equivalence class follows set order (varies with
  PYTHONHASHSEED), so we rebuild that last step with sorted tie-breaks.
- Its candidate filter (C, one call for all candidates) can loop forever in some game
  states: an explorer evaluation hung 25 minutes in it by the rainbow, on hundreds of
  commands like `eat it` and `wave it`. It runs in chunks in a forked copy of the worker
  that a timer kills; a chunk that hangs is filtered again one candidate at a time, and the
  ones that hang are left out (a warning names them).
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import string
import sys
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from zorkppo.errors import UserError
from zorkppo.rom import verify_rom

# The candidate filter runs in chunks, each with a limit by its number of candidates: it
# takes at most 0.06 ms a candidate (every 5th walkthrough state, up to 5960 candidates, on a
# loaded 2-core CPU) and never returns when it hangs. A chunk past its limit is taken for a
# hang and filtered again one candidate at a time.
FILTER_CHUNK = 256
FILTER_TIMEOUT_BASE_S = 0.5
FILTER_TIMEOUT_PER_CANDIDATE_S = 0.005
MAX_COMMAND_CHARS = 197  # Jericho truncates at >= 198 bytes; the game sees nothing past it.
DEFAULT_GAME_SEED = 12  # The seed Jericho's Zork I walkthrough wins with (350/350).
# Printable ASCII except backslash: dumb-frotz reads a line starting with "\\" as one of its
# own escape commands ("unknown escape char ... Enter \\help"), not as game input.
_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c\\")


def _regex_extract_objs(text: str) -> set[tuple[str, str]]:
    return {(w.lower(), "NOUN") for w in re.findall("[A-Za-z]+", text)}


@cache
def _jericho():
    """Jericho, patched for offline use; imported on first game so that the modules that
    only name game types (prompt, rewards, trainer) import without the engine."""
    import jericho

    # `import jericho.util` can resolve to ctypes.util inside jericho's namespace; patch the
    # module object that jericho.jericho actually uses.
    sys.modules["jericho.util"].extract_objs = _regex_extract_objs
    warnings.filterwarnings("ignore", category=jericho.jericho.TruncatedInputActionWarning)
    return jericho


class CommandError(UserError):
    """A command that would crash, hang or be truncated by the game engine."""


def clean_command(text: str) -> str:
    """Free text -> a command the engine can take: printable ASCII, one line, <= max length."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    printable = "".join(ch if ch in _PRINTABLE else " " for ch in first_line)
    return " ".join(printable.split())[:MAX_COMMAND_CHARS].strip()


def check_command(command: str) -> str:
    bad = sorted({f"\\x{ord(ch):02x}" for ch in command if ch not in _PRINTABLE})
    if bad:
        raise CommandError(
            f"game command {command[:40]!r} contains control, non-ASCII or backslash characters "
            f"{', '.join(bad)} that crash, hang or escape the game engine: pass it through "
            "zorkppo.game.clean_command first"
        )
    if len(command.encode()) > MAX_COMMAND_CHARS:
        raise CommandError(
            f"game command of {len(command)} characters is longer than the {MAX_COMMAND_CHARS} "
            "the game engine accepts: shorten it (clean_command truncates)"
        )
    return command


def lookahead(game, commands: list[str]) -> list[GameState]:
    """The state each command would lead to from where `game` (any game with save, restore
    and step) is; the game is left as it was."""
    saved = game.save()
    outcomes = []
    try:
        for command in commands:
            game.restore(saved)
            outcomes.append(game.step(command))
    finally:
        game.restore(saved)
    return outcomes


@dataclass(frozen=True)
class GameState:
    observation: str  # the game's reply to the last command (the intro after reset)
    description: str  # what `look` shows now (room name and description)
    inventory: str  # what `inventory` shows now
    location: str
    score: int
    moves: int
    reward: int  # score delta of the last command
    done: bool
    won: bool
    died: bool
    world_hash: str

    def to_dict(self) -> dict:
        return asdict(self)


class ZorkGame:
    """One Zork I game. Not thread-safe; use one per process."""

    # world-state hash -> sorted valid actions; shared by every game in this process
    _valid_actions_cache: dict[str, tuple[str, ...]] = {}
    cache_hits = 0
    cache_misses = 0

    def __init__(self, rom_path: str | Path, seed: int = DEFAULT_GAME_SEED):
        self.rom_path = verify_rom(Path(rom_path))
        self.env = _jericho().FrotzEnv(str(self.rom_path), seed=seed)
        self.max_score = self.env.get_max_score()
        self.state: GameState | None = None

    # -- playing --------------------------------------------------------------------
    def reset(self) -> GameState:
        observation, _info = self.env.reset()
        self.state = self._read_state(observation, reward=0)
        return self.state

    def step(self, command: str) -> GameState:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if self.state.done:
            raise RuntimeError("the game is over; call reset()")
        observation, reward, _done, _info = self.env.step(check_command(command))
        self.state = self._read_state(observation, reward=int(reward))
        return self.state

    def walkthrough(self) -> list[str]:
        return list(self.env.get_walkthrough())

    # -- saving ---------------------------------------------------------------------
    def save(self) -> tuple:
        return (self.env.get_state(), self.state)

    def restore(self, saved: tuple) -> GameState:
        engine_state, game_state = saved
        self.env.set_state(engine_state)
        self.state = game_state
        return game_state

    lookahead = lookahead  # the state each command would lead to; the game stays put

    def peek(self, command: str) -> str:
        """The game's reply to `command`, leaving the game exactly as it was."""
        engine_state = self.env.get_state()
        try:
            return self.env.step(check_command(command))[0]
        finally:
            self.env.set_state(engine_state)

    # -- valid actions --------------------------------------------------------------
    def valid_actions(self) -> list[str]:
        """Commands that change the world here, one per outcome class; cached by world hash."""
        if self.state is None:
            raise RuntimeError("call reset() before valid_actions()")
        if self.state.done:
            return []
        key = self.state.world_hash
        cache = ZorkGame._valid_actions_cache
        if key in cache:
            ZorkGame.cache_hits += 1
        else:
            ZorkGame.cache_misses += 1
            cache[key] = self._compute_valid_actions()
        return list(cache[key])

    def _compute_valid_actions(self) -> tuple[str, ...]:
        """Jericho's get_valid_actions, with every set-order tie broken by sorting."""
        env = self.env
        engine_state = env.get_state()
        try:
            groups = env._identify_interactive_objects(use_object_tree=True)
            names = sorted(
                min(aliases, key=lambda obj: (-_object_name_score(obj), obj[0]))[0]
                for aliases in groups.values()
            )
            candidates = env.act_gen.generate_actions(names)
            hanging: list[str] = []
            outcome_classes = filter_candidates(env, candidates, hanging)
            if hanging:
                warnings.warn(
                    f"valid actions at {self.state.location or 'this state'}: left out "
                    f"{hanging}, on which the game engine did not return",
                    stacklevel=2,
                )
            chosen = {
                max(sorted(acts), key=sys.modules["jericho.util"].verb_usage_count)
                for acts in outcome_classes.values()
            }
            return tuple(sorted(chosen))
        finally:
            env.set_state(engine_state)

    @classmethod
    def cache_stats(cls) -> dict[str, float]:
        total = cls.cache_hits + cls.cache_misses
        return {
            "hits": cls.cache_hits,
            "misses": cls.cache_misses,
            "hit_rate": cls.cache_hits / total if total else 0.0,
        }

    # -- internals ------------------------------------------------------------------
    def _read_state(self, observation: str, reward: int) -> GameState:
        env = self.env
        won = bool(env.victory())
        died = bool(env.game_over()) and not won
        done = won or died or bool(env._emulator_halted())
        location = env.get_player_location()
        return GameState(
            observation=observation.strip(),
            description="" if done else self.peek("look").strip(),
            inventory="" if done else self.peek("inventory").strip(),
            location=location.name if location is not None else "",
            score=int(env.get_score()),
            moves=int(env.get_moves()),
            reward=reward,
            done=done,
            won=won,
            died=died,
            world_hash=env.get_world_state_hash(),
        )


def _filter_in_child(env, candidates: list[str], chunk_size: int, merged: dict) -> int:
    """Jericho's candidate filter (outcome diff -> commands) run chunk by chunk in a forked
    copy of this process, which the kernel kills when a chunk runs past its limit (SIGALRM's
    default action reaches a loop inside C, where a Python-level timeout would not). Each
    chunk's classes are merged into `merged` as they arrive; returns how many candidates,
    from the first, were filtered: the chunk after them did not return."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: filter, send each chunk's classes, exit without Python's clean-up
        status = 1
        try:
            os.close(read_end)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            engine_state = env.get_state()
            with os.fdopen(write_end, "wb") as pipe:
                for start in range(0, len(candidates), chunk_size):
                    chunk = candidates[start : start + chunk_size]
                    env.set_state(engine_state)
                    limit_s = FILTER_TIMEOUT_BASE_S + FILTER_TIMEOUT_PER_CANDIDATE_S * len(chunk)
                    signal.setitimer(signal.ITIMER_REAL, limit_s)
                    classes = env._filter_candidate_actions(
                        chunk, use_ctypes=True, use_parallel=False
                    )
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    pickle.dump((len(chunk), dict(classes)), pipe)
                    pipe.flush()
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    filtered = 0
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            try:
                count, classes = pickle.load(pipe)
            except (EOFError, pickle.UnpicklingError):  # the copy exited or was killed
                break
            filtered += count
            for diff, commands in classes.items():
                merged[diff].extend(commands)
    os.waitpid(pid, 0)
    return filtered


def filter_candidates(
    env, candidates: list[str], hanging: list[str], chunk_size: int = FILTER_CHUNK
) -> dict:
    """The candidates' outcome classes (diff -> commands), leaving out, into `hanging`, each
    candidate on which the engine does not return. A chunk that does not return is filtered
    again one candidate at a time, and a fresh copy goes on after it, so each hanging
    candidate costs one time limit. Each candidate is tried from the same saved state, so
    the chunks' classes merge."""
    merged: dict = defaultdict(list)
    start = 0
    while start < len(candidates):
        start += _filter_in_child(env, candidates[start:], chunk_size, merged)
        if start < len(candidates):  # the chunk from `start` on did not return
            stuck = candidates[start : start + chunk_size]
            if chunk_size == 1:
                hanging.extend(stuck)
            else:
                for diff, commands in filter_candidates(env, stuck, hanging, 1).items():
                    merged[diff].extend(commands)
            start += len(stuck)
    return dict(merged)


def _object_name_score(obj: tuple) -> float:
    """Jericho's preference for naming an object: nouns, then proper names, shorter first."""
    score = -0.01 * len(obj[0])
    score += {"NOUN": 1.0, "PROPN": 0.5}.get(obj[1], 0.0)
    return score + (0.1 if obj[2] == "OBJTREE" else 0.0)
