"""Multi-crop: the per-image and the batched implementation agree on outputs and draws."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from teachkit.dino.augment import MultiCropAugmentation, MultiCropConfig, ViewParams
from teachkit.dino.batched_augment import BatchedMultiCrop

CFG = MultiCropConfig(global_size=32, local_size=16, local_crops_number=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _bounds(cfg: MultiCropConfig) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def test_both_implementations_return_the_same_shapes_dtypes_and_ranges():
    images = _images()
    g = torch.Generator().manual_seed(1)
    batched = BatchedMultiCrop(CFG)(images, generator=g)
    per_image = MultiCropAugmentation(CFG)(images[0], generator=g)
    from_pil = MultiCropAugmentation(CFG)(Image.fromarray(images[0].permute(1, 2, 0).numpy()))
    expected = [32, 32] + [16] * CFG.local_crops_number
    assert [c.shape for c in batched] == [(4, 3, s, s) for s in expected]
    assert [c.shape for c in per_image] == [(3, s, s) for s in expected]
    assert [c.shape for c in from_pil] == [(3, s, s) for s in expected]
    lo, hi = _bounds(CFG)
    for crop in batched + per_image + from_pil:
        assert crop.dtype == torch.float32
        assert (crop >= lo - 1e-5).all() and (crop <= hi + 1e-5).all()
    # float input in [0, 1] is accepted too and gives the same crops as uint8
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = BatchedMultiCrop(CFG)(images, generator=g1)
    b = BatchedMultiCrop(CFG)(images.float() / 255, generator=g2)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


def test_a_generator_seed_repeats_the_crops_and_another_seed_changes_them():
    images = _images()
    aug = BatchedMultiCrop(CFG)
    a = aug(images, generator=torch.Generator().manual_seed(3))
    b = aug(images, generator=torch.Generator().manual_seed(3))
    c = aug(images, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.allclose(a[0], c[0])
    per = MultiCropAugmentation(CFG)
    d = per(images[0], generator=torch.Generator().manual_seed(3))
    e = per(images[0], generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(d, e, strict=True))


def test_same_draws_give_the_same_pixels_in_both_implementations():
    """Colour jitter (random order), grayscale, blur, solarise, flip, normalise agree
    with torchvision's functional ops to float precision (full-image crops, so the
    resampling is the identity in both)."""
    cfg = MultiCropConfig(
        local_crops_number=2,
        local_size=32,
        blur_reference_size=32,
        jitter_p=1.0,
        grayscale_p=0.3,
        solarize_p=0.5,
    )
    per, batched = MultiCropAugmentation(cfg), BatchedMultiCrop(cfg)
    images = _images(6, seed=2)
    g = torch.Generator().manual_seed(0)
    draws = [per.sample_params(32, 32, generator=g) for _ in range(6)]
    for views in draws:
        for v in views:
            v.crop[:] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    views = [ViewParams.cat([draws[i][v] for i in range(6)]) for v in range(cfg.n_views)]
    assert any(v.blur_sigma.gt(0).any() for v in views) and any(v.flip.any() for v in views)
    out_b = batched(images, params=views)
    for i in range(6):
        out_p = per(images[i], params=draws[i])
        for v in range(cfg.n_views):
            torch.testing.assert_close(out_b[v][i], out_p[v], atol=2e-5, rtol=0)


def test_same_crop_box_gives_the_same_pixels_away_from_the_box_edge():
    cfg = MultiCropConfig(
        local_crops_number=0,
        interpolation="bilinear",
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=(0.0, 0.0, 0.0),
        solarize_p=0.0,
    )
    image = _images(1, seed=3)
    g = torch.Generator().manual_seed(0)
    draws = MultiCropAugmentation(cfg).sample_params(32, 32, generator=g)
    for v, flip in zip(draws, (False, True), strict=True):
        v.crop[:] = torch.tensor([4 / 32, 8 / 32, 16 / 32, 16 / 32])  # 2x upsampling
        v.flip[:] = flip
    a = BatchedMultiCrop(cfg)(image, params=draws)
    b = MultiCropAugmentation(cfg)(image[0], params=draws)
    for x, y in zip(a, b, strict=True):
        # the outermost output pixels read half a pixel beyond the box in grid_sample
        torch.testing.assert_close(x[0, :, 1:-1, 1:-1], y[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def _draws(n: int) -> tuple[list[ViewParams], list[ViewParams]]:
    """n draws of every view from each implementation (per image at 224 px, where the
    integer rounding of torchvision's crop boxes is negligible)."""
    cfg = MultiCropConfig(local_crops_number=1)
    g = torch.Generator().manual_seed(0)
    per = MultiCropAugmentation(cfg)
    singles = [per.sample_params(224, 224, generator=g) for _ in range(n)]
    per_views = [ViewParams.cat([s[v] for s in singles]) for v in range(cfg.n_views)]
    batched = BatchedMultiCrop(cfg).sample_params(n, generator=g, image_size=(224, 224))
    return per_views, batched


@pytest.fixture(scope="module")
def draws():
    return _draws(1500)


def test_crop_scale_and_aspect_ratio_follow_the_recipe_in_both(draws):
    per_views, batched = draws
    for views in (per_views, batched):
        for v, (lo, hi) in zip(
            views, [CFG.global_crops_scale] * 2 + [CFG.local_crops_scale], strict=True
        ):
            area = v.area_fraction()
            ratio = v.aspect_ratio(224, 224)
            assert area.min() >= lo * 0.97 and area.max() <= hi * 1.03
            assert ratio.min() >= 0.75 * 0.97 and ratio.max() <= 4 / 3 * 1.03
            assert (v.crop[:, :2] >= 0).all() and (v.crop[:, 0] + v.crop[:, 2] <= 1 + 1e-3).all()
    for a, b in zip(per_views, batched, strict=True):  # same distributions: means agree
        assert abs(a.area_fraction().mean() - b.area_fraction().mean()) < 0.02
        log_a, log_b = a.aspect_ratio(224, 224).log(), b.aspect_ratio(224, 224).log()
        assert abs(log_a.mean() - log_b.mean()) < 0.03
        assert abs(a.crop[:, 1].mean() - b.crop[:, 1].mean()) < 0.03  # left offset


def test_photometric_draws_have_the_recipe_rates_and_ranges_in_both(draws):
    tol = 0.045  # ~3.5 sigma of a rate over 1500 draws
    for views in draws:
        for i, v in enumerate(views):
            assert abs(v.flip.float().mean() - 0.5) < tol
            assert abs(v.jitter.float().mean() - 0.8) < tol
            assert abs(v.grayscale.float().mean() - 0.2) < tol
            blur_p = CFG.blur_p[min(i, 2)]
            assert abs((v.blur_sigma > 0).float().mean() - blur_p) < tol
            solarize_p = CFG.solarize_p if i == 1 else 0.0
            assert abs(v.solarize.float().mean() - solarize_p) < tol
            j = v.jitter
            assert v.brightness[j].min() >= 0.6 and v.brightness[j].max() <= 1.4
            assert v.contrast[j].min() >= 0.6 and v.contrast[j].max() <= 1.4
            assert v.saturation[j].min() >= 0.8 and v.saturation[j].max() <= 1.2
            assert v.hue[j].abs().max() <= 0.1
            assert abs(v.brightness[j].mean() - 1.0) < 0.02
            assert (v.brightness[~j] == 1).all() and (v.hue[~j] == 0).all()
            assert (v.jitter_order.sort(dim=1).values == torch.arange(4)).all()
            # every op is first about a quarter of the time (random order)
            first = torch.bincount(v.jitter_order[:, 0], minlength=4).float() / len(v)
            assert (first - 0.25).abs().max() < tol
            sigma = v.blur_sigma[v.blur_sigma > 0]
            lo, hi = CFG.blur_sigma_pixels()
            if len(sigma):
                assert sigma.min() >= lo and sigma.max() <= hi


def test_blur_sigma_scales_with_the_image_size():
    assert MultiCropConfig(global_size=224).blur_sigma_pixels() == pytest.approx((0.1, 2.0))
    assert MultiCropConfig(global_size=32).blur_sigma_pixels() == pytest.approx(
        (0.1 * 32 / 224, 2.0 * 32 / 224)
    )
    assert MultiCropConfig(global_size=224).blur_kernel_size(224) == 13  # +-3 sigma
    assert MultiCropConfig(global_size=32, blur_reference_size=32).blur_kernel_size(8) == 13
    assert (
        MultiCropConfig(global_size=32, blur_reference_size=32).blur_kernel_size(4) == 7
    )  # < 2 x 4


def test_ddp_slices_of_global_draws_match_the_global_batch():
    aug = BatchedMultiCrop(CFG)
    images = _images(8)
    full = aug.sample_params(8, generator=torch.Generator().manual_seed(0))
    whole = aug(images, params=full)
    halves = [
        aug(images[r * 4 : (r + 1) * 4], params=[p.slice(r * 4, (r + 1) * 4) for p in full])
        for r in range(2)
    ]
    for v in range(CFG.n_views):
        torch.testing.assert_close(torch.cat([halves[0][v], halves[1][v]]), whole[v])


def test_bad_configs_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="global_crops_scale must satisfy"):
        MultiCropConfig(global_crops_scale=(0.4, 1.5))
    with pytest.raises(ValueError, match="local_crops_number must be >= 0"):
        MultiCropConfig(local_crops_number=-1)
    with pytest.raises(ValueError, match=r"blur_p\[1\] is a probability"):
        MultiCropConfig(blur_p=(1.0, 1.2, 0.5))
    with pytest.raises(ValueError, match="interpolation must be"):
        MultiCropConfig(interpolation="nearest")
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\)"):
        BatchedMultiCrop(CFG)(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected one RGB image of shape \(3, H, W\)"):
        MultiCropAugmentation(CFG)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="ViewParams of length 4"):
        BatchedMultiCrop(CFG)(_images(4), params=BatchedMultiCrop(CFG).sample_params(3))
    with pytest.raises(ValueError, match="must be uint8 or float"):
        BatchedMultiCrop(CFG)(torch.zeros(2, 3, 32, 32, dtype=torch.int32))


def test_local_crops_are_a_small_part_of_the_image_and_global_crops_a_large_one():
    """Behaviour behind the recipe: a local crop of a half-black / half-white image is
    more often all one colour than a global crop."""
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[..., 16:] = 255
    cfg = MultiCropConfig(
        local_crops_number=1, jitter_p=0, grayscale_p=0, solarize_p=0, blur_p=(0, 0, 0)
    )
    crops = BatchedMultiCrop(cfg)(
        image.expand(400, -1, -1, -1), generator=torch.Generator().manual_seed(0)
    )
    pure = [float((c.flatten(2).std(dim=2).amax(dim=1) < 0.05).float().mean()) for c in crops]
    assert pure[2] > 0.1 and pure[2] > 3 * max(pure[0], pure[1])
