"""Moving-shapes clips and mask propagation (Chapter 4's video section)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teachkit.attention import jaccard
from teachkit.data.clips import make_clip
from teachkit.models.vit import build_vit
from teachkit.video import (
    mask_to_patches,
    patch_features,
    pixel_patch_features,
    propagate_labels,
    propagate_mask,
)


def test_a_clip_moves_one_object_over_a_still_background():
    clip = make_clip(6, resolution=32, seed=1, shape="star")
    assert clip.frames.shape == (6, 3, 32, 32) and clip.frames.dtype == torch.uint8
    assert clip.masks.shape == (6, 32, 32) and clip.masks.dtype == torch.bool
    assert clip.label == 3 and len(clip) == 6
    assert all(m.any() for m in clip.masks)
    assert not torch.equal(clip.masks[0], clip.masks[-1])  # it moved
    # outside the object (in both frames) only the per-frame noise differs
    still = ~(clip.masks[0] | clip.masks[-1])
    diff = (clip.frames[0].float() - clip.frames[-1].float()).abs()[:, still]
    assert diff.mean() < 15
    again = make_clip(6, resolution=32, seed=1, shape="star")
    assert torch.equal(again.frames, clip.frames)


def test_clip_arguments_are_checked():
    with pytest.raises(ValueError, match="n_frames must be an integer >= 2"):
        make_clip(1)
    with pytest.raises(ValueError, match="unknown shape class 'blob'"):
        make_clip(4, shape="blob")
    with pytest.raises(ValueError, match="speed must be > 0"):
        make_clip(4, speed=0)


def test_identical_frames_propagate_the_first_mask_exactly():
    g = torch.Generator().manual_seed(0)
    one = F.normalize(torch.randn(1, 16, 8, generator=g), dim=-1)
    feats = one.expand(3, -1, -1)
    first = torch.zeros(4, 4)
    first[1:3, 1:3] = 1
    labels = propagate_labels(feats, (4, 4), first.flatten(), topk=1, radius=-1)
    torch.testing.assert_close(labels[1], first.flatten())
    torch.testing.assert_close(labels[2], first.flatten())


def test_labels_follow_a_feature_that_moves():
    """Frame 1 is frame 0 shifted one patch to the right: so are its labels."""
    g = torch.Generator().manual_seed(1)
    grid0 = F.normalize(torch.randn(4, 6, 16, generator=g), dim=-1)
    grid1 = torch.roll(grid0, shifts=1, dims=1)
    feats = torch.stack([grid0.reshape(24, 16), grid1.reshape(24, 16)])
    first = torch.zeros(4, 6)
    first[1, 2] = 1
    labels = propagate_labels(feats, (4, 6), first.flatten(), topk=1, radius=1)
    expected = torch.roll(first, shifts=1, dims=1).flatten()
    torch.testing.assert_close(labels[1], expected)
    # with a radius of 0 a patch can only copy its own position: the label stays behind
    stuck = propagate_labels(feats, (4, 6), first.flatten(), topk=1, radius=0)
    torch.testing.assert_close(stuck[1], first.flatten())


def test_mask_to_patches_averages_each_patch():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0:4, 0:2] = True  # half of patch (0, 0) of a 2 x 2 grid of 4-pixel patches
    torch.testing.assert_close(mask_to_patches(mask, (2, 2)), torch.tensor([0.5, 0, 0, 0]))


def test_propagation_with_a_vit_follows_the_object_better_than_a_still_mask():
    torch.manual_seed(0)
    model = build_vit("vit_nano", patch_size=4, img_size=32).eval()
    clip = make_clip(6, resolution=32, seed=0, decoy=False)
    feats, grid = patch_features(model, clip.frames)
    assert feats.shape == (6, 64, 128) and grid == (8, 8)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(6, 64))
    masks = propagate_mask(feats, grid, clip.masks[0])
    assert masks.shape == clip.masks.shape and torch.equal(masks[0], clip.masks[0])
    followed = torch.stack([jaccard(masks[t], clip.masks[t]) for t in range(1, 6)]).mean()
    still = torch.stack([jaccard(clip.masks[0], clip.masks[t]) for t in range(1, 6)]).mean()
    assert followed > still


def test_bad_inputs_are_explained():
    model = build_vit("vit_nano", patch_size=4, img_size=32)
    with pytest.raises(ValueError, match="must be a multiple of the model's patch_size"):
        patch_features(model, torch.zeros(2, 3, 30, 30, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"grid \(4, 4\) has 16 patches, features have 9"):
        propagate_labels(torch.zeros(2, 9, 4), (4, 4), torch.zeros(16))


def test_pixel_patch_features_are_each_patchs_centred_normalised_pixels():
    frames = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8)
    feats, grid = pixel_patch_features(frames, 4)
    assert grid == (2, 3) and feats.shape == (2, 6, 48)
    patch = frames[1, :, 4:8, 8:12].float().flatten()  # row 1, column 2 -> token 5
    expected = F.normalize(patch - patch.mean(), dim=0)
    assert torch.allclose(feats[1, 5], expected, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        pixel_patch_features(frames, 5)
