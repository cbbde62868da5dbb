"""Label-free object discovery (Chapter 7): clicks, SAM masks, ranking, deduplication, scoring."""

from __future__ import annotations

import pytest
import torch

from teachkit.data.critters import make_critter_scenes
from teachkit.discovery import (
    Candidates,
    click_points,
    discover_objects,
    keep_distinct,
    match_objects,
    segment_clicks,
)
from teachkit.pretrained import load_shipped
from teachkit.sam.build import build_sam
from teachkit.sam.geometry import mask_iou
from teachkit.sam.predictor import SamPredictor

pytestmark = pytest.mark.usefixtures("one_thread")


def _square(y0: int, x0: int, side: int, size: int = 32) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def _empty(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.bool)


# ---------------------------------------------------------------------------- matching
def test_perfect_masks_find_every_object_and_a_duplicate_counts_once():
    truth = torch.stack([_square(0, 0, 8), _square(16, 16, 8)])
    got = match_objects(truth.clone(), truth)
    assert (got.found, got.objects, got.kept) == (2, 2, 2)
    assert torch.equal(got.best_iou, torch.ones(2))
    twice = match_objects(torch.stack([truth[0], truth[0]]), truth)
    assert (twice.found, twice.kept) == (1, 2)
    assert twice.best_iou.tolist() == [1.0, 0.0]


def test_matching_is_one_to_one_and_best_iou_first():
    truth = torch.stack([_square(0, 0, 8), _square(0, 8, 8)])
    # One mask covers both objects (IoU 0.5 with each); a second fits the first object.
    both = _square(0, 0, 8) | _square(0, 8, 8)
    got = match_objects(torch.stack([both, truth[0]]), truth)
    # The exact mask takes object 0; the wide one still matches object 1 at IoU 0.5.
    assert got.found == 2
    got = match_objects(torch.stack([both]), truth, iou=0.51)
    assert got.found == 0 and got.best_iou.tolist() == [0.5, 0.5]


def test_no_kept_mask_finds_nothing():
    truth = _square(0, 0, 8)[None]
    got = match_objects(torch.zeros(0, 32, 32, dtype=torch.bool), truth)
    assert (got.found, got.objects, got.kept) == (0, 1, 0)
    assert got.best_iou.tolist() == [0.0]


@pytest.mark.parametrize(
    ("pred", "truth", "kwargs", "message"),
    [
        (_empty(1, 32, 32), _empty(0, 32, 32), {}, "M >= 1"),
        (_empty(32, 32), _empty(1, 32, 32), {}, r"\(K, H, W\)"),
        (_empty(1, 16, 16), _empty(1, 32, 32), {}, "but true_masks"),
        (_empty(1, 32, 32), _empty(1, 32, 32), {"iou": 0.0}, r"\(0, 1\]"),
    ],
)
def test_matching_rejects_bad_input(pred, truth, kwargs, message):
    with pytest.raises(ValueError, match=message):
        match_objects(pred, truth, **kwargs)


# ---------------------------------------------------------------------------- keep_distinct
def test_keep_distinct_walks_the_ranking_and_drops_repeats_parts_and_specks():
    whole = _square(0, 0, 10)
    part = _square(0, 0, 5)  # inside the whole: a repeat
    other = _square(20, 20, 10)
    speck = _square(30, 30, 2)  # 4 pixels
    masks = torch.stack([part, whole, other, speck])
    scores = torch.tensor([0.5, 0.9, 0.7, 1.0])
    assert keep_distinct(masks, scores, min_area=5).tolist() == [1, 2]
    assert keep_distinct(masks, scores, min_area=5, max_objects=1).tolist() == [1]
    # Ranked the other way, the part wins and the whole is the repeat.
    assert keep_distinct(masks, -scores, min_area=5).tolist() == [0, 2]
    # Ties keep the masks' order.
    assert keep_distinct(masks, torch.zeros(4), min_area=1).tolist() == [0, 2, 3]


def test_keep_distinct_rejects_mismatched_scores():
    with pytest.raises(ValueError, match=r"scores \(P,\)"):
        keep_distinct(torch.zeros(3, 8, 8, dtype=torch.bool), torch.zeros(2))
    with pytest.raises(ValueError, match="max_objects"):
        keep_distinct(torch.zeros(3, 8, 8, dtype=torch.bool), torch.zeros(3), max_objects=0)


# ---------------------------------------------------------------------------- clicks
def test_click_points_land_on_salient_patch_centres_of_the_sub_grid():
    saliency = torch.zeros(4, 4)
    saliency[1, 1] = saliency[1, 3] = saliency[3, 1] = 1.0  # all on the stride-2 grid
    saliency[0, 0] = 0.01  # off the grid, and outside the 95 % of the mass
    pts = click_points(saliency, (32, 32), mass=0.95, stride=2)
    assert sorted(map(tuple, pts.tolist())) == [(12.0, 12.0), (12.0, 28.0), (28.0, 12.0)]
    every = click_points(saliency, (32, 32), mass=1.0, stride=1)
    assert len(every) == 4 and (4.0, 4.0) in map(tuple, every.tolist())


