import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import teachkit.pretrained as pretrained
from teachkit.pretrained import ModelCard, load_or_train, load_shipped, save_shipped


def _card(name="tiny_linear"):
    return ModelCard(name=name, description="a test model", command="pytest", seed=0,
                     data="none", hardware="cpu", wall_time_s=1.0, results={"acc": 1.0})


def test_save_and_load_round_trip_in_fp16(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path)
    model = torch.nn.Linear(4, 3)
    save_shipped(model, _card(), tmp_path)
    assert pretrained.available() == ["tiny_linear"]
    assert torch.load(tmp_path / "tiny_linear.pt")["weight"].dtype == torch.float16
    fresh = torch.nn.Linear(4, 3)
    card = load_shipped("tiny_linear", fresh)
    assert card.results == {"acc": 1.0} and "pytest" in card.summary()
    assert fresh.weight.dtype == torch.float32
    assert torch.allclose(fresh.weight, model.weight, atol=1e-3)
    assert (tmp_path / "tiny_linear.md").read_text().startswith("# Model card: tiny_linear")


def test_loading_is_strict_and_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path)
    save_shipped(torch.nn.Linear(4, 3), _card(), tmp_path)
    with pytest.raises(ValueError, match="does not fit this model: missing keys"):
        load_shipped("tiny_linear", torch.nn.Sequential(torch.nn.Linear(4, 3)))
    message = "no shipped checkpoint 'nope'; available: \\['tiny_linear'\\]"
    with pytest.raises(ValueError, match=message):
        load_shipped("nope", torch.nn.Linear(4, 3))


def test_a_card_ships_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path)
    pretrained.save_card(_card("history_only"), tmp_path)
    assert pretrained.cards() == ["history_only"] and pretrained.available() == []
    assert pretrained.load_card("history_only").results == {"acc": 1.0}
    with pytest.raises(ValueError, match="no shipped checkpoint 'history_only'"):
        load_shipped("history_only", torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="no shipped model card 'nope'; available: \\['history_only'\\]"):
        pretrained.load_card("nope")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "", ".hidden", "a b", "a\\b", "é"])
def test_a_name_that_is_not_a_plain_file_name_writes_nothing(tmp_path, name):
    shipped = tmp_path / "teachkit" / "pretrained"
    with pytest.raises(ValueError, match=r"checkpoint name .* must be a plain file name"):
        save_shipped(torch.nn.Linear(4, 3), _card(name), shipped)
    with pytest.raises(ValueError, match=r"checkpoint name .* must be a plain file name"):
        pretrained.save_card(_card(name), shipped)
    assert [p for p in tmp_path.rglob("*")] == []  # not even the folder
    with pytest.raises(ValueError, match=r"--ship '\.\./x' must be a plain file name"):
        pretrained.check_shipped_name("../x", "--ship")


def test_every_shipped_name_is_a_plain_name():
    for name in pretrained.cards():
        assert pretrained.check_shipped_name(name) == name


def test_load_or_train_trains_when_nothing_is_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path)
    calls = []
    model, card = load_or_train("absent", torch.nn.Linear(2, 2), train=calls.append)
    assert calls == [model] and card.description == "trained in this session"


@pytest.mark.parametrize("name", pretrained.cards())
def test_shipped_files_are_small_and_carded(name):
    path = pretrained.SHIPPED_DIR / f"{name}.pt"
    assert not path.exists() or path.stat().st_size < 10 * 2**20
    card = pretrained.load_card(name)
    # a command the repository can run again: the training CLI or a benchmark script
    runnable = ("python -m teachkit.train ", "python benchmarks/")
    assert card.command.startswith(runnable) or "python -m teachkit.train " in card.command
    assert card.results
    assert card.wall_time_s > 0 and card.hardware and card.created


@pytest.mark.parametrize("name", pretrained.cards())
def test_no_card_names_a_folder_of_the_machine_that_trained_it(name):
    """A card's command can be pasted anywhere: its --out is runs/NAME or relative."""
    words = shlex.split(pretrained.load_card(name).command)
    outs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
    outs += [w.split("=", 1)[1] for w in words if w.startswith("--out=")]
    assert all(not Path(o).is_absolute() for o in outs), outs


def test_finish_run_writes_the_run_and_ships_a_portable_card(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "shipped")
    model = torch.nn.Linear(2, 2)
    card = pretrained.ModelCard(
        name="finish_test", description="d", command="python -m teachkit.train sam --out "
        f"{tmp_path}/run --seed 0", seed=0, data="x", hardware="cpu", wall_time_s=1.0,
        results={"a": 1.0}, created="2026-12-06",
    )
    written = pretrained.finish_run(tmp_path / "run", model, card, {"steps": [1]}, method="sam",
                                    ship=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "sam" and metrics["steps"] == [1]
    assert metrics["card"]["command"] == written.command
    assert written.command == "python -m teachkit.train sam --out runs/finish_test --seed 0"
    assert pretrained.load_card("finish_test").command == written.command
    assert (tmp_path / "run" / "model.pt").is_file() and "finish_test" in capsys.readouterr().out
    # not shipped: the run's own folder stays in the command, nothing is shipped
    kept = pretrained.finish_run(tmp_path / "run2", model, replace(card, name="kept"), {},
                                 method="unet", ship=False)
    assert kept.command == card.command and "kept" not in pretrained.cards()


@pytest.mark.parametrize("name", [n for n in pretrained.cards() if pretrained.load_card(n).init])
def test_a_card_that_started_from_another_names_a_shipped_model_of_its_architecture(name):
    card = pretrained.load_card(name)
    assert card.init in pretrained.available(), card.init
    start = pretrained.load_card(card.init)
    for key in ("arch", "patch_size", "conv_stem", "model"):  # DINO and SAM configs
        assert card.config.get(key) == start.config.get(key), key
    assert f"--init {card.init}" in card.command, card.command


def test_the_critters_models_record_their_start():
    """The chapters' critters models that continued from others (the H100 ViT-nano run on
    the full-strength backgrounds; Chapter 6's SAM) say so on their cards; the small CNN
    started from its random initialisation."""
    starts = {name: pretrained.load_card(name).init
              for name in ("dino_cnn_critters", "dino_vit_nano_critters", "sam_tiny_critters")}
    assert starts == {"dino_cnn_critters": "",
                      "dino_vit_nano_critters": "dino_vit_nano_critters_full_context",
                      "sam_tiny_critters": "sam_tiny_shapes"}


def test_the_shipped_set_stays_under_30_mb():
    total = sum(p.stat().st_size for p in pretrained.SHIPPED_DIR.glob("*.pt"))
    assert total < 30 * 2**20, f"shipped checkpoints take {total / 2**20:.1f} MiB"
