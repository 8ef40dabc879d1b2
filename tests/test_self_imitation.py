"""Self-imitation (ppo.self_imitation, zorkppo.self_imitation): which ways are kept, that a
game returned to an archived cell carries the way from the game's start, and that imitating
the best ways raises their commands when PPO's reward alone would not."""

import copy
import random

from ppo_helpers import best_command_probability, ppo_settings, run_iterations, tiny_policy
from test_real_game_learning import SCORING, branch, command_probabilities
from toy_room import ToyRoom

from zorkppo.archive import Archive
from zorkppo.config import ArchiveParams, RewardParams, SelfImitationParams
from zorkppo.envs import VecGames
from zorkppo.episodes import Episodes, Trail
from zorkppo.game import GameState
from zorkppo.self_imitation import BestWays
from zorkppo.trainer import PpoRun, train_iteration

NO_REWARD = RewardParams(score=0.0, death=0.0)  # PPO sees no reward at all


class Turn:
    """A stand-in for a rollout sample: BestWays reads only `command`."""

    def __init__(self, command: str):
        self.command = command


def way(*commands: str) -> list[Turn]:
    return [Turn(c) for c in commands]


def test_the_best_ways_are_kept_highest_score_then_fewest_turns_hand_case():
    best = BestWays(keep=2)
    assert best.offer(5, way("n", "n", "u", "take egg"))
    assert best.offer(5, way("n", "u", "take egg"))  # the same score in fewer turns
    assert [len(w.samples) for w in best.ways] == [3, 4]
    assert best.offer(10, way("e", "open window", "w", "w", "take", "e", "e", "enter"))
    assert [(w.score, len(w.samples)) for w in best.ways] == [(10, 8), (5, 3)]
    assert not best.offer(5, way("n", "n", "u", "take egg"))  # ranks below both
    assert not best.offer(10, way("e", "open window", "w", "w", "take", "e", "e", "enter"))
    assert len(best) == 2  # the same commands are not kept twice


def test_draws_take_a_way_uniformly_then_a_turn_of_it():
    best = BestWays(keep=2)
    best.offer(10, way("a"))
    best.offer(5, way("b", "c", "d", "e"))
    drawn = [t.command for t in best.draw(4000, random.Random(0))]
    assert 0.45 < drawn.count("a") / 4000 < 0.55  # one way of two, though one turn of five
    assert 0.1 < drawn.count("e") / 4000 < 0.15  # a quarter of the other half


def test_a_copied_trail_is_a_new_list_of_the_same_samples():
    first, second = Turn("north"), Turn("up")
    trail = Trail([first, second])
    twin = copy.deepcopy(trail)
    assert twin is not trail and isinstance(twin, Trail)
    assert twin[0] is first and twin[1] is second
    twin.append(Turn("take"))
    assert len(trail) == 2


def test_a_game_returned_to_a_cell_carries_the_way_from_the_game_start(rom_path):
    """Game 0 climbs to the branch; game 1 returns there from the archive: its trail starts
    with game 0's three turns (the same samples), then goes on with its own."""
    from zorkppo.envs import zork_factory

    episodes = Episodes(VecGames(zork_factory(str(rom_path), 12), 2, processes=False), 2)
    episodes.start()
    archive = Archive()
    for command in ("north", "north", "up"):
        steps = episodes.step([command], only=[0])
        episodes.current[0].trail.append(Turn(command))
        archive.record(episodes, steps, max_steps=100)
    archive.restart(episodes, [1], share=1.0, rng=random.Random(0))
    returned = episodes.current[1]
    assert returned.state.location == "Up a Tree"
    assert [t.command for t in returned.trail] == ["north", "north", "up"]
    assert all(a is b for a, b in zip(returned.trail, episodes.current[0].trail, strict=True))
    returned.trail.append(Turn(SCORING))
    assert len(episodes.current[0].trail) == 3


def test_self_imitation_raises_the_command_that_scored_when_ppo_sees_no_reward():
    """The toy room, PPO's rewards all 0: PPO alone has nothing to learn from, but `pull`
    still raises the game's score, so it is offered as a way and imitated. Measured over
    seeds 0-3, 5 iterations: P(pull) 0.11-0.13 unchanged with coef 0 (to 3 digits), -> 0.19-0.22
    with coef 1 (1.5-1.9x; in the toy room only a command's first token can move)."""
    probabilities = {}
    for coef in (0.0, 1.0):
        policy = tiny_policy()
        start = best_command_probability(policy, "constrained")
        cfg = ppo_settings(
            action_mode="constrained",
            rewards=NO_REWARD,
            self_imitation=SelfImitationParams(coef=coef, keep=2, batch=8),
        )
        history, run, _ = run_iterations(policy, cfg, 5)
        probabilities[coef] = (start, best_command_probability(policy, "constrained"))
        if coef:
            assert run.best_ways.ways[0].commands == (ToyRoom.BEST,)  # the shortest way
            assert history[-1][0]["self_imitation/best_score"] == 10
            assert history[-1][0]["self_imitation/loss"] > 0
        else:
            assert run.best_ways is None
    (start_off, end_off), (start_on, end_on) = probabilities[0.0], probabilities[1.0]
    assert abs(end_off - start_off) < 0.01, probabilities
    assert end_on > 1.4 * start_on, probabilities


