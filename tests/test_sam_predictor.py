"""SamPredictor against the official predictor, batching, caching and prompt errors.

Both predictors wrap the same random weights in the ``vit_tiny_shapes`` architecture
(built once from the official modules, once from ours); prompts are given in pixels of
the original (non-square) image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_reference import official_sam
from segment_anything import SamPredictor as OfficialPredictor
from segment_anything import modeling as official

from teachkit.sam import SamPredictor, build_sam
from teachkit.sam.sizes import SAM_CONFIGS

TOL = 1e-4
CFG = SAM_CONFIGS["vit_tiny_shapes"]
H, W = 90, 120


def official_tiny() -> official.Sam:
    return official_sam(CFG)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    img[(yy - 40) ** 2 + (xx - 50) ** 2 < 400] += np.array([180, 20, 40], dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def predictors(image):
    torch.manual_seed(0)
    ref = official_tiny()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    ours = build_sam("vit_tiny_shapes")
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref_pred, ours_pred = OfficialPredictor(ref), SamPredictor(ours)
    ref_pred.set_image(image)
    ours_pred.set_image(image)
    return ref_pred, ours_pred


def assert_same_prediction(expected, got, logits) -> None:
    """Masks equal wherever the official logit is not within 1e-3 of the threshold."""
    masks_ref, iou_ref, low_ref = expected
    masks, iou, low = got
    assert masks.dtype == bool and masks.shape == masks_ref.shape
    assert np.abs(iou - iou_ref).max() < TOL
    assert np.abs(low - low_ref).max() < TOL
    confident = np.abs(logits) > 1e-3
    assert np.array_equal(masks[confident], masks_ref[confident])


def test_image_embedding_matches_official(predictors):
    ref, ours = predictors
    got = ours.get_image_embedding()
    assert got.shape == (1, CFG.prompt_embed_dim, 16, 16)
    assert (got - ref.features).abs().max().item() < TOL
    assert ours.original_size == (H, W) and ours.input_size == (96, 128)


@pytest.mark.parametrize("multimask", [False, True])
def test_box_prompt_mask_equals_official(predictors, multimask):
    ref, ours = predictors
    box = np.array([20, 15, 75, 70])
    expected = ref.predict(box=box, multimask_output=multimask)
    got = ours.predict(box=box, multimask_output=multimask)
    logits, _, _ = ref.predict(box=box, multimask_output=multimask, return_logits=True)
    c = 3 if multimask else 1
    assert got[0].shape == (c, H, W) and got[1].shape == (c,) and got[2].shape == (c, 64, 64)
    assert_same_prediction(expected, got, logits)


def test_point_mask_and_combined_prompts_equal_official(predictors):
    ref, ours = predictors
    points, labels = np.array([[50.0, 40.0], [100.0, 80.0]]), np.array([1, 0])
    box = np.array([10, 10, 90, 85])
    low_res = ref.predict(point_coords=points[:1], point_labels=labels[:1])[2][:1]
    cases = [
        dict(point_coords=points, point_labels=labels),
        dict(point_coords=points, point_labels=labels, box=box, multimask_output=False),
        dict(mask_input=low_res, multimask_output=False),
        dict(point_coords=points, point_labels=labels, box=box, mask_input=low_res),
    ]
    for kwargs in cases:
        logits = ref.predict(**kwargs, return_logits=True)[0]
        assert_same_prediction(ref.predict(**kwargs), ours.predict(**kwargs), logits)


def test_batched_boxes_equal_one_at_a_time_and_official(predictors):
    ref, ours = predictors
    boxes = torch.tensor([[20.0, 15.0, 75.0, 70.0], [0.0, 0.0, 120.0, 90.0], [60, 30, 110, 88]])
    masks, ious, low_res = ours.predict_torch(boxes=boxes, multimask_output=False)
    assert masks.shape == (3, 1, H, W) and ious.shape == (3, 1) and low_res.shape == (3, 1, 64, 64)
    for i, box in enumerate(boxes):
        one = ours.predict(box=box.numpy(), multimask_output=False)
        assert np.array_equal(masks[i].numpy(), one[0])
        assert np.abs(ious[i].numpy() - one[1]).max() < 1e-5
    # The official predict_torch wants boxes already in the 128-px input frame.
    ref_boxes = ref.transform.apply_boxes_torch(boxes, (H, W))
    _, ref_ious, ref_low = ref.predict_torch(None, None, ref_boxes, multimask_output=False)
    assert (ref_ious - ious).abs().max().item() < TOL
    assert (ref_low - low_res).abs().max().item() < TOL


def test_image_is_encoded_once(image):
    sam = build_sam("vit_tiny_shapes")
    calls = []
    sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    for x in (10, 50, 90):
        predictor.predict(point_coords=np.array([[x, 40]]), point_labels=np.array([1]))
    predictor.predict_torch(boxes=torch.tensor([[0.0, 0.0, 50.0, 50.0]] * 4))
    assert len(calls) == 1


def test_tensor_images_match_numpy(predictors, image):
    _, ours = predictors
    expected = ours.get_image_embedding().clone()
    chw = torch.from_numpy(image).permute(2, 0, 1)
    predictor = SamPredictor(ours.model)
    for tensor in (chw, chw.float() / 255.0):
        predictor.set_image(tensor)
        assert torch.equal(predictor.get_image_embedding(), expected)


def test_predict_before_set_image_raises():
    predictor = SamPredictor(build_sam("vit_tiny_shapes"))
    with pytest.raises(RuntimeError, match="call set_image"):
        predictor.predict(box=np.array([0, 0, 10, 10]))
    with pytest.raises(RuntimeError, match="call set_image"):
        predictor.get_image_embedding()


@pytest.mark.parametrize(
    ("bad_image", "match"),
    [
        (np.zeros((H, W), dtype=np.uint8), r"H x W x 3 RGB array.*\(90, 120\)"),
        (np.zeros((3, H, W), dtype=np.uint8), r"H x W x 3 RGB array.*\(3, 90, 120\)"),
        (np.zeros((H, W, 3), dtype=np.float32), "uint8 image.*float32"),
        (torch.zeros(H, W, 3), r"3 x H x W RGB tensor.*\(90, 120, 3\)"),
        (torch.full((3, H, W), 2.0), r"\[0, 1\], got \[2, 2\]"),
        (torch.zeros(3, H, W, dtype=torch.int32), "uint8 or float.*int32"),
        ([[0, 1, 2]], "numpy array or a torch tensor, got list"),
        (np.zeros((0, W, 3), dtype=np.uint8), "empty"),
    ],
)
def test_bad_images_raise(predictors, bad_image, match):
    predictor = SamPredictor(predictors[1].model)
    with pytest.raises(ValueError, match=match):
        predictor.set_image(bad_image)


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ({}, "empty prompt"),
        (dict(point_coords=np.array([[10, 10]])), "given together"),
        (dict(point_coords=np.array([[130, 10]]), point_labels=np.array([1])), "outside"),
        (dict(point_coords=np.array([[10, -1]]), point_labels=np.array([1])), r"y in \[0, 90\]"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([2])), r"1 \(foreground\)"),
        (dict(point_coords=np.array([[1, 1]]), point_labels=np.array([-1])), r"got \[-1\]"),
        (
            dict(point_coords=np.array([[10, 10], [20, 20]]), point_labels=np.array([1])),
            "got 2 points but 1 labels",
        ),
        (dict(point_coords=np.array([10, 10, 20]), point_labels=np.array([1])), "N x 2"),
        (dict(box=np.array([50, 10, 40, 60])), "x1 >= x0 and y1 >= y0"),
        (dict(box=np.array([10, 60, 40, 50])), "x1 >= x0 and y1 >= y0"),
        (dict(box=np.array([10, 10, 40, 95])), "box corner.*outside"),
        (dict(box=np.array([10, 10, 40])), "box must be 4 numbers"),
        (dict(mask_input=np.zeros((1, 256, 256))), r"mask_input must be B x 1 x 64 x 64"),
    ],
)
def test_bad_prompts_raise(predictors, prompt, match):
    with pytest.raises(ValueError, match=match):
        predictors[1].predict(**prompt)


def test_batched_prompts_must_agree_on_batch_size(predictors):
    with pytest.raises(ValueError, match="disagree on the batch size"):
        predictors[1].predict_torch(
            point_coords=torch.zeros(2, 1, 2),
            point_labels=torch.ones(2, 1),
            boxes=torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
        )


def test_cached_embedding_can_train_the_decoder(image):
    predictor = SamPredictor(build_sam("vit_tiny_shapes").train())
    predictor.set_image(image)
    sam = predictor.model
    low_res, iou = sam.decode(
        predictor.get_image_embedding(), boxes=torch.tensor([[10.0, 10.0, 100.0, 80.0]])
    )
    (low_res.mean() + iou.mean()).backward()
    assert sam.mask_decoder.iou_token.weight.grad is not None
    assert sam.image_encoder.patch_embed.proj.weight.grad is None  # the embedding is cached


# --------------------------------------------------------------------------- bad input, issue 13


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([0.5])), r"got \[0.5\]"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([0.999])), "got"),
        (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), "empty prompt"),
        (dict(point_coords=np.zeros((1, 0, 2)), point_labels=np.zeros((1, 0))), "empty prompt"),
        (dict(point_coords=np.array([[np.nan, 10]]), point_labels=np.array([1])), "NaN or inf"),
        (dict(box=np.array([10, 10, np.inf, 40])), "boxes has NaN or inf"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array(["1"])), "numbers"),
        (dict(mask_input=np.full((1, 64, 64), np.nan)), "mask_input has NaN"),
    ],
)
def test_bad_prompts_are_refused_not_cast(predictors, prompt, match):
    with pytest.raises(ValueError, match=match):
        predictors[1].predict(**prompt)


def test_float_labels_zero_and_one_are_the_integer_labels(predictors):
    ours = predictors[1]
    coords = np.array([[50, 40], [100, 80]])
    as_int = ours.predict(point_coords=coords, point_labels=np.array([1, 0]))
    as_float = ours.predict(point_coords=coords, point_labels=np.array([1.0, 0.0]))
    for a, b in zip(as_int, as_float, strict=True):
        assert np.array_equal(a, b)


def test_zero_points_next_to_a_box_are_no_points(predictors):
    ours = predictors[1]
    box = np.array([20, 15, 80, 70])
    alone = ours.predict(box=box, multimask_output=False)
    with_none = ours.predict(
        point_coords=np.zeros((0, 2)), point_labels=np.zeros(0), box=box, multimask_output=False
    )
    for a, b in zip(alone, with_none, strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="empty prompt"):
        ours.predict_torch(point_coords=torch.zeros(2, 0, 2), point_labels=torch.zeros(2, 0))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_image_tensor_is_refused(predictors, value):
    image = torch.rand(3, H, W)
    image[1, 5, 7] = value
    predictor = SamPredictor(predictors[1].model)
    with pytest.raises(ValueError, match="1 non-finite values"):
        predictor.set_image(image)
    assert not predictor.is_image_set


def test_one_pixel_high_images(predictors):
    predictor = SamPredictor(predictors[1].model)  # img_size 128
    predictor.set_image(np.full((1, 200, 3), 90, dtype=np.uint8))  # resizes to 1 x 128
    masks, _, _ = predictor.predict(point_coords=np.array([[100, 0.5]]), point_labels=[1])
    assert masks.shape == (3, 1, 200)
    with pytest.raises(ValueError, match=r"1 x 300 pixels is too thin.*at most 255 times"):
        predictor.set_image(np.full((1, 300, 3), 90, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"300 x 1 pixels is too thin"):
        predictor.set_image(torch.zeros(3, 300, 1))
