"""Segment everything: prompt SAM with a grid of points and keep the good, distinct masks.

Chapter 6: SAM, encoder to decoder -- section "Automatic masks".

:class:`AutomaticMaskGenerator` follows the official ``SamAutomaticMaskGenerator``:

1. embed the image once (:class:`~teachkit.sam.predictor.SamPredictor`);
2. prompt with a ``points_per_side x points_per_side`` grid of single positive clicks, in
   batches of ``points_per_batch``, asking for the 3 multimask outputs per click;
3. drop masks whose predicted IoU is <= ``pred_iou_thresh``;
4. drop masks whose stability score is < ``stability_score_thresh``;
5. binarise at logit 0, take each mask's box and remove duplicates with box non-maximum
   suppression (IoU > ``box_nms_thresh``, scored by the predicted IoU,
   :func:`torchvision.ops.nms`);
6. optionally (``min_mask_region_area > 0``) fill small holes and remove small islands,
   then run NMS again, preferring unchanged masks.

The mask geometry of steps 2-6 (:func:`~teachkit.sam.geometry.build_point_grid`,
:func:`~teachkit.sam.geometry.stability_score`, :func:`~teachkit.sam.geometry.masks_to_boxes`,
:func:`~teachkit.sam.geometry.box_nms`, :func:`~teachkit.sam.geometry.remove_small_regions`)
lives in :mod:`teachkit.sam.geometry`; this module holds the generator that strings it together.

Simplifications, on purpose: only the single full-image crop is processed (the official
``crop_n_layers`` zoomed-in crops are left out, so its "box near a crop edge" filter,
which never fires for the full-image crop, is too), and masks are kept as boolean arrays
instead of run-length encodings.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from teachkit.sam import geometry
from teachkit.sam.model import Sam
from teachkit.sam.predictor import SamPredictor

__all__ = ["AutomaticMaskGenerator"]


def _check_count(name: str, value: object) -> None:
    """Raise unless ``value`` is an integer >= 1 (numpy integers too, bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_number(name: str, value: object, low: float, high: float = math.inf) -> None:
    """Raise unless ``value`` is a real number in ``[low, high]`` (NaN never is)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g} and finite"
        raise ValueError(f"{name} must be a number {bounds}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


@dataclass
class _Masks:
    """Candidate masks and their bookkeeping, all with the same leading length K."""

    masks: torch.Tensor  # K x H x W, logits until binarised, then bool
    iou_preds: torch.Tensor  # K
    points: torch.Tensor  # K x 2, the prompting click (X, Y), original pixels
    stability: torch.Tensor | None = None  # K
    boxes: torch.Tensor | None = None  # K x 4, XYXY inclusive

    def select(self, keep: torch.Tensor) -> _Masks:
        """The subset ``keep`` (bool mask or indices), in that order."""
        return _Masks(*(None if v is None else v[keep] for v in self._fields()))

    def _fields(self) -> tuple[torch.Tensor | None, ...]:
        return (self.masks, self.iou_preds, self.points, self.stability, self.boxes)

    @staticmethod
    def cat(parts: list[_Masks]) -> _Masks:
        columns = zip(*(p._fields() for p in parts), strict=True)
        return _Masks(*(torch.cat(list(col)) for col in columns))


class AutomaticMaskGenerator:
    """Generate masks for everything in an image (see the module docstring for the steps).

    Args:
        model: the SAM model.
        points_per_side: the click grid is ``points_per_side^2`` points (32 -> 1024).
        points_per_batch: clicks decoded together; higher is faster but holds
            ``3 * points_per_batch`` float logit maps of the full image size in memory
            (64 clicks on a 1024 x 1024 image: about 0.8 GB).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables);
            ``>= 0`` and finite. Not capped at 1: the IoU head is a regression that can
            predict more, and a huge value is a way to keep nothing.
        stability_score_thresh: keep masks with a stability score at least this
            (0 disables); in ``[0, 1]``.
        stability_score_offset: the logit shift of the stability score, ``>= 0``.
        box_nms_thresh: box IoU above which the lower-scored of two masks is dropped;
            in ``[0, 1]``.
        min_mask_region_area: if > 0, fill holes and remove islands smaller than this
            many pixels.

    Raises:
        ValueError: a count that is not an integer >= 1, or a threshold that is NaN,
            infinite or outside its range (the message names it).
    """

    def __init__(
        self,
        model: Sam,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        min_mask_region_area: int = 0,
    ) -> None:
        _check_count("points_per_batch", points_per_batch)
        _check_number("pred_iou_thresh", pred_iou_thresh, 0.0)
        _check_number("stability_score_thresh", stability_score_thresh, 0.0, 1.0)
        _check_number("stability_score_offset", stability_score_offset, 0.0)
        _check_number("box_nms_thresh", box_nms_thresh, 0.0, 1.0)
        _check_number("min_mask_region_area", min_mask_region_area, 0.0)
        self.predictor = SamPredictor(model)
        self.point_grid = geometry.build_point_grid(points_per_side)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.min_mask_region_area = min_mask_region_area

    def generate(self, image: np.ndarray | torch.Tensor) -> list[dict[str, Any]]:
        """Masks for the whole image, best first.

        Args:
            image: as for :meth:`SamPredictor.set_image` (numpy ``H x W x 3`` uint8 RGB,
                or a torch ``3 x H x W`` tensor).

        Returns:
            One dict per mask, as the official generator: ``segmentation`` (``H x W``
            bool), ``area`` (pixels), ``bbox`` (XYWH, ints), ``predicted_iou``,
            ``stability_score``, ``point_coords`` (``[[x, y]]``, the click) and
            ``crop_box`` (XYWH, always the full image here).
        """
        self.predictor.set_image(image)
        h, w = self.predictor.original_size
        points = self.point_grid * np.array([[w, h]])
        with torch.no_grad():
            batches = [
                self._process_batch(points[i : i + self.points_per_batch])
                for i in range(0, len(points), self.points_per_batch)
            ]
            data = _Masks.cat(batches)
            data = data.select(geometry.box_nms(data.boxes, data.iou_preds, self.box_nms_thresh))
            if self.min_mask_region_area > 0:
                data = self._remove_small_regions(data)
        self.predictor.reset_image()
        return self._records(data, h, w)

    def _process_batch(self, points: np.ndarray) -> _Masks:
        """Decode ``P x 2`` clicks (original pixels) into filtered candidate masks."""
        coords = torch.as_tensor(points, dtype=torch.float64)[:, None, :]  # P x 1 x 2
        labels = torch.ones(coords.shape[:2], dtype=torch.int64)
        logits, ious, _ = self.predictor.predict_torch(
            coords, labels, multimask_output=True, return_logits=True
        )  # P x 3 x H x W, P x 3
        per_mask = coords[:, 0].repeat_interleave(logits.shape[1], dim=0)  # click of each mask
        data = _Masks(logits.flatten(0, 1), ious.flatten(0, 1), per_mask.to(logits.device))
        if self.pred_iou_thresh > 0.0:
            data = data.select(data.iou_preds > self.pred_iou_thresh)
        threshold, offset = self.predictor.model.mask_threshold, self.stability_score_offset
        data.stability = geometry.stability_score(data.masks, threshold, offset)
        if self.stability_score_thresh > 0.0:
            data = data.select(data.stability >= self.stability_score_thresh)
        data.masks = data.masks > threshold
        data.boxes = geometry.masks_to_boxes(data.masks)
        return data

    def _remove_small_regions(self, data: _Masks) -> _Masks:
        """Clean every mask, recompute boxes and rerun NMS preferring unchanged masks."""
        if len(data.masks) == 0:
            return data
        cleaned, unchanged = [], []
        area = self.min_mask_region_area
        for mask in data.masks.cpu().numpy():
            mask, filled = geometry.remove_small_regions(mask, area, "holes")
            mask, removed = geometry.remove_small_regions(mask, area, "islands")
            cleaned.append(torch.from_numpy(mask))
            unchanged.append(float(not (filled or removed)))
        data.masks = torch.stack(cleaned).to(data.iou_preds.device)
        data.boxes = geometry.masks_to_boxes(data.masks)
        scores = torch.tensor(unchanged, device=data.boxes.device)
        return data.select(geometry.box_nms(data.boxes, scores, self.box_nms_thresh))

    @staticmethod
    def _records(data: _Masks, h: int, w: int) -> list[dict[str, Any]]:
        """The official list-of-dicts output."""
        records = []
        for i in range(len(data.masks)):
            mask = data.masks[i].cpu().numpy()
            records.append(
                {
                    "segmentation": mask,
                    "area": int(mask.sum()),
                    "bbox": geometry.box_xyxy_to_xywh(data.boxes[i]).tolist(),
                    "predicted_iou": float(data.iou_preds[i]),
                    "point_coords": [data.points[i].tolist()],
                    "stability_score": float(data.stability[i]),
                    "crop_box": [0, 0, w, h],
                }
            )
        return records