def test_click_points_fall_back_to_the_most_salient_patch_off_the_grid():
    saliency = torch.zeros(4, 4)
    saliency[0, 2] = 1.0  # row 0 is not on the stride-2 grid (rows 1 and 3)
    assert click_points(saliency, (32, 32), stride=2).tolist() == [[20.0, 4.0]]


@pytest.mark.parametrize(
    ("saliency", "size", "message"),
    [
        (torch.ones(4, 4), (30, 30), "whole multiple"),
        (torch.ones(1, 4, 4), (32, 32), r"one \(h, w\) map"),
        (-torch.ones(4, 4), (32, 32), "non-negative"),
        (torch.full((4, 4), float("nan")), (32, 32), "finite"),
    ],
)
def test_click_points_reject_bad_maps(saliency, size, message):
    with pytest.raises(ValueError, match=message):
        click_points(saliency, size)


# ---------------------------------------------------------------------------- with SAM
@pytest.fixture(scope="module")
def predictor():
    sam = build_sam("vit_tiny_shapes")
    load_shipped("sam_tiny_critters", sam)
    return SamPredictor(sam.eval())


@pytest.fixture(scope="module")
def scene():
    scenes = make_critter_scenes(1, resolution=128, seed=3, instances=(3, 3))
    objects = scenes.masks[0, : int(scenes.counts[0])]
    return scenes.images[0], objects[objects.flatten(1).sum(1) >= 16]


def test_a_map_that_lights_the_true_objects_lets_sam_find_them(predictor, scene):
    image, objects = scene
    # The saliency of the truth itself, on a 16 x 16 grid of 8-pixel patches.
    truth_map = torch.nn.functional.avg_pool2d(objects.any(0)[None].float(), 8)[0]
    found = discover_objects(predictor, image, truth_map)
    match = match_objects(found, objects)
    assert match.found == len(objects) == 3, match
    # The same scene with a map that lights only the corner background finds no object.
    corner = torch.zeros(16, 16)
    corner[:2, :2] = 1.0
    assert match_objects(discover_objects(predictor, image, corner), objects).found == 0


def test_candidates_are_one_sam_mask_per_click_with_their_scores(predictor, scene):
    image, _ = scene
    saliency = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    cand = segment_clicks(predictor, image, saliency)
    assert isinstance(cand, Candidates)
    assert cand.masks.shape == (len(cand.clicks), 128, 128) and cand.masks.dtype == torch.bool
    fine = saliency.repeat_interleave(8, 0).repeat_interleave(8, 1)
    for m, s in zip(cand.masks, cand.saliency, strict=True):
        expected = fine[m].mean() if m.any() else torch.tensor(0.0)
        assert torch.allclose(s, expected, atol=1e-5)
    # Each click's mask is SAM's first choice for that click alone.
    predictor.set_image(image)
    out, iou, _ = predictor.predict_torch(
        point_coords=cand.clicks[:1, None], point_labels=torch.ones(1, 1, dtype=torch.long)
    )
    assert mask_iou(out[0, iou[0].argmax()], cand.masks[0]) == 1.0
    assert torch.equal(cand.ranked("sam"), cand.sam_scores)
    assert torch.equal(cand.ranked("saliency"), cand.saliency)
    assert torch.equal(cand.ranked("joint"), cand.saliency * cand.sam_scores)
    # With the image already set, the same clicks give the same masks, and it stays set.
    same = segment_clicks(predictor, None, saliency)
    assert torch.equal(same.masks, cand.masks) and torch.equal(same.sam_scores, cand.sam_scores)
    assert predictor.original_size == (128, 128)
    predictor.reset_image()
    with pytest.raises(ValueError, match="none is set"):
        segment_clicks(predictor, None, saliency)
    with pytest.raises(ValueError, match="unknown rank 'area'"):
        cand.ranked("area")


def test_discovery_rejects_bad_arguments(predictor, scene):
    image, _ = scene
    with pytest.raises(TypeError, match="SamPredictor"):
        discover_objects(object(), image, torch.ones(16, 16))
    with pytest.raises(ValueError, match="unknown rank"):
        discover_objects(predictor, image, torch.ones(16, 16), rank="size")
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8"):
        discover_objects(predictor, image.float(), torch.ones(16, 16))
    with pytest.raises(ValueError, match="whole multiple"):
        discover_objects(predictor, image, torch.ones(15, 15))


# ---------------------------------------------------------------------------- the scenes
def test_scene_clutter_is_drawn_but_has_no_mask():
    plain = make_critter_scenes(6, resolution=64, seed=1)
    busy = make_critter_scenes(6, resolution=64, seed=1, clutter=(8, 8))
    assert busy.masks.shape == plain.masks.shape
    assert torch.equal(busy.counts, plain.counts)
    assert not torch.equal(busy.images, plain.images)
    with pytest.raises(ValueError, match="clutter must be"):
        make_critter_scenes(2, clutter=(3, 1))
