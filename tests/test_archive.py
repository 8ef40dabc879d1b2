"""The archive of reached states (ppo.archive, zorkppo.archive): what it keeps, which cell a
restart returns to, and that a returned game goes on exactly as the one that got there."""

import random

import pytest
from toy_room import ToyRoom

from zorkppo.archive import Archive, Cell, carried
from zorkppo.envs import VecGames, zork_factory
from zorkppo.episodes import Episodes

OPENING = ["N", "N", "U", "Get egg", "D", "S", "E", "Open window"]  # the walkthrough's


@pytest.fixture
def zork(rom_path):
    episodes = Episodes(VecGames(zork_factory(str(rom_path), 12), 2, processes=False), 2)
    episodes.start()
    return episodes


def test_a_game_returned_to_a_cell_goes_on_exactly_as_the_game_that_reached_it(zork):
    archive = Archive()
    for command in OPENING[:3]:  # north, north, up: the branch beside the nest
        steps = zork.step([command, "look"])
        archive.record(zork, steps, max_steps=100)
    cell = archive.cells[("Up a Tree", 0)]
    assert cell.steps == 3 and [t.action for t in cell.episode.history] == ["N", "U"]
    original = []
    for command in OPENING[3:]:  # game 0 goes on from the branch
        prompt = zork.prompts(None, only=[0])[0]
        (step,) = zork.step([command], only=[0])
        original.append((prompt, step.after, step.step, step.world_changed))
    assert original[0][1].score == 5  # `get egg` scores
    zork.resume([1], [cell.save], [cell.episode], ["Up a Tree @ 0"])
    assert zork.current[1].start == "Up a Tree @ 0" and zork.current[1].number == 2
    returned = []
    for command in OPENING[3:]:
        prompt = zork.prompts(None, only=[1])[0]
        (step,) = zork.step([command], only=[1])
        returned.append((prompt, step.after, step.step, step.world_changed))
    assert returned == original  # prompts, states (score, text, world hash), turn numbers


def test_the_archive_keeps_the_shortest_way_into_each_cell(zork):
    archive = Archive()
    assert archive.record(zork, zork.step(["N", "look"]), max_steps=100) == 2
    assert {k: c.steps for k, c in archive.cells.items()} == {
        ("North House", 0): 1,  # Jericho's room names
        ("West House", 0): 1,
    }
    assert archive.record(zork, zork.step(["look", "look"]), max_steps=100) == 0  # longer ways
    assert archive.record(zork, zork.step(["N", "N"]), max_steps=100) == 1  # game 0: a new room
    assert archive.cells[("Forest Path", 0)].steps == 3
    assert archive.record(zork, zork.step(["N", "N"]), max_steps=4) == 0  # no turn left after


def test_cell_weights_and_draws_hand_values():
    """weight = (1 + rank of the cell's score among the archive's scores) / sqrt(1 + chosen)"""
    archive = Archive()
    for name, score, chosen in (("A", 0, 0), ("B", 10, 3), ("C", 10, 0), ("D", 35, 8)):
        archive.cells[(name, score)] = Cell(name, score, 1, None, None, chosen)
    assert archive.weights() == [1.0, 1.0, 2.0, 1.0]  # ranks 0, 1, 1, 2
    rng, drawn = random.Random(0), []
    for _ in range(2000):
        drawn.append(archive.choose(rng).location)
    counts = {name: drawn.count(name) for name in "ABCD"}
    # C starts twice as likely as the others, and every draw lowers the drawn cell's weight:
    # over many draws the counts spread to even the weights out
    assert counts["C"] > counts["A"] and counts["D"] > counts["A"]
    assert archive.cells[("A", 0)].chosen == counts["A"]
    assert sum(c.chosen for c in archive.cells.values()) == 2000 + 11


def test_restarts_return_with_the_share_asked_for_and_start_over_otherwise():
    episodes = Episodes(VecGames(ToyRoom, 4, processes=False), 2)
    episodes.start()
    archive, rng = Archive(), random.Random(0)
    assert archive.restart(episodes, [0, 1], 1.0, rng) == []  # nothing archived yet
    archive.record(episodes, episodes.step(["look"] * 4), max_steps=10)
    assert len(archive) == 1  # the vault, score 0
    assert archive.restart(episodes, [0, 1, 2, 3], 1.0, rng) == [0, 1, 2, 3]
    assert {e.start for e in episodes.current} == {"Vault @ 0"}
    assert all(e.steps == 1 for e in episodes.current)  # they go on after the archived turn
    assert archive.restart(episodes, [0, 1, 2, 3], 0.0, rng) == []
    assert {e.start for e in episodes.current} == {""}


def test_with_inventory_a_cell_is_also_what_the_player_carries(zork):
    """Game 0 takes the leaflet, game 1 does not: at West of House, score 0, they are one cell
    by room and score, two with `inventory`. The order things were taken in does not count."""
    by_room, with_inventory = Archive(), Archive(inventory=True)
    steps = zork.step(["open mailbox", "open mailbox"])
    steps = zork.step(["take leaflet", "look"])
    assert by_room.record(zork, steps, max_steps=100) == 2  # ... then one cell for both
    assert list(by_room.cells) == [("West House", 0)]
    assert with_inventory.record(zork, steps, max_steps=100) == 2
    carrying = {key[2] for key in with_inventory.cells}
    assert len(with_inventory.cells) == 2 and len(carrying) == 2
    assert carried("You are carrying:\n  A leaflet\n  A lamp") == carried(
        "You are carrying:\n  A lamp\n  A leaflet"
    )


def test_what_happens_in_the_inventory_turn_is_not_carried():
    """`inventory` takes a game turn, and its reply tells what happened in it: those lines are
    not things carried (they split one place into many cells before). Replies as the engine
    writes them; what a thing contains is carried too."""
    lamp = "You are carrying:\n  A sword\n  A brass lantern (providing light)"
    assert carried(lamp) == ("A brass lantern (providing light)", "A sword")
    assert carried(lamp + "\nThe axe gets you right in the side. Ouch!") == carried(lamp)
    assert (
        carried("You are empty-handed.\nYou hear in the distance the chirping of a song bird.")
        == ()
    )
    assert carried("You are empty-handed.") == ()
    assert carried(
        "You are carrying:\n  A bird's nest\n  The bird's nest contains:\n    A jewel-encrusted egg"
    ) == ("A bird's nest", "A jewel-encrusted egg", "The bird's nest contains:")
