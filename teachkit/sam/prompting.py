"""The simulated user of SAM's interactive training (SAM paper, App. A): a first click
inside the object, later clicks in the error region (a missed pixel is a positive
click, a leaked one a negative click), and jittered boxes. Used by
:mod:`teachkit.sam.train`; coordinates are XY in pixels of the model input.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_point_in_mask", "sample_error_point", "jitter_boxes"]


def _uniform_pixel(region: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A pixel drawn uniformly in each ``B x H x W`` region: (``B x 2`` xy, ``B`` found)."""
    b, h, w = region.shape
    score = torch.rand(b, h * w, generator=generator).to(region.device)
    score = torch.where(region.flatten(1), score, torch.full_like(score, -1.0))
    index = score.argmax(dim=1)
    xy = torch.stack([index % w, index // w], dim=1).to(torch.float32)
    return xy, region.flatten(1).any(dim=1)


def sample_point_in_mask(masks: Tensor, generator: torch.Generator) -> Tensor:
    """One point drawn uniformly inside each mask: ``B x H x W`` bool -> ``B x 2`` (x, y).

    Raises:
        ValueError: a mask is empty.
    """
    xy, found = _uniform_pixel(masks, generator)
    if not bool(found.all()):
        empty = (~found).nonzero().flatten().tolist()
        raise ValueError(f"cannot click inside an empty mask (rows {empty})")
    return xy


def sample_error_point(
    pred: Tensor, target: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The next training click: uniform in the error region of each answer.

    A pixel is drawn uniformly in ``pred XOR target``. Its label is 1 (positive: "this is
    object too") when it is a false negative and 0 (negative: "not this") when it is a
    false positive. A perfect answer has no error region: its point is ``(0, 0)`` with
    label -1, a padding point the prompt encoder ignores.

    Args:
        pred: ``B x H x W`` bool current answers.
        target: ``B x H x W`` bool true masks.
        generator: the random source.

    Returns:
        ``B x 2`` float (x, y) pixel coordinates and ``B`` int64 labels.
    """
    xy, found = _uniform_pixel(pred ^ target, generator)
    x, y = xy.long().unbind(1)
    missed = target[torch.arange(target.shape[0], device=target.device), y, x]
    labels = torch.where(found, missed.long(), torch.full_like(missed, -1, dtype=torch.long))
    return torch.where(found[:, None], xy, torch.zeros_like(xy)), labels


def jitter_boxes(
    boxes: Tensor, *, noise: float, max_pixels: float, size: int, generator: torch.Generator
) -> Tensor:
    """Perturb ``B x 4`` XYXY boxes like a sloppy user (SAM: std 10 % of the side, <= 20 px).

    Each coordinate moves by Gaussian noise with std ``noise x`` the box's width (x) or
    height (y), clipped to ``max_pixels``; the result stays inside ``[0, size - 1]``.
    """
    wh = (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)
    shift = torch.randn(boxes.shape, generator=generator).to(boxes.device) * noise * wh
    shift = shift.clamp(-max_pixels, max_pixels)
    return (boxes + shift).clamp(0, size - 1)
