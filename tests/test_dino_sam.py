"""DINO proposes, SAM segments (Chapter 7): saliency maps, proposals and SAM prompting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teachkit.attention import cls_attention_maps, jaccard
from teachkit.data.shapes import make_shapes
from teachkit.dino_sam import (
    Proposals,
    attention_saliency,
    border_contrast,
    contrast_saliency,
    propose,
    segment_with_sam,
)
from teachkit.models.vit import build_vit
from teachkit.preprocess import imagenet_preprocess
from teachkit.pretrained import load_shipped
from teachkit.sam.build import build_sam
from teachkit.sam.geometry import mask_iou
from teachkit.sam.predictor import SamPredictor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_sam():
    sam = build_sam("vit_tiny_shapes")
    load_shipped("sam_tiny_shapes", sam)
    return sam


def test_border_contrast_is_zero_on_the_border_feature_and_largest_on_the_odd_patch():
    g = torch.Generator().manual_seed(0)
    background = torch.randn(8, generator=g)
    feats = background.expand(1, 25, 8).clone()
    feats[0, 12] = -background  # the centre patch of a 5 x 5 grid points the other way
    feats[0, 7] = background + 0.5 * torch.randn(8, generator=g)
    s = border_contrast(feats, (5, 5))
    assert s.shape == (1, 5, 5)
    assert torch.allclose(s[0, 0, 0], torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(s[0, 2, 2], torch.tensor(2.0), atol=1e-6)  # cos = -1
    expected = 1 - F.cosine_similarity(feats[0, 7], background, dim=0)
    assert torch.allclose(s[0, 1, 2], expected, atol=1e-6)
    assert s[0].flatten().argmax() == 12


def test_border_contrast_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 3 x 3"):
        border_contrast(torch.randn(1, 4, 8), (2, 2))
    with pytest.raises(ValueError, match=r"\(B, 16, D\)"):
        border_contrast(torch.randn(1, 15, 8), (4, 4))


def test_attention_saliency_is_the_head_mean_of_the_cls_attention():
    vit = build_vit("vit_nano", patch_size=4, img_size=32).eval()
    images = make_shapes(5, resolution=32, seed=1).images
    s = attention_saliency(vit, images, batch_size=2)
    with torch.no_grad():
        attn = vit.get_last_selfattention(imagenet_preprocess(images))
    expected = cls_attention_maps(attn, (8, 8)).mean(dim=1)
    assert s.shape == (5, 8, 8)
    assert torch.allclose(s, expected, atol=1e-6)
    total = s.sum(dim=(1, 2))  # the rest of the row is the CLS token's attention to itself
    assert ((total > 0) & (total < 1)).all()


def test_contrast_saliency_checks_its_images():
    vit = build_vit("vit_nano", patch_size=4, img_size=32).eval()
    images = make_shapes(2, resolution=32, seed=1).images
    assert contrast_saliency(vit, images).shape == (2, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        contrast_saliency(vit, images.float())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        attention_saliency(vit, images[0])
    with pytest.raises(ValueError, match="multiple of the model's patch_size"):
        attention_saliency(vit, images[..., :30, :30])


def test_propose_turns_a_peak_into_a_block_its_box_and_its_centre():
    saliency = torch.zeros(1, 4, 4)
    saliency[0, 1:3, 2] = 1.0  # two patches in column 2, rows 1-2
    p = propose(saliency, (32, 32), mass=0.6)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 16:24] = True
    assert torch.equal(p.masks[0], expected)
    assert p.boxes[0].tolist() == [16.0, 8.0, 23.0, 23.0]
    x, y = p.points[0].tolist()
    # 4 px from every edge of the 8-px-wide block: the two middle columns
    assert x in (19.0, 20.0) and 11 <= y <= 20
    assert len(p) == 1


def test_largest_part_drops_a_stray_patch_that_would_stretch_the_box():
    saliency = torch.zeros(1, 4, 4)
    saliency[0, 1:3, 1:3] = 1.0  # a 2 x 2 object ...
    saliency[0, 3, 3] = 1.0  # ... and a stray patch touching it only by a corner
    whole = propose(saliency, (16, 16), mass=1.0)
    part = propose(saliency, (16, 16), mass=1.0, largest_part=True)
    assert whole.boxes[0].tolist() == [4.0, 4.0, 15.0, 15.0]
    assert part.boxes[0].tolist() == [4.0, 4.0, 11.0, 11.0]
    assert part.masks[0].sum() == 4 * 16 and not part.masks[0, 12:, 12:].any()
    # of two separate parts, the one holding more saliency wins, not the bigger one
    saliency = torch.zeros(2, 4, 4)
    saliency[:, 0, 0:3] = 1.0  # three patches, mass 3
    saliency[:, 3, 3] = 5.0  # one patch, mass 5
    part = propose(saliency, (4, 4), mass=1.0, largest_part=True)
    assert part.masks[:, 3, 3].all() and part.masks.flatten(1).sum(1).tolist() == [1, 1]


def test_propose_refuses_what_it_cannot_propose():
    with pytest.raises(ValueError, match="zero everywhere"):
        propose(torch.zeros(2, 4, 4), (16, 16))
    with pytest.raises(ValueError, match="whole multiple"):
        propose(torch.rand(1, 4, 4), (30, 30))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        propose(torch.rand(4, 4), (16, 16))


def test_a_point_proposal_gives_what_the_predictor_gives_for_that_click(tiny_sam):
    data = make_shapes(3, resolution=128, seed=3)
    saliency = F.avg_pool2d(data.masks[:, None].float(), 16)[:, 0]  # (3, 8, 8) object cover
    props = propose(saliency, (128, 128))
    masks, scores = segment_with_sam(SamPredictor(tiny_sam), data.images, props, prompt="point")
    assert masks.shape == (3, 128, 128) and masks.dtype == torch.bool and scores.shape == (3,)
    predictor = SamPredictor(tiny_sam)
    for i in range(3):
        predictor.set_image(data.images[i].permute(1, 2, 0).numpy())
        click = props.points[i : i + 1].numpy()
        ref, ious, _ = predictor.predict(click, [1], multimask_output=True)
        assert torch.equal(masks[i], torch.from_numpy(ref[ious.argmax()]))
        assert scores[i] == pytest.approx(float(ious.max()), abs=1e-6)


def test_sam_sharpens_a_coarse_proposal_of_the_true_object(tiny_sam):
    """Patch-level (16 px) proposals from the true masks: SAM's masks must beat them."""
    data = make_shapes(24, resolution=128, seed=5)
    saliency = F.avg_pool2d(data.masks[:, None].float(), 16)[:, 0]
    props = propose(saliency, (128, 128))
    coarse = jaccard(props.masks, data.masks).mean()
    predictor = SamPredictor(tiny_sam)
    for prompt in ("point", "box", "box+point"):
        masks, _ = segment_with_sam(predictor, data.images, props, prompt=prompt)
        assert mask_iou(masks, data.masks).mean() > coarse + 0.05, prompt


