"""A tiny deterministic text game for tests: the same interface as zorkppo.game.ZorkGame."""

from __future__ import annotations

import hashlib

from zorkppo.game import GameState, lookahead


class ToyRoom:
    """A one-room text game with one clearly best command.

    `pull` (the lever) scores 10 and ends the episode; every other command scores 0. The
    room text never changes, so the policy sees the same prompt each turn. Commands are
    single words so that, untrained, a ranking policy starts near uniform over them.
    """

    DESCRIPTION = "Vault\nA small stone vault. A lever sticks out of the wall."
    COMMANDS = ("pull", "look", "wait", "north", "sing", "jump", "listen", "smell")
    BEST = "pull"

    def __init__(self, max_score: int = 10):
        self.max_score = max_score
        self.state: GameState | None = None

    def _state(self, observation: str, reward: int, done: bool, moves: int) -> GameState:
        digest = hashlib.md5(f"{done}".encode()).hexdigest()
        return GameState(
            observation,
            self.DESCRIPTION,
            "You are empty-handed.",
            "Vault",
            reward,
            moves,
            reward,
            done,
            done,
            False,
            digest,
        )

    def reset(self) -> GameState:
        self.state = self._state("You wake up in a vault.", 0, False, 0)
        return self.state

    def step(self, command: str) -> GameState:
        best = command == self.BEST
        reply = "The lever moves; a door opens onto gold!" if best else "Nothing happens."
        self.state = self._state(reply, 10 if best else 0, best, self.state.moves + 1)
        return self.state

    def valid_actions(self) -> list[str]:
        return list(self.COMMANDS)

    lookahead = lookahead

    def save(self):
        return self.state

    def restore(self, saved) -> GameState:
        self.state = saved
        return saved
