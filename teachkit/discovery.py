"""Label-free object discovery: SAM masks every clicked region, DINO says which are objects.

Chapter 7 (DINO + SAM), section "Several critters: which regions are objects?". With one
object on a plain background any saliency finds it; with several objects among clutter
the question becomes *which* regions are objects. The recipe, per image::

    cand = segment_clicks(predictor, image, saliency)        # a SAM mask per salient click
    keep = keep_distinct(cand.masks, cand.saliency)         # ranked, duplicates dropped
    match = match_objects(cand.masks[keep], true_masks)     # scoring only: recall at IoU 0.5

:func:`discover_objects` does the first two lines in one call.

1. **Click**: the patches that hold ``mass`` of the saliency (the DINO paper's 60 % rule,
   :func:`~teachkit.attention.mass_threshold`) are clicked at their centres, every
   ``stride``-th patch in each direction.
2. **Segment**: SAM answers each click with three masks and we keep the one it ranks
   first. (SAM's automatic mask generator also clicks a grid, but keeps every mask that
   passes its quality thresholds; here a saliency map chooses where to click.)
3. **Rank**: by the mean saliency inside each mask (``rank="saliency"``: the saliency map
   decides what is an object), by SAM's predicted IoU (``rank="sam"``: SAM alone), or by
   their product (``rank="joint"``: both must agree).
4. **Deduplicate**: walking down the ranking, a mask is dropped when more than half of
   the smaller of it and a kept mask overlap, or when it is smaller than ``min_area``;
   at most ``max_objects`` are kept.

Scoring follows object-discovery practice: a true object is *found* when a kept mask
overlaps it with IoU >= 0.5, each mask matching at most one object (greedy, best IoU
first); recall is found / true objects and precision found / kept masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from teachkit.attention import mass_threshold
from teachkit.infra.tensor_checks import describe, require_positive_int, require_tensor
from teachkit.sam.geometry import mask_iou
from teachkit.sam.predictor import SamPredictor

__all__ = [
    "RANKS",
    "Candidates",
    "ObjectMatch",
    "click_points",
    "discover_objects",
    "keep_distinct",
    "match_objects",
    "segment_clicks",
]

RANKS = ("saliency", "sam", "joint")
"""How :func:`discover_objects` orders SAM's masks: by the mean saliency inside each mask,
by SAM's own predicted IoU, or by their product."""


def _check_saliency(saliency: Tensor) -> None:
    require_tensor("saliency", saliency, "of shape (h, w)")
    if saliency.ndim != 2 or 0 in saliency.shape:
        raise ValueError(f"saliency must be one (h, w) map; got shape {tuple(saliency.shape)}")
    if not torch.isfinite(saliency).all() or (saliency < 0).any():
        raise ValueError("saliency must be finite and non-negative")


def _blocks(saliency: Tensor, image_size: tuple[int, int]) -> tuple[int, int]:
    (h, w), (H, W) = saliency.shape, image_size
    if H % h or W % w:
        raise ValueError(
            f"image size {(H, W)} must be a whole multiple of the saliency grid {(h, w)}"
        )
    return H // h, W // w


