"""Multi-crop against a reference: lightly's ``DINOTransform`` (issue 13, section 3).

``tests/test_dino_augment.py`` checks teachkit's two implementations against each other
and against the recipe's numbers. Here the recipe is read from lightly (a reference for
tests only, never the implementation): its view transforms are inspected for their
settings, and its crop boxes are drawn with torchvision's ``RandomResizedCrop`` as it
configures it. teachkit's draws must follow the same distributions:

* crop area and aspect ratio: two-sample Kolmogorov-Smirnov tests, 4,000 draws each;
* colour-jitter factors and blur sigmas: one-sample KS tests against lightly's uniform
  ranges;
* flip, jitter, grayscale, blur and solarisation rates (solarisation on the second
  global view only): exact binomial tests against lightly's probabilities.

Every test uses the significance level ``ALPHA = 1e-4`` with fixed seeds: a correct
implementation passes (and keeps passing: the draws are deterministic), while a wrong
rate (0.2 instead of 0.1 over 4,000 draws) or range is rejected with p < 1e-20.
"""

from __future__ import annotations

import math

import pytest
import torch
from lightly.transforms import dino_transform  # a test requirement: never skipped
from PIL import Image
from scipy import stats
from torchvision import transforms as T

from teachkit.dino.augment import MultiCropAugmentation, MultiCropConfig, ViewParams
from teachkit.dino.batched_augment import BatchedMultiCrop

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

N = 4000
ALPHA = 1e-4
CFG = MultiCropConfig(local_crops_number=2)  # teachkit's defaults, fewer local views


def lightly_views() -> list[dict]:
    """Per view, the settings of lightly's DINOTransform with CFG's number of views."""
    ref = dino_transform.DINOTransform(n_local_views=CFG.local_crops_number)
    views = []
    for view in ref.transforms:
        ops = {type(op).__name__: op for op in view.transform.transforms}
        crop, jitter = ops["RandomResizedCrop"], ops["RandomApply"]
        (colour,) = jitter.transforms
        views.append(
            dict(
                size=crop.size[0],
                scale=tuple(crop.scale),
                ratio=tuple(crop.ratio),
                flip_p=ops["RandomHorizontalFlip"].p,
                vflip_p=ops["RandomVerticalFlip"].p,
                jitter_p=jitter.p,
                brightness=tuple(colour.brightness),
                contrast=tuple(colour.contrast),
                saturation=tuple(colour.saturation),
                hue=tuple(colour.hue),
                grayscale_p=ops["RandomGrayscale"].p,
                blur_p=ops["GaussianBlur"].prob,
                blur_sigma=tuple(ops["GaussianBlur"].sigmas),
                solarize_p=ops["RandomSolarization"].prob,
            )
        )
    return views


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return lightly_views()


def batched_draws() -> list[ViewParams]:
    g = torch.Generator().manual_seed(0)
    return BatchedMultiCrop(CFG).sample_params(N, generator=g, image_size=(224, 224))


def per_image_draws() -> list[ViewParams]:
    g = torch.Generator().manual_seed(1)
    per = MultiCropAugmentation(CFG)
    singles = [per.sample_params(224, 224, generator=g) for _ in range(N)]
    return [ViewParams.cat([s[v] for s in singles]) for v in range(CFG.n_views)]


@pytest.fixture(scope="module", params=["batched", "per_image"])
def draws(request) -> list[ViewParams]:
    return batched_draws() if request.param == "batched" else per_image_draws()


def test_the_recipe_is_lightlys(reference):
    """Every setting of every view, teachkit's defaults against lightly's."""
    assert len(reference) == CFG.n_views
    scale_to_reference = CFG.blur_reference_size / CFG.global_size
    for i, (ref, ours) in enumerate(zip(reference, CFG.views(), strict=True)):
        assert ours.scale == pytest.approx(ref["scale"]), i
        assert CFG.crop_ratio == pytest.approx(ref["ratio"])
        assert (CFG.flip_p, 0.0) == (ref["flip_p"], ref["vflip_p"])
        assert CFG.jitter_p == pytest.approx(ref["jitter_p"])
        assert (1 - CFG.brightness, 1 + CFG.brightness) == pytest.approx(ref["brightness"])
        assert (1 - CFG.contrast, 1 + CFG.contrast) == pytest.approx(ref["contrast"])
        assert (1 - CFG.saturation, 1 + CFG.saturation) == pytest.approx(ref["saturation"])
        assert (-CFG.hue, CFG.hue) == pytest.approx(ref["hue"])
        assert CFG.grayscale_p == pytest.approx(ref["grayscale_p"])
        assert ours.blur_p == pytest.approx(ref["blur_p"]), i
        # teachkit scales the blur to its image size; in 224-px units it is lightly's
        sigma = tuple(s * scale_to_reference for s in CFG.blur_sigma_pixels())
        assert sigma == pytest.approx(ref["blur_sigma"])
        assert ours.solarize_p == pytest.approx(ref["solarize_p"]), i
    # solarisation on the second global view only, in both
    assert [r["solarize_p"] > 0 for r in reference] == [False, True] + [False] * 2


