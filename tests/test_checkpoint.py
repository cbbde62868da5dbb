"""Atomic checkpoints, the .prev fallback, and random-state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from teachkit.infra.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_latest,
    load_latest_file,
    restore_rng_state,
    save_checkpoint,
)


def test_save_and_load_round_trip_keeps_the_previous_file(tmp_path):
    assert load_latest(tmp_path) is None
    save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "checkpoint.pt")
    save_checkpoint({"step": 2, "w": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    latest = load_latest(tmp_path)
    assert latest["step"] == 2 and torch.equal(latest["w"], torch.zeros(3))
    assert load_checkpoint(tmp_path / "checkpoint.pt.prev")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.prev"]


def test_a_damaged_newest_file_falls_back_to_prev(tmp_path):
    save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    save_checkpoint({"step": 2}, tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.pt").write_bytes(b"half a checkpoi")
    with pytest.warns(UserWarning, match="is unreadable"):
        assert load_latest(tmp_path)["step"] == 1


def test_load_latest_file_says_which_file_it_read(tmp_path):
    assert load_latest_file(tmp_path) is None
    save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    save_checkpoint({"step": 2}, tmp_path / "checkpoint.pt")
    assert load_latest_file(tmp_path) == ({"step": 2}, tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.pt").unlink()  # killed between the two renames of a save
    assert load_latest_file(tmp_path) == ({"step": 1}, tmp_path / "checkpoint.pt.prev")


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)  # creates the directory
    with pytest.raises(Exception, match="pickle"):  # noqa: B017 - whatever pickle raises
        save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert load_latest(path.parent)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_missing_file_raises_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.normal()  # a cached Gaussian in NumPy's state
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "checkpoint.pt")
    first = (random.random(), np.random.normal(), torch.rand(3))
    restore_rng_state(load_latest(tmp_path)["rng"])
    second = (random.random(), np.random.normal(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
