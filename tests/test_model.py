"""Tiny tokenizer/model, prompt format, label masking, LoRA SFT and adapter round trips."""

import math

import pandas as pd
import pytest
import torch
from peft import PeftModel

from zorkppo.config import LoraParams, SftParams
from zorkppo.errors import UserError
from zorkppo.examples import (
    Example,
    best_episodes,
    imitated_rows,
    split_episodes,
    until_last_gain,
)
from zorkppo.lm import IGNORE, collate, completion_loss, encode_example
from zorkppo.model import _source as model_source
from zorkppo.model import (
    build_tiny_llama,
    load_adapter,
    load_causal_lm,
    load_tokenizer,
    pretrain,
    resolve_device,
    train_tokenizer,
    write_manifest,
)
from zorkppo.prompt import Turn, history_for_row, parse_command, render_prompt
from zorkppo.quantize import quantization_config
from zorkppo.sft import train_lora

ROOMS = ["Kitchen", "Attic", "Cellar", "Forest", "Clearing", "Gallery"]
MOVES = ["north", "south", "east", "west", "up", "down"]


def make_examples(rooms, moves):
    return [
        Example(
            f"ep{i}",
            render_prompt(f"{room} A room.", "Nothing.", [Turn("look", room)]),
            move,
            (move,),
        )
        for i, (room, move) in enumerate(zip(rooms, moves, strict=True))
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    texts = [e.prompt + " " + e.action for e in make_examples(ROOMS, MOVES)] * 3
    tokenizer = train_tokenizer(texts, vocab_size=400)
    model = build_tiny_llama(tokenizer, 32, 64, 2, 2, 256)
    # A short pretraining on the prompt text gives LoRA features to adapt, as the base stage does.
    stream = [t for text in texts for t in tokenizer(text)["input_ids"]]
    pretrain(model, stream, steps=40, batch_size=8, seq_len=32, lr=3e-3, seed=0, device="cpu")
    path = tmp_path_factory.mktemp("base")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer, model, path


def test_tokenizer_and_model_round_trip_offline(tiny):
    tokenizer, model, path = tiny
    reloaded_tok = load_tokenizer(path)
    text = "> open mailbox\nOpening the small mailbox reveals a leaflet. \x01é"
    assert reloaded_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded_tok.decode(tokenizer(text)["input_ids"]) == text  # byte-level: lossless
    reloaded = load_causal_lm(path, torch.device("cpu"))
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_prompt_labels_are_masked_and_action_labels_are_not(tiny):
    tokenizer = tiny[0]
    prompt = render_prompt("Kitchen", "A lamp.", [Turn("look", "Kitchen")])
    encoded = encode_example(tokenizer, prompt, "take lamp", max_prompt_tokens=512)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert encoded.labels[:n_prompt] == [IGNORE] * n_prompt
    assert encoded.labels[n_prompt:] == encoded.input_ids[n_prompt:]
    # the prompt ends at ">": the command's leading space is part of what is learned
    assert tokenizer.decode(encoded.labels[n_prompt:]) == " take lamp\n<|eos|>"
    batch = collate([encoded, encode_example(tokenizer, prompt, "n", 512)], tokenizer.pad_token_id)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_long_prompts_are_cut_from_the_left(tiny):
    tokenizer = tiny[0]
    prompt = "start " + "Kitchen " * 200 + "end"
    encoded = encode_example(tokenizer, prompt, "north", max_prompt_tokens=16)
    assert sum(label == IGNORE for label in encoded.labels) == 16
    # the prompt's last 16 tokens stay (where the command follows), its start goes
    kept = tokenizer.decode(encoded.input_ids[:16])
    assert kept.rstrip().endswith("end") and "start" not in kept
    assert encoded.input_ids[:16] == tokenizer(prompt, add_special_tokens=False)["input_ids"][-16:]


def test_prompt_format_and_parsing(tiny):
    prompt = render_prompt(
        "West of House",
        "You are empty-handed.",
        [Turn("", "Welcome"), Turn("north", "North of House")],
    )
    assert prompt.startswith(
        "Room: West of House\nInventory: You are empty-handed.\n"
        "What do you do next? Answer with one game command.\nRecent turns:\nWelcome\n"
    )
    # ends like a transcript: the last reply, then the prompt sign without its space
    assert prompt.endswith("> north\nNorth of House\n>")
    assert parse_command(" Open Mailbox\nmore text") == "open mailbox"
    assert parse_command("> take\x00 lamp") == "take lamp"


def test_history_for_row_pairs_actions_with_their_replies():
    rows = [{"action": f"a{i}", "observation": f"o{i}"} for i in range(6)]
    assert history_for_row(rows, 0, 3) == [Turn("", "o0")]
    assert history_for_row(rows, 2, 3) == [Turn("", "o0"), Turn("a0", "o1"), Turn("a1", "o2")]
    assert history_for_row(rows, 5, 2) == [Turn("a3", "o4"), Turn("a4", "o5")]


def test_split_is_by_episode_and_seeded():
    ids = [f"ep{i}" for i in range(10)]
    train, heldout = split_episodes(ids * 3, 0.2, seed=1)
    assert len(heldout) == 2 and not train & heldout and train | heldout == set(ids)
    assert split_episodes(ids, 0.2, seed=1) == (train, heldout)
    with pytest.raises(UserError, match="at least 2 episodes"):
        split_episodes(["only"], 0.5, 0)


def test_best_episodes_ranks_each_source_by_final_score():
    # (episode, source, [score at each step]): the final score counts, not the best one
    # reached (explorer-b held 40 and died to 30), and ties go to the earlier episode id.
    episodes = [
        ("explorer-a", "explorer", [0, 15, 25]),
        ("explorer-b", "explorer", [15, 40, 30]),
        ("explorer-c", "explorer", [5, 5]),
        ("explorer-d", "explorer", [30]),
        ("random-a", "random", [0, -10]),
        ("random-b", "random", [5]),
    ]
    rows = [
        {"episode_id": episode, "source": source, "step": step, "score": score}
        for episode, source, scores in episodes
        for step, score in enumerate(scores)
    ]
    df = pd.DataFrame(rows).sample(frac=1, random_state=0)  # row order must not matter
    assert best_episodes(df, 1.0) == {e for e, _, _ in episodes}
    # ceil(0.5 x 4) = 2 explorers (b and d tie at 30: b first), ceil(0.5 x 2) = 1 random
    assert best_episodes(df, 0.5) == {"explorer-b", "explorer-d", "random-b"}
    # at least one episode per source
    assert best_episodes(df, 0.01) == {"explorer-b", "random-b"}


def test_imitation_stops_at_each_episodes_last_scoring_turn():
    # (episode, source, [reward at each step]): explorer-a scores at steps 1 and 3, then puts
    # things down; explorer-b never scores; explorer-c dies (-10) after its last points;
    # walkthrough-a is not imitated here
    episodes = [
        ("explorer-a", "explorer", [0, 5, 0, 10, 0, 0]),
        ("explorer-b", "explorer", [0, 0, 0]),
        ("explorer-c", "explorer", [25, 0, -10]),
        ("walkthrough-a", "walkthrough", [5, 5]),
    ]
    rows = pd.DataFrame(
        [
            {"episode_id": e, "source": s, "step": step, "reward": r, "score": sum(rs[: step + 1])}
            for e, s, rs in episodes
            for step, r in enumerate(rs)
        ]
    ).sample(frac=1, random_state=0)
    steps = lambda df: {e: sorted(g.step) for e, g in df.groupby("episode_id")}  # noqa: E731
    assert steps(until_last_gain(rows)) == {
        "explorer-a": [0, 1, 2, 3],
        "explorer-c": [0],
        "walkthrough-a": [0, 1],
    }
    sft = SftParams(sources=["explorer", "walkthrough"], imitate=["explorer"])
    train_ids = {"explorer-a", "explorer-b", "explorer-c", "walkthrough-a"}
    assert steps(imitated_rows(rows, sft, train_ids)) == {
        "explorer-a": [0, 1, 2, 3, 4, 5],
        "explorer-b": [0, 1, 2],
        "explorer-c": [0, 1, 2],
    }
    last_gain = sft.model_copy(update={"imitate_until": "last_gain", "imitate_best": 0.5})
    # the better half of a (15 points) and b (none), then cut at its last gain
    assert steps(imitated_rows(rows, last_gain, train_ids - {"explorer-c"})) == {
        "explorer-a": [0, 1, 2, 3]
    }


def heldout_loss(model, tokenizer, examples):
    batch = collate(
        [encode_example(tokenizer, e.prompt, e.action, 256) for e in examples],
        tokenizer.pad_token_id,
    )
    with torch.no_grad():
        return completion_loss(model, batch).item()


def test_sft_lowers_heldout_loss_and_adapter_reloads(tiny, tmp_path):
    tokenizer, _, path = tiny
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    base = load_causal_lm(path, torch.device("cpu"))
    train = make_examples(ROOMS * 4, MOVES * 4)
    heldout = make_examples(ROOMS[:3], MOVES[:3])  # same room -> same move; unseen episodes
    before = heldout_loss(base, tokenizer, heldout)
    frozen = {n: p.clone() for n, p in base.named_parameters()}
    sft = SftParams(
        epochs=4,
        batch_size=4,
        learning_rate=1e-2,
        lora=LoraParams(r=8, alpha=32, dropout=0.0, target_modules=targets),
    )
    model, updates = train_lora(base, tokenizer, train, sft, max_prompt_tokens=256, seed=0)
    assert updates == 4 * math.ceil(len(train) / 4)
    after = heldout_loss(model, tokenizer, heldout)
    assert after < 0.8 * before
    for name, param in model.named_parameters():  # the base stays frozen, LoRA alone learns
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert param.requires_grad == ("lora_" in name)
        if not param.requires_grad:
            assert torch.equal(param, frozen[base_name]), name

    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(
        load_causal_lm(path, torch.device("cpu")), tmp_path / "adapter"
    )
    ids = torch.tensor([tokenizer(heldout[0].prompt)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_sft_on_an_8bit_base_trains_lora_and_leaves_the_int8_weights(tiny):
    """QLoRA-style SFT (sft.load_in_bits=8): the frozen base stays LLM.int8 and LoRA learns."""
    tokenizer, _, path = tiny
    torch.manual_seed(0)
    base = load_causal_lm(path, torch.device("cpu"), quantization=quantization_config(8))
    train = make_examples(ROOMS * 4, MOVES * 4)
    heldout = make_examples(ROOMS[:3], MOVES[:3])
    before = heldout_loss(base, tokenizer, heldout)
    int8 = {n: p.clone() for n, p in base.named_parameters() if p.dtype == torch.int8}
    sft = SftParams(
        epochs=4,
        batch_size=4,
        learning_rate=1e-2,
        load_in_bits=8,
        gradient_checkpointing=True,
        lora=LoraParams(r=8, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"]),
    )
    model, _ = train_lora(base, tokenizer, train, sft, max_prompt_tokens=256, seed=0)
    assert heldout_loss(model, tokenizer, heldout) < 0.8 * before
    after = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for n, p in model.named_parameters()
    }
    assert int8 and all(torch.equal(after[n], p) for n, p in int8.items())
    # TRL keeps a quantized model's LoRA weights in bf16, as the QLoRA paper does
    assert all(p.dtype == torch.bfloat16 for n, p in after.items() if "lora_" in n)


def test_empty_training_set_is_refused(tiny):
    tokenizer, model, _ = tiny
    with pytest.raises(UserError, match="training set is empty"):
        train_lora(model, tokenizer, [], SftParams(), 16, 0)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_causal_lm(tmp_path / "nope", torch.device("cpu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no model"):
        load_tokenizer(tmp_path / "empty")


def test_damaged_model_files_are_clear_errors(tiny, tmp_path):
    import shutil

    _, _, path = tiny
    broken = tmp_path / "base"
    shutil.copytree(path, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(UserError, match=r"could not load the model from .*base \(.*\): delete"):
        load_causal_lm(broken, torch.device("cpu"))
    (broken / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="could not load the model"):
        load_causal_lm(broken, torch.device("cpu"))
    with pytest.raises(UserError, match="no LoRA adapter at .*sft"):
        load_adapter(load_causal_lm(path, torch.device("cpu")), tmp_path / "sft")


def test_a_hub_model_that_cannot_be_fetched_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # offline (read at import, so patched) and an empty cache: the hub is never tried
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    write_manifest(tmp_path / "base", "nobody/no-such-model", "0" * 40, "float32")
    with pytest.raises(UserError, match=r"hub model nobody/no-such-model@0{40}: check model.name"):
        load_tokenizer(tmp_path / "base")


def test_hub_manifest_points_at_a_pinned_revision(tmp_path):
    write_manifest(
        tmp_path, "Qwen/Qwen2.5-7B-Instruct", "a09a35458c702b33eeacc393d103063234e8bc28", "bfloat16"
    )
    assert model_source(tmp_path) == (
        "Qwen/Qwen2.5-7B-Instruct",
        {"revision": "a09a35458c702b33eeacc393d103063234e8bc28"},
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_but_absent():
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def one_episode(actions: list[str], valid_forms: list[str], valid_actions: list[str]):
    """Trajectory rows of one episode "e": action i answered by "reply i+1"."""
    return pd.DataFrame(
        [
            {
                "episode_id": "e",
                "step": i,
                "observation": f"reply {i}",
                "description": "Room",
                "inventory": "Inv",
                "action": action,
                "valid_action": form,
                "valid_actions": valid_actions,
            }
            for i, (action, form) in enumerate(zip(actions, valid_forms, strict=True))
        ]
    )


def test_trajectory_examples_use_the_episode_history():
    from zorkppo.examples import build_examples, episode_transcripts

    df = one_episode(["North", "South"], ["north", "south"], ["north", "south"])
    examples = build_examples(df, None, history_turns=3)
    assert [e.action for e in examples] == ["north", "south"]
    assert "> north\nreply 1" in examples[1].prompt
    assert episode_transcripts(df) == ["reply 0\n> north\nreply 1\n> south\n"]


def test_scored_heldout_rows_are_spread_over_the_heldout_episodes():
    from zorkppo.config import SplitParams
    from zorkppo.examples import heldout_examples, split_episodes

    actions = [f"go {i}" for i in range(10)]
    df = pd.concat(
        [one_episode(actions, actions, actions).assign(episode_id=f"e{n}") for n in range(4)]
    )
    _, heldout_ids = split_episodes(df.episode_id, 0.5, seed=0)
    everything = heldout_examples(df, SplitParams(heldout_fraction=0.5), 0, None, 2)
    assert (
        sorted({e.episode_id for e in everything}) == sorted(heldout_ids) and len(everything) == 20
    )
    spread = heldout_examples(df, SplitParams(heldout_fraction=0.5, scored_rows=5), 0, None, 2)
    assert spread == everything[::4]  # 5 of 20: every 4th, from both held-out episodes
    assert {e.episode_id for e in spread} == set(heldout_ids)
