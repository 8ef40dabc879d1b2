"""State -> prompt text, and generated text -> one game command. The one owner of the format.

The seed's state representation: the room as `look` shows it, the inventory, the last K
turns (command and the game's reply), then an instruction. Models with a chat template
get it wrapped as a user message; plain models (the tiny one) get the text as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zorkppo.game import clean_command

INSTRUCTION = "What do you do next? Answer with one game command."
SYSTEM = f"You are playing the text adventure Zork I. {INSTRUCTION}"
ACTION_PREFIX = "> "
MAX_TEXT_CHARS = 400  # per block; long game replies would crowd out the rest of the prompt


@dataclass(frozen=True)
class Turn:
    action: str  # "" for the game's opening text
    reply: str


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 3] + "..."


def render_prompt_text(
    description: str, inventory: str, history: Sequence[Turn], instruction: bool = True
) -> str:
    # The recent turns come last, so that a plain prompt ends the way a game transcript does
    # (a reply, then the prompt sign): what the base model was pretrained to continue.
    lines = [
        f"Room: {_clip(description)}",
        f"Inventory: {_clip(inventory)}",
        *([INSTRUCTION] if instruction else []),
        "Recent turns:",
    ]
    for turn in history:
        if turn.action:
            lines.append(f"{ACTION_PREFIX}{turn.action}")
        lines.append(_clip(turn.reply))
    return "\n".join(lines)


def render_prompt(description, inventory, history, tokenizer=None) -> str:
    """The full prompt, ending where the model's command should begin."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        # A chat model: the task as the system message (in place of the template's default,
        # SmolLM2's "helpful AI assistant"), the game's state as the user's message.
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": render_prompt_text(description, inventory, history, False)},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    body = render_prompt_text(description, inventory, history)
    # "\n>" without its space: the space starts the command's first token, as in "> open"
    # (" open"), the way BPE splits transcripts; a prompt ending in a lone " " token would make
    # the model write commands in token splits it never saw ("o", "pen").
    return body + "\n" + ACTION_PREFIX.rstrip()


def completion_text(action: str, tokenizer) -> str:
    """What the model is trained to write after the prompt. A chat model: the command, then
    its own end-of-turn token (its EOS: `<|im_end|>` for SmolLM2 and Qwen2.5). A plain model:
    the prompt ends at ">", so the command's leading space is part of the completion, then a
    newline and EOS, as in its pretraining transcripts."""
    if getattr(tokenizer, "chat_template", None):
        return action + tokenizer.eos_token
    return " " + action + "\n" + (tokenizer.eos_token or "")


def parse_command(generated: str) -> str:
    """The model's text -> one safe game command (first line, no prefix, printable ASCII)."""
    text = generated.strip()
    if text.startswith(">"):
        text = text[1:]
    return clean_command(text).lower()


def history_for_row(episode_rows: Sequence[dict], index: int, turns: int) -> list[Turn]:
    """The last `turns` turns before row `index` of an episode (rows in step order).

    Row i holds the observation that answered row i-1's action, so turn i-1 is
    (rows[i-1].action, rows[i].observation). At step 0 the history is the opening text.
    """
    history = [Turn("", episode_rows[0]["observation"])] if index < turns else []
    for i in range(max(1, index - turns + 1), index + 1):
        history.append(Turn(episode_rows[i - 1]["action"].lower(), episode_rows[i]["observation"]))
    return history[-turns:] if turns > 0 else []
