"""teachkit.preprocess: the one ImageNet preprocessing of the chapters and the DINO monitor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.monitor import eval_preprocess
from teachkit.preprocess import IMAGENET_MEAN, IMAGENET_STD, imagenet_preprocess


def _as_before(x: torch.Tensor, size: int | None, mean, std) -> torch.Tensor:
    """The arithmetic that knn.imagenet_preprocess and monitor.eval_preprocess each wrote
    out before they shared teachkit.preprocess.resize_and_normalise."""
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, (size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("size", [None, 16, 32, 48])
def test_imagenet_preprocess_is_bit_identical_to_its_former_code(size):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    expected = _as_before(images.float().div_(255.0), size, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(imagenet_preprocess(images, size=size), expected)


@pytest.mark.parametrize("global_size", [16, 32, 48])
def test_the_monitor_preprocessing_is_unchanged_and_matches_the_chapters(global_size):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    crops = MultiCropConfig(global_size=global_size, local_size=8)
    out = eval_preprocess(images, crops)
    assert torch.equal(out, _as_before(images.float() / 255, global_size, crops.mean, crops.std))
    assert torch.equal(out, imagenet_preprocess(images, size=global_size))  # bit for bit

    floats = torch.rand(2, 3, 32, 32)  # [0, 1] floats and a recipe's own statistics
    own = MultiCropConfig(global_size=global_size, local_size=8, mean=(0.5,) * 3, std=(0.25,) * 3)
    expected = _as_before(floats, global_size, own.mean, own.std)
    assert torch.equal(eval_preprocess(floats, own), expected)


def test_knn_and_the_multi_crop_use_the_one_normalisation():
    """One home: teachkit.preprocess defines the ImageNet normalisation; the k-NN and the
    multi-crop use that object, and neither offers it as its own name."""
    import teachkit.dino.augment as augment
    import teachkit.knn as knn

    assert knn.imagenet_preprocess is imagenet_preprocess
    assert (augment.IMAGENET_MEAN, augment.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)
    assert not {"imagenet_preprocess", "IMAGENET_MEAN", "IMAGENET_STD"} & set(knn.__all__)
    assert not {"IMAGENET_MEAN", "IMAGENET_STD"} & set(augment.__all__)