def lightly_crops(scale: tuple[float, float], ratio: tuple[float, float], seed: int):
    """N boxes from torchvision's RandomResizedCrop.get_params, as lightly calls it."""
    torch.manual_seed(seed)
    image = Image.new("RGB", (224, 224))
    boxes = torch.tensor([T.RandomResizedCrop.get_params(image, scale, ratio) for _ in range(N)])
    area = boxes[:, 2] * boxes[:, 3] / 224**2
    return area, boxes[:, 3] / boxes[:, 2]  # (h, w) -> area fraction, w / h


def test_crop_area_and_aspect_ratio_follow_lightly(reference, draws):
    for i, (ref, view) in enumerate(zip(reference, draws, strict=True)):
        area, ratio = lightly_crops(ref["scale"], ref["ratio"], seed=10 + i)
        p_area = stats.ks_2samp(view.area_fraction().numpy(), area.numpy()).pvalue
        p_ratio = stats.ks_2samp(
            view.aspect_ratio(224, 224).log().numpy(), ratio.log().numpy()
        ).pvalue
        assert p_area > ALPHA and p_ratio > ALPHA, (i, p_area, p_ratio)


def binomial_p(hits: torch.Tensor, p: float) -> float:
    """Two-sided exact binomial test of a rate; 1.0 for p in {0, 1} when it holds."""
    k, n = int(hits.sum()), len(hits)
    if p in (0.0, 1.0):
        return 1.0 if k == round(p * n) else 0.0
    return stats.binomtest(k, n, p).pvalue


def test_flip_jitter_grayscale_blur_and_solarise_rates_follow_lightly(reference, draws):
    for i, (ref, view) in enumerate(zip(reference, draws, strict=True)):
        rates = {
            "flip": (view.flip, ref["flip_p"]),
            "jitter": (view.jitter, ref["jitter_p"]),
            "grayscale": (view.grayscale, ref["grayscale_p"]),
            "blur": (view.blur_sigma > 0, ref["blur_p"]),
            "solarize": (view.solarize, ref["solarize_p"]),
        }
        for name, (hits, p) in rates.items():
            assert binomial_p(hits, p) > ALPHA, (i, name, hits.float().mean().item(), p)


def test_jitter_factors_and_blur_sigmas_are_lightlys_uniform_ranges(reference, draws):
    scale_to_reference = CFG.blur_reference_size / CFG.global_size
    for i, (ref, view) in enumerate(zip(reference, draws, strict=True)):
        j = view.jitter
        for name in ("brightness", "contrast", "saturation", "hue"):
            lo, hi = ref[name]
            values = getattr(view, name)[j].double().numpy()
            p = stats.kstest(values, stats.uniform(lo, hi - lo).cdf).pvalue
            assert p > ALPHA, (i, name, p)
        sigma = view.blur_sigma[view.blur_sigma > 0].double() * scale_to_reference
        if len(sigma) > 100:
            lo, hi = ref["blur_sigma"]
            p = stats.kstest(sigma.numpy(), stats.uniform(lo, hi - lo).cdf).pvalue
            assert p > ALPHA, (i, "blur sigma", p)


def test_the_tests_reject_a_wrong_recipe(reference):
    """The tolerance is not so loose that a changed recipe would pass."""
    wrong = MultiCropConfig(local_crops_number=2, global_crops_scale=(0.3, 1.0), flip_p=0.45)
    g = torch.Generator().manual_seed(0)
    view = BatchedMultiCrop(wrong).sample_params(N, generator=g, image_size=(224, 224))[0]
    area, _ = lightly_crops(reference[0]["scale"], reference[0]["ratio"], seed=10)
    assert stats.ks_2samp(view.area_fraction().numpy(), area.numpy()).pvalue < ALPHA
    assert binomial_p(view.flip, reference[0]["flip_p"]) < ALPHA  # 0.45 vs 0.5: z = 6.3
    assert math.isclose(reference[0]["flip_p"], 0.5)
