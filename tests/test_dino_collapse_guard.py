"""The uniform-collapse guard: a teacher whose outputs stay flat for a whole epoch after
the warm-up stops training with a message that says what happened and what to change."""

from __future__ import annotations

import math

import pytest
import torch
from test_dino_trainer import backbone, tiny_config, tiny_images

from teachkit.data.stream import ImageBatches
from teachkit.dino.monitor import COLLAPSE_MARGIN
from teachkit.dino.trainer import UniformCollapseError, train_dino

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# A teacher temperature of 50 makes every teacher distribution almost exactly uniform.
FLAT = dict(teacher_temp=50.0, warmup_teacher_temp=50.0, warmup_epochs=1, epochs=3)


def test_a_flat_teacher_after_warm_up_stops_with_a_clear_message(tmp_path):
    cfg = tiny_config(out_dir=str(tmp_path), checkpoint_every=100, **FLAT)
    with pytest.raises(UniformCollapseError) as err:
        train_dino(cfg, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    message = str(err.value)
    assert f"ln K = {math.log(64):.3f} for all of epoch 1" in message  # not epoch 0: warm-up
    assert "teacher_temp" in message and "--no-collapse-guard" in message
    assert str(tmp_path) in message
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 6, "the epoch that collapsed is checkpointed, nothing later"


def test_the_guard_reads_every_step_of_the_epoch():
    # A single step below the margin is enough to keep training.
    cfg = tiny_config(**FLAT)
    calls = []

    def dip(kind, record):
        if kind == "step" and record["step"] == 4:
            record["teacher_entropy"] = math.log(64) - 2 * COLLAPSE_MARGIN
        calls.append(kind)

    with pytest.raises(UniformCollapseError, match="all of epoch 2"):
        train_dino(
            cfg,
            ImageBatches(tiny_images(), 8),
            backbone=backbone(),
            callbacks=[dip],
            progress=False,
        )


def test_the_guard_can_be_switched_off_and_leaves_learning_runs_alone():
    flat = tiny_config(collapse_guard=False, **FLAT)
    h = train_dino(flat, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    assert len(h.steps) == 9
    assert min(r["teacher_entropy"] for r in h.steps) > math.log(64) - COLLAPSE_MARGIN
    sharp = tiny_config(epochs=3)  # teacher_temp 0.04: far from uniform
    h = train_dino(sharp, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    assert len(h.steps) == 9
