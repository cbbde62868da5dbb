"""Tests for teachkit.attention on hand-built attention tensors with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from teachkit.attention import (
    attention_jaccard,
    best_head_jaccard,
    cls_attention_maps,
    jaccard,
    mass_threshold,
    merge_heads,
    overlay,
    upsample_patches,
)


def random_attention(b: int, heads: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, heads, 1 + n, 1 + n, generator=g).softmax(dim=-1)


def test_cls_maps_pick_row_zero_in_row_major_order() -> None:
    attn = random_attention(2, 3, 3 * 5)
    maps = cls_attention_maps(attn, grid=(3, 5))
    assert maps.shape == (2, 3, 3, 5)
    for i in range(3):
        for j in range(5):
            torch.testing.assert_close(maps[:, :, i, j], attn[:, :, 0, 1 + i * 5 + j])


def test_upsampling_alignment_non_square() -> None:
    attn = random_attention(2, 3, 3 * 5)
    p = 4
    maps = cls_attention_maps(attn, grid=(3, 5))
    up = cls_attention_maps(attn, grid=(3, 5), image_size=(3 * p, 5 * p))
    assert up.shape == (2, 3, 12, 20)
    for i in range(3):
        for j in range(5):
            block = up[:, :, i * p : (i + 1) * p, j * p : (j + 1) * p]
            assert (block == maps[:, :, i, j, None, None]).all()
    # The official visualize_attention.py upsampling gives the same pixels.
    torch.testing.assert_close(up, F.interpolate(maps, scale_factor=p, mode="nearest"))
    mask = upsample_patches(torch.tensor([[True, False]]), 3)
    assert mask.dtype == torch.bool and mask.shape == (3, 6) and mask[:, :3].all()


def test_mass_threshold_keeps_exactly_the_concentrated_patches() -> None:
    maps = torch.full((1, 2, 4, 6), 0.1 / 22)  # 0.1 of the mass spread thinly
    maps[0, 0, 1, 2] = maps[0, 0, 3, 5] = 0.45  # head 0: two patches hold 0.9
    maps[0, 1, 0, 0] = 0.9  # head 1: one patch holds 0.9
    maps[0, 1, 1, 2] = maps[0, 1, 3, 5] = 0.1 / 22
    kept = mass_threshold(maps, mass=0.6)
    assert kept.dtype == torch.bool and kept.shape == maps.shape
    assert kept[0, 0].nonzero().tolist() == [[1, 2], [3, 5]]
    assert kept[0, 1].nonzero().tolist() == [[0, 0]]
    assert merge_heads(kept)[0].nonzero().tolist() == [[0, 0], [1, 2], [3, 5]]


def test_mass_threshold_uniform_keeps_about_sixty_percent() -> None:
    kept = mass_threshold(torch.full((10, 10), 0.01), mass=0.6)
    assert 60 <= int(kept.sum()) <= 61
    assert mass_threshold(torch.full((10, 10), 0.01), mass=1.0).all()
    assert not mass_threshold(torch.zeros(3, 3)).any()  # no attention, nothing kept


def official_threshold(attentions: torch.Tensor, threshold: float) -> torch.Tensor:
    """The lines of facebookresearch/dino visualize_attention.py, for (nh, h*w) input."""
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(attentions.shape[0]):
        th_attn[head] = th_attn[head][idx2[head]]
    return th_attn


@pytest.mark.parametrize("mass", [0.3, 0.6, 0.9])
def test_mass_threshold_reproduces_official_semantics(mass: float) -> None:
    maps = cls_attention_maps(random_attention(1, 6, 7 * 9, seed=3) ** 3, grid=(7, 9))[0]
    ours = mass_threshold(maps, mass=mass)
    official = official_threshold(maps.reshape(6, -1).clone(), mass).reshape(6, 7, 9)
    assert torch.equal(ours, official)
    kept_mass = (maps * ours).flatten(1).sum(1) / maps.flatten(1).sum(1)
    assert (kept_mass >= mass - 1e-6).all()


def test_jaccard_known_masks() -> None:
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    true = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, 0, :4] = True  # 4 pixels
    true[0, 0, 2:4] = True  # 6 pixels, 2 shared -> 2 / 8
    true[0, 1, :4] = True
    true[1, 2, 2] = True  # pred empty, true not: 0
    # sample 2: both empty -> 1 by definition
    torch.testing.assert_close(jaccard(pred, true), torch.tensor([0.25, 0.0, 1.0]))
    heads = torch.stack([pred, true], dim=1)  # (3, 2 heads, 4, 4); head 1 is perfect
    torch.testing.assert_close(best_head_jaccard(heads, true), torch.ones(3))


class StandIn(nn.Module):
    """Like the course ViT: ``patch_size`` and ``get_last_selfattention``, with known maps.

    head 0 attends to bright patches (0.7 of the mass) over the rest (0.3); head 1 to the
    two bottom corners; head 2 to the top-left patch.
    """

    patch_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training
        p = self.patch_size
        bright = F.avg_pool2d(x.mean(1, keepdim=True), p)[:, 0] > 0.5  # (B, h, w)
        b, h, w = bright.shape
        n = h * w
        obj = bright.flatten(1).float()
        head0 = 0.7 * obj / obj.sum(1, keepdim=True) + 0.3 * (1 - obj) / (1 - obj).sum(
            1, keepdim=True
        )
        head1 = torch.zeros(b, n)
        head1[:, (h - 1) * w] = head1[:, n - 1] = 0.5
        head2 = torch.zeros(b, n)
        head2[:, 0] = 1.0
        attn = torch.full((b, 3, 1 + n, 1 + n), 1.0 / (1 + n))
        attn[:, :, 0, 0] = 0.0
        attn[:, :, 0, 1:] = torch.stack([head0, head1, head2], dim=1)
        return attn + 0 * self.dummy


def test_attention_jaccard_with_a_stand_in_model() -> None:
    h, w, p = 4, 6, 4
    images = torch.zeros(2, 3, h * p, w * p)
    masks = torch.zeros(2, h * p, w * p, dtype=torch.bool)
    for n, (rows, cols) in enumerate([(slice(1, 3), slice(2, 5)), (slice(0, 2), slice(3, 6))]):
        pix = (slice(rows.start * p, rows.stop * p), slice(cols.start * p, cols.stop * p))
        images[n, :, pix[0], pix[1]] = 1.0
        masks[n, pix[0], pix[1]] = True
    model = StandIn().train()

    out = attention_jaccard(model, images, masks, batch_size=1, progress=False)
    assert model.training  # mode restored
    torch.testing.assert_close(out["per_head"], torch.tensor([1.0, 0.0, 0.0]))
    assert out["best_head"] == 1.0 and out["best_head_index"] == 0
    assert out["mean_head"] == pytest.approx(1 / 3)
    assert out["oracle_head"] == 1.0
    # In both images the union is 6 object patches + 2 bottom corners + the top-left patch.
    assert out["merged"] == pytest.approx(6 / 9)
    # The heads' average: top-left 0.34, each bottom corner 0.17, each object patch 0.04.
    # The three background patches alone hold 60 % of the mass, so averaging first keeps
    # no object patch at all: concentrated heads outvote a spread-out one.
    assert out["head_average"] == 0.0


def test_bad_shapes_raise() -> None:
    attn = random_attention(1, 2, 12)
    with pytest.raises(ValueError, match=r"13 tokens but grid \(3, 5\) needs 1 \+ 3\*5 = 16"):
        cls_attention_maps(attn, grid=(3, 5))
    with pytest.raises(ValueError, match=r"\(B, heads, 1\+N, 1\+N\)"):
        cls_attention_maps(attn[0], grid=(3, 4))
    with pytest.raises(ValueError, match="not a multiple of the grid"):
        cls_attention_maps(attn, grid=(3, 4), image_size=(40, 40))
    with pytest.raises(ValueError, match=r"mass must be in \(0, 1\]"):
        mass_threshold(torch.rand(3, 3), mass=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        mass_threshold(-torch.rand(3, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        jaccard(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be bool"):
        jaccard(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        attention_jaccard(
            StandIn(), torch.zeros(1, 3, 10, 8), torch.zeros(1, 10, 8, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="must agree in N, H, W"):
        attention_jaccard(StandIn(), torch.zeros(1, 3, 8, 8), torch.zeros(2, 8, 8).bool())


def test_overlay_blends_colour_where_masked() -> None:
    image = torch.full((3, 8, 12), 100, dtype=torch.uint8)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[1, 2] = True  # patch (1, 2) = pixels [4:8, 8:12]
    out = overlay(image, mask, color=(1.0, 0.0, 0.0), alpha=0.5)
    assert out.shape == (8, 12, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[5, 9], [0.5 * 100 / 255 + 0.5, 0.5 * 100 / 255, 0.5 * 100 / 255])
    np.testing.assert_allclose(out[0, 0], [100 / 255] * 3)
    heat = overlay(np.zeros((8, 12, 3), np.float32), torch.arange(6.0).reshape(2, 3), alpha=1.0)
    np.testing.assert_allclose(heat[4:, 8:, 0], 1.0)  # the largest value gets the full colour
    with pytest.raises(ValueError, match="neither matches nor divides"):
        overlay(image, torch.zeros(5, 5, dtype=torch.bool))


def test_arguments_that_are_not_tensors_or_counts_are_named() -> None:
    attn = random_attention(1, 2, 12)
    with pytest.raises(TypeError, match=r"attn must be a torch.Tensor of shape \(B, heads"):
        cls_attention_maps(attn.tolist(), grid=(3, 4))
    with pytest.raises(ValueError, match="grid must be a positive int or a pair of them; got "
                                         r"\(True, 12\)"):
        cls_attention_maps(random_attention(1, 2, 12), grid=(True, 12))
    with pytest.raises(TypeError, match=r"maps must be a torch.Tensor of shape \(\.\.\., h, w\); "
                                        "got ndarray of shape"):
        mass_threshold(torch.rand(3, 3).numpy())
    with pytest.raises(TypeError, match=r"mass must be a number in \(0, 1\]; got '0.6'"):
        mass_threshold(torch.rand(3, 3), mass="0.6")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        upsample_patches([[1, 2]], 2)
    with pytest.raises(TypeError, match="masks must be a torch.Tensor"):
        merge_heads([[[True]]])
    with pytest.raises(TypeError, match="true_mask must be a torch.Tensor"):
        jaccard(torch.zeros(2, 3, dtype=torch.bool), [[False] * 3] * 2)
    with pytest.raises(TypeError, match="head_masks must be a torch.Tensor"):
        best_head_jaccard(None, torch.zeros(1, 2, 2, dtype=torch.bool))
    images, masks = torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor of shape \(N, 3, H, W\)"):
        attention_jaccard(StandIn(), images.numpy(), masks)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got 0"):
        attention_jaccard(StandIn(), images, masks, batch_size=0)
    with pytest.raises(ValueError, match="images is empty"):
        attention_jaccard(StandIn(), images[:0], masks[:0])
