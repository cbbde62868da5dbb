"""Prompts decoded in memory-bounded batches (issue 14: Chapter 6's full profile decoded
1,024 clicks in one call, ~21 GB on a 15 GB T4): batched results equal the one-shot
results, and no call sees more rows than the bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teachkit.sam import SamPredictor, build_sam
from teachkit.sam.batching import POINTS_PER_BATCH, click_scores, in_batches
from teachkit.sam.geometry import build_point_grid, stability_score

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_in_batches_equals_one_call_and_respects_the_bound():
    x = torch.arange(23.0)[:, None].repeat(1, 3)
    y = torch.randn(23, 2, generator=torch.Generator().manual_seed(0))
    sizes = []

    def fn(a, b):
        sizes.append(len(a))
        return a.sum(1) * 2, torch.cat([a, b], 1)

    got = in_batches(fn, x, y, batch_size=5)
    expected = fn(x, y)
    assert sizes[:-1] == [5, 5, 5, 5, 3] and max(sizes[:-1]) <= 5
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    single = in_batches(lambda a: a + 1, x, batch_size=100)
    assert torch.equal(single, x + 1)


@pytest.mark.parametrize(
    ("inputs", "batch_size", "match"),
    [
        ((torch.zeros(3),), 0, "batch_size must be >= 1"),
        ((torch.zeros(0),), 4, "at least one row"),
        ((torch.zeros(3), torch.zeros(4)), 2, "same number of rows"),
    ],
)
def test_in_batches_errors(inputs, batch_size, match):
    with pytest.raises(ValueError, match=match):
        in_batches(lambda *a: a[0], *inputs, batch_size=batch_size)


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_shapes")
    pred = SamPredictor(sam)
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pred.set_image(image)
    return pred


def test_click_scores_in_batches_equal_the_one_shot_decode(predictor, monkeypatch):
    clicks = torch.as_tensor(build_point_grid(5) * np.array([128, 96]))[:, None]  # 25 x 1 x 2
    with torch.no_grad():  # the one-shot decode that Chapter 6 used to do
        logits, iou, _ = predictor.predict_torch(
            clicks, torch.ones(25, 1, dtype=torch.long), multimask_output=True, return_logits=True
        )
    stability = stability_score(logits, predictor.model.mask_threshold, 1.0)

    sizes = []
    decode = predictor.predict_torch

    def spy(point_coords, point_labels, **kwargs):
        sizes.append(len(point_coords))
        return decode(point_coords, point_labels, **kwargs)

    monkeypatch.setattr(predictor, "predict_torch", spy)
    got_iou, got_stability = click_scores(predictor, clicks, points_per_batch=8)
    assert sizes == [8, 8, 8, 1]
    assert got_iou.shape == got_stability.shape == (25, 3)
    assert got_iou.device.type == got_stability.device.type == "cpu"
    assert torch.allclose(got_iou, iou, atol=1e-5)
    assert torch.allclose(got_stability, stability, atol=1e-3)

    sizes.clear()  # P x 2 clicks are accepted too; the default bound is the official 64
    flat_iou, _ = click_scores(predictor, clicks[:, 0])
    assert sizes == [25] and POINTS_PER_BATCH == 64
    assert torch.allclose(flat_iou, iou, atol=1e-5)
