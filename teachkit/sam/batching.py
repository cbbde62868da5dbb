"""Decode many prompts against one image in batches of bounded size.

Chapter 6: SAM, encoder to decoder -- section "Automatic masks: segment everything".

The mask decoder's memory grows linearly with the number of prompts decoded together.
Per prompt it holds its own copy of the image embedding (``C x g x g``), the upscaled
embedding (``C/8 x 4g x 4g``) and its mask logits at the low resolution, at the padded
input square (``img_size^2``) and at the original image size. For the official ViT-B
and a 32 x 32 grid of clicks decoded at once, that is 1,024 x 3 x 1024^2 float32 logits
(12.9 GB) plus 1,024 x 32 x 256^2 upscaled embeddings (8.6 GB): more than a 15 GB Colab
T4 has. The official automatic mask generator therefore decodes ``points_per_batch = 64``
clicks at a time (0.8 GB + 0.5 GB), and so do :func:`click_scores` and
:class:`~teachkit.sam.automatic.AutomaticMaskGenerator`.

    >>> iou, stability = click_scores(predictor, clicks, points_per_batch=64)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from teachkit.sam.geometry import stability_score
from teachkit.sam.predictor import SamPredictor

__all__ = ["POINTS_PER_BATCH", "in_batches", "click_scores"]

POINTS_PER_BATCH: int = 64
"""Clicks decoded together by default: the official ``points_per_batch``."""


def in_batches(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    *inputs: torch.Tensor,
    batch_size: int,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``fn`` applied to consecutive slices of at most ``batch_size`` rows, concatenated.

    The same result as ``fn(*inputs)`` when ``fn`` treats its rows independently, with
    at most ``batch_size`` rows in flight. Move the outputs off the accelerator inside
    ``fn`` (``.cpu()``) when they are large, or only the working memory is bounded.

    Args:
        fn: maps ``b x ...`` slices of every input to a tensor, or a tuple of tensors,
            with ``b`` rows each.
        inputs: tensors with the same number of rows N.
        batch_size: the most rows passed to one call of ``fn``.

    Returns:
        ``N x ...``: each output of ``fn`` concatenated along the first axis.

    Raises:
        ValueError: ``batch_size < 1``, no inputs or no rows, or inputs with different
            numbers of rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not inputs or len(inputs[0]) == 0:
        raise ValueError("in_batches needs at least one input with at least one row")
    n = len(inputs[0])
    if any(len(x) != n for x in inputs):
        rows = [len(x) for x in inputs]
        raise ValueError(f"inputs must have the same number of rows, got {rows}")
    parts = [fn(*(x[i : i + batch_size] for x in inputs)) for i in range(0, n, batch_size)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))


def click_scores(
    predictor: SamPredictor,
    clicks: torch.Tensor,
    *,
    points_per_batch: int = POINTS_PER_BATCH,
    stability_offset: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted IoU and stability score of the 3 masks of each single positive click.

    The candidates of the automatic mask generator before any filtering, decoded
    ``points_per_batch`` clicks at a time; the mask logits of a batch are reduced to
    scores and freed before the next batch, so memory does not grow with the number of
    clicks.

    Args:
        predictor: a :class:`~teachkit.sam.predictor.SamPredictor` with an image set.
        clicks: ``P x 2`` or ``P x 1 x 2`` positive clicks, (X, Y) pixels of the original
            image (e.g. :func:`~teachkit.sam.geometry.build_point_grid` times ``(W, H)``).
        points_per_batch: the most clicks decoded together (64 official).
        stability_offset: the logit shift of :func:`~teachkit.sam.geometry.stability_score`.

    Returns:
        ``P x 3`` predicted IoUs and ``P x 3`` stability scores, float32 on the CPU.
    """
    clicks = clicks.reshape(-1, 1, 2)
    threshold = predictor.model.mask_threshold

    def scores(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.ones(len(batch), 1, dtype=torch.long)
        logits, iou, _ = predictor.predict_torch(
            batch, labels, multimask_output=True, return_logits=True
        )
        stability = stability_score(logits, threshold, stability_offset)
        return iou.float().cpu(), stability.float().cpu()

    return in_batches(scores, clicks, batch_size=points_per_batch)
