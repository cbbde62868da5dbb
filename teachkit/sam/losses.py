"""The losses of SAM's training (SAM paper, Sec. 3 and App. A): focal and dice on the mask
logits (weighted 20:1), MSE between predicted and actual IoU, and the minimum over the
three masks for ambiguous prompts. Used by :mod:`teachkit.sam.train`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from teachkit.sam.geometry import mask_iou

__all__ = ["focal_loss", "dice_loss", "iou_prediction_loss", "select_min_loss"]


def focal_loss(
    logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss (Lin et al., 2017), averaged over the pixels of each mask.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p = sigmoid(logit)``,
    ``p_t = p`` on object pixels and ``1 - p`` elsewhere, ``alpha_t = alpha`` on object
    pixels and ``1 - alpha`` elsewhere. Easy, confidently right pixels (``p_t -> 1``)
    contribute almost nothing, so the many easy background pixels do not drown the
    boundary.

    Args:
        logits: ``... x H x W`` mask logits.
        targets: ``... x H x W`` (bool or float in {0, 1}), broadcastable to ``logits``.
        alpha: weight of object pixels; a negative value weighs all pixels 1.
        gamma: focusing exponent; 0 gives the (alpha-weighted) binary cross-entropy.

    Returns:
        ``...`` loss per mask.
    """
    targets = targets.to(logits.dtype).expand_as(logits)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: Tensor, targets: Tensor, *, smooth: float = 1.0) -> Tensor:
    """Soft dice loss of each mask: ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)``.

    ``p = sigmoid(logit)``; ``s`` (1) keeps an empty target with an empty prediction at 0.
    Dice looks at the mask as a whole (overlap over size), so a small object counts as
    much as a big one -- the complement of the per-pixel focal loss.

    Args:
        logits: ``... x H x W`` mask logits.
        targets: ``... x H x W``, broadcastable to ``logits``.

    Returns:
        ``...`` loss per mask, in [0, 1].
    """
    targets = targets.to(logits.dtype).expand_as(logits)
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def iou_prediction_loss(predicted_iou: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
    """MSE between SAM's predicted IoUs and the actual IoUs of its masks.

    Args:
        predicted_iou: ``B x M`` from the IoU head.
        logits: ``B x M x H x W`` mask logits (thresholded at 0; no gradient).
        targets: ``B x H x W`` bool true masks.

    Returns:
        ``B x M`` squared errors.
    """
    with torch.no_grad():
        actual = mask_iou(logits > 0, targets.unsqueeze(1).bool())
    return (predicted_iou - actual) ** 2


def select_min_loss(per_mask_loss: Tensor) -> tuple[Tensor, Tensor]:
    """Keep only each prompt's best mask: ``B x M`` losses -> (``B`` losses, ``B`` indices).

    SAM backpropagates only the lowest loss of its 3 masks (the others get no gradient),
    so an ambiguous click does not average part and whole into a blurry compromise.
    """
    loss, index = per_mask_loss.min(dim=1)
    return loss, index


# ------------------------------------------------------------------ simulated user