def click_points(
    saliency: Tensor, image_size: tuple[int, int], *, mass: float = 0.6, stride: int = 2
) -> Tensor:
    """One positive click at the centre of every salient patch of a sub-grid.

    Args:
        saliency: ``(h, w)`` non-negative map on the patch grid.
        image_size: ``(H, W)`` of the image SAM sees, a whole multiple of ``(h, w)``.
        mass: fraction of the map's mass whose patches are clicked (1.0: every patch).
        stride: click every ``stride``-th patch in each direction, starting at
            ``stride // 2`` (1: every salient patch).

    Returns:
        ``(P, 2)`` float64 (x, y) pixel coordinates, ``P >= 1``: when no salient patch
        lies on the sub-grid, the single most salient patch is clicked.
    """
    _check_saliency(saliency)
    require_positive_int("stride", stride)
    bh, bw = _blocks(saliency, image_size)
    keep = mass_threshold(saliency[None].float(), mass=mass)[0]
    grid = torch.zeros_like(keep)
    grid[stride // 2 :: stride, stride // 2 :: stride] = True
    if not (keep & grid).any():
        grid = saliency == saliency.max()
        keep = grid
    ys, xs = (keep & grid).nonzero(as_tuple=True)
    return torch.stack([xs * bw + bw / 2, ys * bh + bh / 2], dim=1).double()


@dataclass
class Candidates:
    """SAM's answer to every click of one image, before ranking.

    Attributes:
        masks: ``(P, H, W)`` bool, one per click (the mask SAM ranks first of its three).
        saliency: ``(P,)`` mean saliency inside each mask (0 for an empty mask).
        sam_scores: ``(P,)`` SAM's predicted IoU of each mask.
        clicks: ``(P, 2)`` the clicks (x, y pixels).
    """

    masks: Tensor
    saliency: Tensor
    sam_scores: Tensor
    clicks: Tensor

    def __len__(self) -> int:
        return self.masks.shape[0]

    def ranked(self, rank: str) -> Tensor:
        """``(P,)`` the score :func:`keep_distinct` orders by: ``"saliency"``, ``"sam"`` or
        ``"joint"`` (the saliency times SAM's predicted IoU)."""
        if rank not in RANKS:
            raise ValueError(f"unknown rank {rank!r}; expected one of {RANKS}")
        if rank == "saliency":
            return self.saliency
        if rank == "sam":
            return self.sam_scores
        return self.saliency * self.sam_scores


def _check_image(image: Tensor) -> None:
    require_tensor("image", image, "of shape (3, H, W), uint8")
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"image must be one (3, H, W) uint8 RGB image; got {tuple(image.shape)} {image.dtype}"
        )


@torch.no_grad()
def segment_clicks(
    predictor: SamPredictor,
    image: Tensor | None,
    saliency: Tensor,
    *,
    mass: float = 0.6,
    stride: int = 2,
) -> Candidates:
    """Click the salient patches (:func:`click_points`) and let SAM mask each click.

    Args:
        predictor: a :class:`SamPredictor`.
        image: ``(3, H, W)`` uint8 RGB, set on the predictor here and reset after; or
            ``None`` to click the image already set on it (``predictor.set_image``), which
            stays set: set an image once to segment it with several maps.
        saliency: ``(h, w)`` non-negative map on the patch grid of the image.
        mass, stride: which patches are clicked.

    Returns:
        :class:`Candidates`, one mask per click, in click order.
    """
    if not isinstance(predictor, SamPredictor):
        raise TypeError(
            f"predictor must be a SamPredictor (SamPredictor(sam)); got {describe(predictor)}"
        )
    if image is None:
        if predictor.original_size is None:
            raise ValueError("image=None clicks the predictor's image, but none is set")
        size = predictor.original_size
    else:
        _check_image(image)
        size = (image.shape[-2], image.shape[-1])
    clicks = click_points(saliency, size, mass=mass, stride=stride)
    bh, bw = _blocks(saliency, size)
    if image is not None:
        predictor.set_image(image)
    labels = torch.ones(len(clicks), 1, dtype=torch.long)
    out, iou, _ = predictor.predict_torch(point_coords=clicks[:, None], point_labels=labels)
    if image is not None:
        predictor.reset_image()
    first, best = torch.arange(len(clicks)), iou.argmax(dim=1)
    masks, sam_scores = out[first, best].cpu(), iou[first, best].float().cpu()
    fine = saliency.float().repeat_interleave(bh, 0).repeat_interleave(bw, 1)
    area = masks.flatten(1).sum(dim=1)
    inside = (masks.flatten(1).float() @ fine.flatten()) / area.clamp(min=1)
    return Candidates(masks, inside, sam_scores, clicks)


def keep_distinct(
    masks: Tensor, scores: Tensor, *, max_objects: int = 4, min_area: int = 30
) -> Tensor:
    """Walk down ``scores`` and keep masks that do not repeat a kept one.

    A mask is dropped when it has fewer than ``min_area`` pixels, or when more than half
    of the smaller of it and a kept mask overlap (the same object, or a part of it).

    Args:
        masks: ``(P, H, W)`` bool.
        scores: ``(P,)`` higher first; ties keep the masks' order.
        max_objects: at most this many are kept.
        min_area: the fewest pixels a kept mask has.

    Returns:
        ``(K,)`` int64 indices into ``masks``, best first, ``K <= max_objects``.
    """
    require_tensor("masks", masks, "of shape (P, H, W), bool")
    require_tensor("scores", scores, "of shape (P,)")
    if masks.ndim != 3 or scores.shape != masks.shape[:1]:
        raise ValueError(
            f"masks must be (P, H, W) and scores (P,); got {tuple(masks.shape)} and "
            f"{tuple(scores.shape)}"
        )
    require_positive_int("max_objects", max_objects)
    masks = masks.bool()
    area = masks.flatten(1).sum(dim=1)
    kept: list[int] = []
    for i in torch.argsort(-scores.float(), stable=True).tolist():
        if len(kept) == max_objects:
            break
        if area[i] < min_area:
            continue
        if any((masks[i] & masks[k]).sum() > 0.5 * min(area[i], area[k]) for k in kept):
            continue
        kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


