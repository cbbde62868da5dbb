"""Turning image batches into what a network sees: [0, 1], resized, normalised.

The course's models were trained on ImageNet-normalised inputs (the DINO recipe); every
evaluation -- k-NN, attention maps, DINO proposals for SAM, video propagation, the
supervised baselines and the DINO trainer's k-NN monitor -- preprocesses the same way::

    x = imagenet_preprocess(images)             # uint8 (B, 3, H, W) -> normalised float
    x = imagenet_preprocess(images, size=224)   # resized first, as the official models want
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_preprocess", "resize_and_normalise"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resize_and_normalise(
    x: Tensor, size: int | None, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """Float ``(B, 3, H, W)`` in [0, 1] -> ``(x - mean) / std`` per channel.

    ``size`` resizes to ``(B, 3, size, size)`` first, with bilinear antialiased
    interpolation (``align_corners=False``); ``None``, or images already that size,
    keep the images as they are. ``mean`` and ``std`` are three per-channel values.
    """
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def imagenet_preprocess(images: Tensor, size: int | None = None) -> Tensor:
    """uint8 ``(B, 3, H, W)`` in 0..255 -> float, scaled to [0, 1], ImageNet-normalised.

    ``size`` resizes to ``(B, 3, size, size)`` first, in [0, 1] and with bilinear
    antialiased interpolation, as the DINO trainer's k-NN monitor does (the official
    models at 224 px: ``size=224``); ``None`` keeps the images' size.
    """
    return resize_and_normalise(images.float().div_(255.0), size, IMAGENET_MEAN, IMAGENET_STD)
