"""``python -m teachkit.train ship``: one command ships any finished run folder."""

import json

import pytest
import torch

import teachkit.pretrained as pretrained
from teachkit import hub
from teachkit.train import build_from_command, main

UNET = ("unet --steps 2 --batch-size 2 --chunk-size 2 --resolution 32 --width 4 --depth 2 "
        "--eval-scenes 2 --no-progress")


@pytest.fixture
def unet_run(tmp_path, monkeypatch):
    """A finished ``unet`` run that was not shipped, and an empty shipped folder."""
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "shipped")
    run = tmp_path / "my run"
    main([*UNET.split(), "--out", str(run)])
    assert not (tmp_path / "shipped").exists()
    return run


def usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_one_go_run_ships_later_with_its_own_card_and_loads_by_name(unet_run):
    main(["ship", "--run", str(unet_run), "--name", "unet_later"])
    written = json.loads((unet_run / "metrics.json").read_text())["card"]
    card = pretrained.load_card("unet_later")
    assert card.name == "unet_later" and card.description == written["description"]
    assert card.results == written["results"] and card.wall_time_s == written["wall_time_s"]
    assert "--out runs/unet_later" in card.command and str(unet_run) not in card.command
    model, loaded_card = hub.load("unet_later")  # the card's command rebuilds the U-Net
    assert loaded_card == card
    trained = torch.load(unet_run / "model.pt", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.allclose(value.float(), trained[key].float(), atol=1e-3), key


def test_a_description_given_replaces_the_commands_own(unet_run):
    main(["ship", "--run", str(unet_run), "--name", "u2", "--description", "Mine."])
    assert pretrained.load_card("u2").description == "Mine."


def test_dino_only_flags_on_another_run_are_usage_errors(unet_run, capsys):
    line = usage_error(["ship", "--run", str(unet_run), "--name", "x", "--history-only"], capsys)
    assert "--history-only apply to DINO runs only" in line and "is a unet run" in line


def test_ship_needs_a_finished_run_folder_and_a_plain_name(unet_run, tmp_path, capsys):
    line = usage_error(["ship", "--run", str(tmp_path / "none"), "--name", "x"], capsys)
    assert "has no metrics.json: expected the --out folder of a finished training run" in line
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text('{"method": "unet", "ca')
    line = usage_error(["ship", "--run", str(tmp_path / "half"), "--name", "x"], capsys)
    assert "metrics.json is not valid JSON" in line
    line = usage_error(["ship", "--run", str(unet_run), "--name", "../../x"], capsys)
    assert "--name '../../x' must be a plain file name" in line
    assert not (tmp_path / "shipped").exists()


def test_a_dino_run_needs_a_description(tmp_path, capsys):
    run = tmp_path / "dino"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": {}, "run": {}, "steps": []}))
    line = usage_error(["ship-dino", "--run", str(run), "--name", "x"], capsys)
    assert "--description is required to ship a DINO run" in line


def test_build_from_command_needs_a_course_command_that_builds():
    with pytest.raises(ValueError, match="no python -m teachkit.train command in"):
        build_from_command("python benchmarks/some_script.py --out runs/x")
    with pytest.raises(ValueError, match="the 'ship' command builds no model"):
        build_from_command("python -m teachkit.train ship --run runs/x --name y")