@torch.no_grad()
def discover_objects(
    predictor: SamPredictor,
    image: Tensor,
    saliency: Tensor,
    *,
    mass: float = 0.6,
    stride: int = 2,
    rank: str = "saliency",
    max_objects: int = 4,
    min_area: int = 30,
) -> Tensor:
    """Label-free objects of one image: :func:`segment_clicks`, then :func:`keep_distinct`.

    Args:
        predictor: a :class:`SamPredictor`.
        image: ``(3, H, W)`` uint8 RGB.
        saliency: ``(h, w)`` non-negative map on the patch grid of the image.
        mass, stride: which patches are clicked (:func:`click_points`).
        rank: ``"saliency"`` (the mean saliency inside each mask decides what is an
            object), ``"sam"`` (SAM's predicted IoU decides) or ``"joint"`` (their
            product: in Chapter 7 it finds the most critters with DINO's maps).
        max_objects, min_area: see :func:`keep_distinct`.

    Returns:
        ``(K, H, W)`` bool masks, best first, ``K <= max_objects``.
    """
    if rank not in RANKS:
        raise ValueError(f"unknown rank {rank!r}; expected one of {RANKS}")
    cand = segment_clicks(predictor, image, saliency, mass=mass, stride=stride)
    keep = keep_distinct(cand.masks, cand.ranked(rank), max_objects=max_objects, min_area=min_area)
    return cand.masks[keep]


@dataclass
class ObjectMatch:
    """How the kept masks of one image match its true objects.

    Attributes:
        found: true objects matched by a kept mask with IoU >= the threshold.
        objects: number of true objects.
        kept: number of kept masks.
        best_iou: ``(objects,)`` each true object's best IoU with any kept mask (0 if none).
    """

    found: int
    objects: int
    kept: int
    best_iou: Tensor


def match_objects(pred_masks: Tensor, true_masks: Tensor, *, iou: float = 0.5) -> ObjectMatch:
    """One-to-one greedy matching of kept masks to true objects, best IoU first.

    Args:
        pred_masks: ``(K, H, W)`` bool, K may be 0.
        true_masks: ``(M, H, W)`` bool, M >= 1.
        iou: the IoU a match needs, in (0, 1].

    Returns:
        :class:`ObjectMatch`.
    """
    require_tensor("pred_masks", pred_masks, "of shape (K, H, W)")
    require_tensor("true_masks", true_masks, "of shape (M, H, W)")
    if pred_masks.ndim != 3 or true_masks.ndim != 3 or true_masks.shape[0] == 0:
        raise ValueError(
            f"pred_masks must be (K, H, W) and true_masks (M, H, W) with M >= 1; got "
            f"{tuple(pred_masks.shape)} and {tuple(true_masks.shape)}"
        )
    if pred_masks.shape[-2:] != true_masks.shape[-2:]:
        raise ValueError(
            f"pred_masks are {tuple(pred_masks.shape[-2:])} but true_masks are "
            f"{tuple(true_masks.shape[-2:])}"
        )
    if not 0 < iou <= 1:
        raise ValueError(f"iou must lie in (0, 1]; got {iou}")
    m, k = true_masks.shape[0], pred_masks.shape[0]
    if k == 0:
        return ObjectMatch(0, m, 0, torch.zeros(m))
    ious = mask_iou(pred_masks.bool()[None], true_masks.bool()[:, None])  # (M, K)
    found, free_true, free_pred = 0, set(range(m)), set(range(k))
    for flat in torch.argsort(ious.flatten(), descending=True, stable=True).tolist():
        t, p = divmod(flat, k)
        if ious[t, p] < iou:
            break
        if t in free_true and p in free_pred:
            found += 1
            free_true.discard(t)
            free_pred.discard(p)
    return ObjectMatch(found, m, k, ious.max(dim=1).values)
