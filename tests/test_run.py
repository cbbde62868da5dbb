"""The run skeleton every trainer shares: the non-finite-loss error, the run folder, the
one resume policy and the recorded command (teachkit.infra.run)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

import teachkit.dino
import teachkit.dino.trainer
from teachkit.infra.run import (
    NonFiniteLossError,
    changed_settings,
    check_same_run,
    command_line,
    parse_args_recorded,
    portable_command,
    recorded_run,
    resume_run,
    save_run,
)
from teachkit.pretext.autoencoder import ConvAutoencoder, train_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_one_non_finite_loss_error_for_every_trainer():
    assert issubclass(NonFiniteLossError, FloatingPointError)
    assert teachkit.dino.NonFiniteLossError is NonFiniteLossError
    assert teachkit.dino.trainer.NonFiniteLossError is NonFiniteLossError
    model = ConvAutoencoder(resolution=32, code_dim=8)
    nan_images = [torch.full((4, 3, 32, 32), math.nan)] * 3
    with pytest.raises(NonFiniteLossError, match=r"autoencoder loss is nan at step 0.*lower lr"):
        train_autoencoder(model, nan_images, steps=3, progress=False)


def test_changed_settings_are_named_except_the_free_ones():
    saved = {"lr": 0.1, "out_dir": "a", "crops": {"scale": (0.4, 1.0), "size": 32}}
    now = {"lr": 0.2, "out_dir": "b", "crops": {"scale": [0.4, 1.0], "size": 16}, "new": 1}
    assert changed_settings(saved, now, free_to_change=("out_dir",)) == {
        "lr": (0.1, 0.2),
        "crops.size": (32, 16),
        "new": (None, 1),
    }
    assert changed_settings(saved, saved) == {}


def test_save_run_then_resume_run_under_the_one_policy(tmp_path):
    assert resume_run(None, {}, free_to_change=()) is None
    assert resume_run(tmp_path, {}, free_to_change=()) is None  # nothing saved yet
    config = {"lr": 0.1, "checkpoint_every": 10}
    save_run(tmp_path, {"config": config, "w": torch.ones(2)}, {"config": config})
    assert (tmp_path / "metrics.json").read_text().startswith("{")
    with pytest.warns(UserWarning, match=r"changed settings \{'lr': \(0.1, 0.3\)\}"):
        ckpt = resume_run(
            tmp_path, {"lr": 0.3, "checkpoint_every": 5}, free_to_change=("checkpoint_every",)
        )
    assert torch.equal(ckpt["w"], torch.ones(2))


def test_the_command_is_recorded_as_parsed(monkeypatch):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parse_args_recorded(parser, ["--out", "runs/x"])
    assert args.argv == ["--out", "runs/x"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert command_line(args) == "python -m teachkit.train --out runs/x"
    # the thread count of a CPU run comes first; arguments are quoted for a shell
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = parse_args_recorded(parser, ["--out", "my runs/x"])
    assert command_line(args) == "OMP_NUM_THREADS=1 python -m teachkit.train --out 'my runs/x'"


def test_recorded_run_facts_and_the_check_that_they_did_not_change(tmp_path):
    assert recorded_run(tmp_path) == {}  # no metrics.json: nothing recorded
    (tmp_path / "metrics.json").write_text('{"run": {"dataset": "shapes"}, "steps": [')
    with pytest.warns(UserWarning, match=r"metrics.json is unreadable .* not compared"):
        assert recorded_run(tmp_path) == {}
    (tmp_path / "metrics.json").write_text('{"run": {"dataset": "shapes", "size": [1, 2]}}')
    saved = recorded_run(tmp_path)
    assert saved == {"dataset": "shapes", "size": [1, 2]}
    check_same_run(tmp_path, saved, {"dataset": "shapes", "size": (1, 2)}, ("dataset", "size"))
    check_same_run(tmp_path, saved, {"shortcuts": True}, ("dataset", "shortcuts"))  # unrecorded
    with pytest.raises(ValueError, match=r"size: \[1, 2\] when the run started, \(1, 3\) now"):
        check_same_run(tmp_path, saved, {"size": (1, 3)}, ("size",))


def test_portable_command_replaces_only_the_output_folder():
    """A shipped card's command names runs/NAME, never the machine's folder."""
    line = "OMP_NUM_THREADS=1 python -m teachkit.train contrastive --out /tmp/x/run --steps 4"
    assert portable_command(line, "m") == (
        "OMP_NUM_THREADS=1 python -m teachkit.train contrastive --out runs/m --steps 4"
    )
    equals = portable_command("python -m teachkit.train dino --out=/a/b", "m")
    assert equals.endswith("--out=runs/m")
    assert portable_command("python -m teachkit.train dino --lr 0.1", "m").endswith("--lr 0.1")