def test_self_imitation_on_the_real_game_raises_the_command_that_scores_on_the_branch(rom_path):
    """Zork I: every restart returns to the branch by the nest (the archive, share 1, one-turn
    episodes), PPO's rewards all 0. `take all from nest` is the only command that scores
    there; self-imitation keeps the one-turn way that took it (its trail starts at the
    branch: the archived cell's own trail is empty here) and raises its probability: measured
    0.07 -> 0.23 in 5 iterations (PPO with the score as reward, test_real_game_learning:
    0.07-0.11 -> 0.23-0.27)."""
    episodes, prompt, valid, archive = branch(rom_path)
    policy = tiny_policy(0, prompt=prompt, commands=valid)
    before = command_probabilities(policy, prompt, valid)
    cfg = ppo_settings(
        action_mode="constrained",
        max_steps=1,
        rewards=NO_REWARD,
        target_kl=0.1,
        archive=ArchiveParams(share=1.0),
        self_imitation=SelfImitationParams(coef=1.0, keep=1, batch=8),
    )
    run = PpoRun.start(cfg, policy, seed=0)
    run.archive = archive
    episodes.start()
    metrics = [train_iteration(run, episodes)[0] for _ in range(5)]
    after = command_probabilities(policy, prompt, valid)
    assert all(m["reward/score"] == 0 for m in metrics)  # PPO itself saw nothing
    assert [w.commands for w in run.best_ways.ways] == [(SCORING,)]
    assert after[SCORING] > 2 * before[SCORING] and after[SCORING] > before[SCORING] + 0.1


def test_risk_ranks_a_way_into_danger_below_a_longer_safe_way_hand_case():
    """Two ways to 40: into the cellar in the dark (3 turns) or with the lamp lit (4). Both
    end cells are unseen: the shorter ranks first, as by turns. Once 3 episodes that reached
    the dark cell died and 2 that reached the lit one lived, the dark way costs 3 / (1 - 3/4)
    = 12 turns per safe arrival, the lit one 4: the lit way ranks first at the next offer."""
    dark, lit = ("Cellar", 40, ("A brass lantern",)), ("Cellar", 40, ("A lit lantern",))
    best = BestWays(keep=2, rank="risk")
    assert best.offer(40, way("e", "w", "d"), dark)
    assert best.offer(40, way("e", "w", "light", "d"), lit)
    assert [w.commands[-2] for w in best.ways] == ["w", "light"]
    for episode in range(5):  # the first three reach the dark cellar and die
        cell, died = (dark, True) if episode < 3 else (lit, False)
        best.observe(episode, cell, ended=False, died=False)
        best.observe(episode, cell, ended=True, died=died)  # a cell counts once an episode
    assert best.cells == {dark: [3, 3], lit: [2, 0]}
    assert best.risk(dark) == 0.75 and best.risk(lit) == 0.0 and best.risk(("Attic", 0, ())) == 0
    assert best.cost(best.ways[0]) == 3 / 0.25 and best.cost(best.ways[1]) == 4
    assert not best.offer(10, way("e", "w"), ("Kitchen", 10, ()))  # below both, but ...
    # ... any offer ranks the kept ways again
    assert [w.commands for w in best.ways] == [("e", "w", "light", "d"), ("e", "w", "d")]
    assert not best.visiting  # ended episodes are forgotten
    by_turns = BestWays(keep=2)  # the default: counts or not, fewer turns first
    by_turns.offer(40, way("e", "w", "light", "d"), lit)
    by_turns.offer(40, way("e", "w", "d"), dark)
    by_turns.cells = dict(best.cells)
    by_turns.offer(10, way("e", "w"), ("Kitchen", 10, ()))
    assert [len(w.samples) for w in by_turns.ways] == [3, 4]


class TrapRoom(ToyRoom):
    """The toy room with a lamp: `pull` scores 10 (the episode goes on), `light` lights the
    lamp first. Pulled in the dark, the next command kills; lit, nothing happens after."""

    COMMANDS = ("pull", "light", "look", "wait", "north", "sing", "jump", "listen")

    def reset(self):
        self.lit = self.pulled = False
        return super().reset()

    def step(self, command: str):
        moves, score = self.state.moves + 1, 10 if self.pulled else 0
        dies = self.pulled and not self.lit
        gained = 0
        if command == "light" and not self.pulled:
            self.lit = True
        elif command == "pull" and not self.pulled:
            self.pulled, gained = True, 10
        inventory = "You are carrying:\n  A lit lantern" if self.lit else "You are empty-handed."
        where = "Dark vault" if self.pulled and not self.lit else "Vault"
        self.state = GameState(
            "Eaten in the dark." if dies else "Done.",
            self.DESCRIPTION,
            inventory,
            where,
            score + gained,
            moves,
            gained,
            dies,
            False,
            dies,
            f"{self.lit}{self.pulled}{dies}",
        )
        return self.state


def test_risk_ranking_keeps_the_lit_way_in_a_trap_room():
    """PPO on the trap room (rewards 0, so only the ways' ranking differs between the two
    runs): by turns the kept way is `pull` alone (one turn, then death); by risk, the run's
    own deaths after a dark `pull` rank a way that lights the lamp first (measured: `light`,
    `north`, `pull`)."""
    kept = {}
    for rank in ("turns", "risk"):
        cfg = ppo_settings(
            action_mode="constrained",
            num_envs=8,
            rewards=NO_REWARD,
            self_imitation=SelfImitationParams(coef=1.0, keep=1, batch=8, rank=rank),
        )
        games = VecGames(TrapRoom, cfg.num_envs, processes=False)
        _, run, _ = run_iterations(tiny_policy(commands=TrapRoom.COMMANDS), cfg, 3, games=games)
        kept[rank] = run.best_ways.ways[0].commands
        if rank == "risk":
            dark = ("Dark vault", 10, ())  # empty-handed
            assert run.best_ways.risk(dark) > 0.5, run.best_ways.cells
    assert kept["turns"] == ("pull",)
    assert kept["risk"][-1] == "pull" and "light" in kept["risk"], kept