def test_segment_with_sam_checks_its_inputs(tiny_sam):
    data = make_shapes(2, resolution=128, seed=5)
    props = propose(torch.rand(2, 8, 8), (128, 128))
    predictor = SamPredictor(tiny_sam)
    with pytest.raises(ValueError, match="unknown prompt 'mask'"):
        segment_with_sam(predictor, data.images, props, prompt="mask")
    with pytest.raises(ValueError, match="2 images but 1 proposals"):
        one = Proposals(props.masks[:1], props.boxes[:1], props.points[:1])
        segment_with_sam(predictor, data.images, one)
    with pytest.raises(ValueError, match="propose at the images' size"):
        segment_with_sam(predictor, data.images[..., :64, :64], props)
    with pytest.raises(ValueError, match="uint8"):
        segment_with_sam(predictor, data.images.float(), props)


def test_arguments_of_the_wrong_kind_are_named(tiny_sam):
    vit = build_vit("vit_nano", patch_size=4, img_size=32).eval()
    images = make_shapes(2, resolution=32, seed=1).images
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor of shape \(B, 3, H, W\), "
                                        "uint8; got ndarray"):
        attention_saliency(vit, images.numpy())
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got 0"):
        attention_saliency(vit, images, batch_size=0)
    with pytest.raises(TypeError, match=r"features must be a torch.Tensor of shape \(B, h\*w, D\)"):
        border_contrast(torch.zeros(1, 25, 8).tolist(), (5, 5))
    with pytest.raises(ValueError, match=r"grid must be \(rows, columns\), two positive ints"):
        border_contrast(torch.zeros(1, 25, 8), (5.0, 5))
    saliency = torch.rand(2, 8, 8)
    with pytest.raises(TypeError, match="saliency must be a torch.Tensor"):
        propose(saliency.numpy(), (32, 32))
    with pytest.raises(ValueError, match=r"image_size must be \(rows, columns\).*got 32"):
        propose(saliency, 32)
    with pytest.raises(ValueError, match=r"none of them 0; got \(0, 8, 8\)"):
        propose(saliency[:0], (32, 32))
    props = propose(saliency, (32, 32))
    with pytest.raises(TypeError, match="predictor must be a SamPredictor"):
        segment_with_sam(tiny_sam, images, props)
    with pytest.raises(TypeError, match="proposals must be the Proposals of propose"):
        segment_with_sam(SamPredictor(tiny_sam), images, props.masks)
    with pytest.raises(TypeError, match="model must be a Sam"):
        SamPredictor(vit)
