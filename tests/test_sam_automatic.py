"""Automatic mask generation: the bookkeeping pieces on hand-built masks, the pieces
against ``segment_anything.utils.amg``, and the whole generator against the official
``SamAutomaticMaskGenerator`` on the same random tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_reference import official_sam
from segment_anything import SamAutomaticMaskGenerator
from segment_anything import modeling as official
from segment_anything.utils import amg

from teachkit.sam import AutomaticMaskGenerator, build_sam
from teachkit.sam.geometry import (
    box_nms,
    box_xyxy_to_xywh,
    build_point_grid,
    masks_to_boxes,
    remove_small_regions,
    stability_score,
)
from teachkit.sam.sizes import SAM_CONFIGS

CFG = SAM_CONFIGS["vit_tiny_shapes"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ------------------------------------------------------------------ stability score
def test_stability_score_is_iou_of_high_and_low_thresholds():
    logits = torch.tensor([[[3.0, 0.5, -0.5], [-2.0, 1.5, 0.9]]])  # 1 x 2 x 3
    high = logits > 1.0  # {3.0, 1.5}
    low = logits > -1.0  # {3.0, 0.5, -0.5, 1.5, 0.9}
    direct = (high & low).sum() / (high | low).sum()
    got = stability_score(logits, mask_threshold=0.0, offset=1.0)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(direct.item()) == pytest.approx(2 / 5)


def test_stability_score_of_an_empty_mask_is_zero():
    assert stability_score(torch.full((2, 4, 4), -5.0), 0.0, 1.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("threshold", "offset"), [(0.0, 1.0), (0.5, 0.25)])
def test_stability_score_matches_official(threshold, offset):
    logits = 3 * torch.randn(4, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    expected = amg.calculate_stability_score(logits, threshold, offset)
    got = stability_score(logits, threshold, offset)
    assert got.dtype == expected.dtype == torch.float32
    assert torch.allclose(got, expected)


# ------------------------------------------------------------------- boxes and NMS
def test_masks_to_boxes_on_hand_built_masks():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True  # rows 2..4, columns 3..8
    masks[1, 7, 11] = True  # a single pixel
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[3, 2, 8, 4], [11, 7, 11, 7], [0, 0, 0, 0]]
    assert box_xyxy_to_xywh(boxes[0]).tolist() == [3, 2, 5, 2]


def test_masks_to_boxes_matches_official():
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(2, 5, 30, 40, generator=gen) > 0.995  # sparse, some empty
    masks[0, 0] = False
    expected = amg.batched_mask_to_box(masks)
    assert torch.equal(masks_to_boxes(masks), expected)
    assert torch.equal(masks_to_boxes(masks[0, 1]), amg.batched_mask_to_box(masks[0, 1]))


def test_box_nms_removes_the_weaker_duplicate():
    masks = torch.zeros(3, 50, 50, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 10:30, 11:31] = True  # shifted by one pixel: a duplicate of mask 0
    masks[2, 35:45, 35:45] = True
    scores = torch.tensor([0.8, 0.9, 0.5])
    keep = box_nms(masks_to_boxes(masks), scores, iou_threshold=0.7)
    assert keep.tolist() == [1, 2]


def test_point_grid_matches_official():
    assert np.allclose(build_point_grid(5), amg.build_point_grid(5))
    assert build_point_grid(2).tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]


# ------------------------------------------------------------------ small regions
def test_remove_small_regions_islands_and_holes():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:9, 1:9] = True  # a big square
    mask[4, 4] = False  # a 1-pixel hole in it
    mask[10, 10] = mask[11, 11] = True  # a 2-pixel island, connected diagonally

    no_holes, changed = remove_small_regions(mask, 3, "holes")
    assert changed and no_holes[4, 4] and no_holes.sum() == mask.sum() + 1

    no_islands, changed = remove_small_regions(mask, 3, "islands")
    assert changed and not no_islands[10:, 10:].any() and no_islands.sum() == mask.sum() - 2

    # The diagonal pair is one 8-connected region of 2 pixels: kept at threshold 2.
    same, changed = remove_small_regions(mask, 2, "islands")
    assert not changed and same is mask


def test_remove_small_regions_keeps_the_largest_when_all_are_small():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0, 0] = True
    mask[5:7, 5:7] = True
    kept, changed = remove_small_regions(mask, 100, "islands")
    assert changed and kept.sum() == 4 and kept[5:7, 5:7].all()
    with pytest.raises(ValueError, match="'holes' or 'islands'"):
        remove_small_regions(mask, 3, "gaps")


# ------------------------------------------- the generator's filters, hand-built masks
class ScriptedPredictor:
    """Stands in for SamPredictor: per click, three hand-built logit maps on 40 x 40.

    * A: a 10 x 10 square around the click, logits +4 / -4 (stability exactly 1.0);
    * B: A shifted right by one pixel, a near duplicate with a lower predicted IoU;
    * C: a soft square (logits +0.5 / -0.5): stability 0, despite the best IoU.

    Click 3's mask A gets a predicted IoU of exactly 0.88, at the threshold.
    """

    class model:  # noqa: N801 - mimics predictor.model.mask_threshold
        mask_threshold = 0.0

    def set_image(self, image: np.ndarray) -> None:
        self.original_size = image.shape[:2]

    def reset_image(self) -> None:
        pass

    def predict_torch(self, coords, labels, multimask_output, return_logits):
        assert multimask_output and return_logits and labels.eq(1).all()
        logits, ious = [], []
        for x, y in coords[:, 0].round().long().tolist():
            a = torch.full((40, 40), -4.0)
            a[y - 5 : y + 5, x - 5 : x + 5] = 4.0
            b = torch.roll(a, 1, dims=1)
            c = torch.where(a > 0, 0.5, -0.5)
            logits.append(torch.stack([a, b, c]))
            ious.append([0.88 if (x, y) == (30, 30) else 0.95, 0.9, 0.99])
        return torch.stack(logits), torch.tensor(ious), None


def scripted_generator(**kwargs) -> AutomaticMaskGenerator:
    gen = AutomaticMaskGenerator(build_sam("vit_tiny_shapes"), points_per_side=2, **kwargs)
    gen.predictor = ScriptedPredictor()
    return gen


def test_generator_filters_by_iou_stability_and_nms():
    records = scripted_generator().generate(np.zeros((40, 40, 3), dtype=np.uint8))
    # C fails stability; B duplicates A (NMS); at click (30, 30) A fails the IoU filter.
    assert [r["predicted_iou"] for r in records] == pytest.approx([0.95, 0.95, 0.95, 0.9])
    assert [r["point_coords"] for r in records] == [[[10, 10]], [[30, 10]], [[10, 30]], [[30, 30]]]
    assert [r["bbox"] for r in records] == [
        [5, 5, 9, 9],
        [25, 5, 9, 9],
        [5, 25, 9, 9],
        [26, 25, 9, 9],
    ]
    assert all(r["stability_score"] == 1.0 and r["area"] == 100 for r in records)


def test_generator_thresholds_are_inclusive_for_stability_and_strict_for_iou():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    assert len(scripted_generator(stability_score_thresh=1.0).generate(image)) == 4
    assert len(scripted_generator(pred_iou_thresh=0.95).generate(image)) == 0
    kept_all = scripted_generator(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert [r["predicted_iou"] for r in kept_all.generate(image)] == pytest.approx([0.99] * 4)


# ----------------------------------------------------------------- the generator
def official_tiny() -> official.Sam:
    return official_sam(CFG)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = official_tiny()
    ours = build_sam("vit_tiny_shapes")
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    yy, xx = np.mgrid[:72, :96]
    img = np.full((72, 96, 3), 30, dtype=np.uint8)
    img[(yy - 30) ** 2 + (xx - 35) ** 2 < 300] = (220, 40, 40)
    img[50:68, 60:90] = (40, 200, 60)
    return img


# Random weights predict low IoUs: the quality filters are switched off to get masks.
LOOSE = dict(
    points_per_side=6, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0
)


def test_generator_records_have_the_official_fields(models, image):
    records = AutomaticMaskGenerator(models[1], **LOOSE).generate(image)
    assert records, "the loose settings should keep some masks"
    expected = {
        "segmentation",
        "area",
        "bbox",
        "predicted_iou",
        "stability_score",
        "point_coords",
        "crop_box",
    }
    for r in records:
        assert set(r) == expected
        seg = r["segmentation"]
        assert seg.dtype == bool and seg.shape == (72, 96)
        assert r["area"] == int(seg.sum())
        if r["area"]:
            x, y, w, h = r["bbox"]
            ys, xs = np.nonzero(seg)
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert len(r["point_coords"]) == 1 and len(r["point_coords"][0]) == 2
        assert 0.0 <= r["stability_score"] <= 1.0
        assert r["crop_box"] == [0, 0, 96, 72]
    ious = [r["predicted_iou"] for r in records]
    assert records[0]["predicted_iou"] == max(ious)


def test_generator_matches_official_generator(models, image):
    ref, ours = models
    expected = SamAutomaticMaskGenerator(ref, **LOOSE).generate(image)
    got = AutomaticMaskGenerator(ours, **LOOSE).generate(image)
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert np.allclose(g["point_coords"], e["point_coords"])
        assert g["predicted_iou"] == pytest.approx(e["predicted_iou"], abs=1e-4)
        assert g["bbox"] == e["bbox"]
        assert (g["segmentation"] != e["segmentation"]).sum() <= 2
        if np.isfinite(e["stability_score"]):
            assert g["stability_score"] == pytest.approx(e["stability_score"], abs=1e-2)


def test_generator_filters_and_small_region_removal(models, image):
    ours = models[1]
    strict = AutomaticMaskGenerator(ours, points_per_side=4, pred_iou_thresh=1e9)
    assert strict.generate(image) == []
    cleaned = AutomaticMaskGenerator(ours, **LOOSE, min_mask_region_area=40).generate(image)
    for r in cleaned:
        for mode in ("holes", "islands"):
            _, changed = remove_small_regions(r["segmentation"], 40, mode)
            assert not changed or r["area"] < 40


# --------------------------------------------------------------------------- bad input, issue 13


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(pred_iou_thresh=float("nan")), r"pred_iou_thresh must be a number >= 0"),
        (dict(pred_iou_thresh=-0.1), r"pred_iou_thresh must be a number >= 0"),
        (dict(pred_iou_thresh=float("inf")), r"pred_iou_thresh must be finite"),
        (dict(stability_score_thresh=float("nan")), r"stability_score_thresh .* in \[0, 1\]"),
        (dict(stability_score_thresh=1.5), r"stability_score_thresh .* in \[0, 1\], got 1.5"),
        (dict(stability_score_thresh=-1), r"stability_score_thresh"),
        (dict(box_nms_thresh=1.2), r"box_nms_thresh must be a number in \[0, 1\]"),
        (dict(box_nms_thresh=float("nan")), r"box_nms_thresh"),
        (dict(stability_score_offset=-1.0), r"stability_score_offset must be a number >= 0"),
        (dict(stability_score_offset=float("nan")), r"stability_score_offset"),
        (dict(min_mask_region_area=-5), r"min_mask_region_area must be a number >= 0"),
        (dict(points_per_side=2.5), r"points_per_side must be an integer >= 1, got 2.5"),
        (dict(points_per_side=0), r"points_per_side must be an integer >= 1, got 0"),
        (dict(points_per_batch=True), r"points_per_batch must be an integer >= 1, got True"),
        (dict(pred_iou_thresh="0.5"), r"pred_iou_thresh must be a number"),
    ],
)
def test_generator_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutomaticMaskGenerator(build_sam("vit_tiny_shapes"), **kwargs)


def test_generator_accepts_numpy_numbers():
    gen = AutomaticMaskGenerator(
        build_sam("vit_tiny_shapes"),
        points_per_side=np.int64(3),
        points_per_batch=np.int32(4),
        pred_iou_thresh=np.float32(0.5),
    )
    assert gen.point_grid.shape == (9, 2)
