"""Mask geometry: boxes, overlap, centres, stability and clean-up of boolean masks.

Chapter 6: SAM, encoder to decoder -- the bookkeeping that the pipeline stages share (the
official code keeps it in ``segment_anything/utils/amg.py``). Nothing here runs a model,
so every stage can use it without importing another stage:

* boxes -- :func:`masks_to_boxes` (XYXY, inclusive pixel indices), :func:`box_xyxy_to_xywh`
  and box non-maximum suppression (:func:`box_nms`);
* overlap -- :func:`mask_iou` and the mIoU of two stacks, :func:`mean_iou`;
* centres -- :func:`mask_center`, the pixel farthest from a mask's boundary (the first
  click of the evaluation);
* the automatic generator's filters -- :func:`stability_score`, :func:`remove_small_regions`
  and the click grid, :func:`build_point_grid`.

Coordinates are (X, Y) = (column, row); masks are ``... x H x W``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import nms

__all__ = [
    "box_nms",
    "box_xyxy_to_xywh",
    "build_point_grid",
    "mask_center",
    "mask_iou",
    "masks_to_boxes",
    "mean_iou",
    "remove_small_regions",
    "stability_score",
]


# ------------------------------------------------------------------------------ boxes
def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """The tight box around each boolean mask, XYXY with *inclusive* pixel indices.

    ``x1`` / ``y1`` are the last column / row that holds a mask pixel (so a 1-pixel mask
    at (x, y) has box ``[x, y, x, y]``), as in the official code. An empty mask gets
    ``[0, 0, 0, 0]``.

    Args:
        masks: ``... x H x W`` bool.

    Returns:
        ``... x 4`` int64.
    """
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1).to(torch.uint8)  # ... x H: row holds a pixel
    cols = masks.any(dim=-2).to(torch.uint8)  # ... x W
    y0 = rows.argmax(dim=-1)
    y1 = h - 1 - rows.flip(-1).argmax(dim=-1)
    x0 = cols.argmax(dim=-1)
    x1 = w - 1 - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    nonempty = rows.amax(dim=-1, keepdim=True)  # 1 if the mask has a pixel, else 0
    return boxes * nonempty


def box_xyxy_to_xywh(box: torch.Tensor) -> torch.Tensor:
    """``... x 4`` XYXY -> XYWH (top-left corner, width = x1 - x0, height = y1 - y0)."""
    x0, y0, x1, y1 = box.unbind(-1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression of masks by their boxes (:func:`torchvision.ops.nms`).

    Going from the best score down, a box is dropped when its IoU with an already kept
    box is above ``iou_threshold``: of two near-duplicate masks only the better stays.

    Args:
        boxes: ``K x 4`` XYXY boxes (e.g. from :func:`masks_to_boxes`).
        scores: ``K`` scores, higher is better.
        iou_threshold: box IoU above which the lower-scored box is suppressed.

    Returns:
        int64 indices of the kept boxes, best score first.
    """
    return nms(boxes.float(), scores.float(), iou_threshold)


# ---------------------------------------------------------------------------- overlap
def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boolean masks, over the last two axes.

    Args:
        pred: ``... x H x W`` bool.
        target: ``... x H x W`` bool, broadcastable against ``pred``.

    Returns:
        ``...`` float32 IoU; two empty masks agree perfectly (IoU 1).
    """
    inter = (pred & target).sum(dim=(-2, -1)).float()
    union = (pred | target).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mean_iou(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """mIoU: the mean over ``N`` masks (``N x H x W`` bool each) of their IoU."""
    if preds.shape != targets.shape or preds.ndim != 3:
        raise ValueError(
            f"expected two N x H x W mask stacks of the same shape, got {tuple(preds.shape)} "
            f"and {tuple(targets.shape)}"
        )
    return float(mask_iou(preds, targets).mean())


# ---------------------------------------------------------------------------- centres
def _deepest_pixel(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``region`` (H x W bool) farthest from its boundary.

    The image border counts as boundary; ties go to the first pixel in raster order.
    """
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def mask_center(mask: torch.Tensor) -> torch.Tensor:
    """The first-click position for one mask: its pixel farthest from the boundary.

    Args:
        mask: ``H x W`` bool, not empty.

    Returns:
        ``2`` float tensor ``(x, y)`` (column, row).
    """
    if not bool(mask.any()):
        raise ValueError("mask_center needs a non-empty mask")
    return torch.tensor(_deepest_pixel(mask.cpu().numpy()), dtype=torch.float32)


# ------------------------------------------------------------- the generator's filters
def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n^2 x 2`` points (X, Y) at the centres of an ``n x n`` grid of cells of ``[0, 1]^2``.

    Row-major: X varies fastest. Multiply by ``(W, H)`` to get pixels.

    Raises:
        ValueError: ``n_per_side`` is not an integer >= 1 (numpy integers count, bools not).
    """
    is_integer = isinstance(n_per_side, numbers.Integral) and not isinstance(n_per_side, bool)
    if not is_integer or n_per_side < 1:
        raise ValueError(f"points_per_side must be an integer >= 1, got {n_per_side!r}")
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # both n x n, xs varies along columns
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def stability_score(
    mask_logits: torch.Tensor, mask_threshold: float, offset: float
) -> torch.Tensor:
    """How little a mask changes when the binarisation threshold moves by ``+-offset``.

    ``IoU(logits > t + offset, logits > t - offset)``; the first mask lies inside the
    second, so the IoU is ``|high| / |low|``. A mask with an empty ``low`` set scores 0
    (the official code returns NaN there, which its filter also rejects).

    Args:
        mask_logits: ``... x H x W`` logits.
        mask_threshold: the cut-off t (0 for SAM).
        offset: the shift (1.0 by default in the generator).

    Returns:
        ``...`` float32 scores in ``[0, 1]``.
    """
    high = (mask_logits > mask_threshold + offset).flatten(-2).sum(-1)
    low = (mask_logits > mask_threshold - offset).flatten(-2).sum(-1)
    return torch.where(low > 0, high / low.clamp(min=1), torch.zeros((), dtype=torch.float32))


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill small holes in, or remove small islands from, a boolean ``H x W`` mask.

    Regions are 8-connected (:func:`scipy.ndimage.label`). A region is small when it
    has fewer than ``area_thresh`` pixels.

    Args:
        mask: ``H x W`` bool.
        area_thresh: minimum region area in pixels.
        mode: ``"holes"`` fills small background regions; ``"islands"`` removes small
            foreground regions (if all are small, the largest is kept).

    Returns:
        The new mask and whether it changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    working = mask != fill_holes  # holes: the background; islands: the foreground
    regions, n = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]  # region i + 1 has sizes[i]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    if fill_holes:
        return np.isin(regions, [0, *small]), True  # label 0 = the mask itself
    keep = [i for i in range(1, n + 1) if i not in small] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, keep), True
