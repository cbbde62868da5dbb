"""teachkit.preprocess: the one ImageNet preprocessing of the chapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teachkit.preprocess import IMAGENET_MEAN, IMAGENET_STD, imagenet_preprocess


def _as_before(x: torch.Tensor, size: int | None, mean, std) -> torch.Tensor:
    """The arithmetic knn.imagenet_preprocess wrote out before teachkit.preprocess."""
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, (size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("size", [None, 16, 32, 48])
def test_imagenet_preprocess_is_bit_identical_to_its_former_code(size):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    expected = _as_before(images.float().div_(255.0), size, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(imagenet_preprocess(images, size=size), expected)


def test_the_old_import_paths_still_work():
    """The notebooks import imagenet_preprocess from teachkit.knn."""
    import teachkit.dino.augment as augment
    import teachkit.knn as knn

    assert knn.imagenet_preprocess is imagenet_preprocess
    assert {"imagenet_preprocess", "IMAGENET_MEAN", "IMAGENET_STD"} <= set(knn.__all__)
    assert (knn.IMAGENET_MEAN, knn.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (augment.IMAGENET_MEAN, augment.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)
