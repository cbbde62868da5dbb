"""What :func:`teachkit.dino.trainer.train_dino` accepts, checked before it trains, and
the batches it draws from ``data``.

``data`` is any iterable of uint8 (or float in [0, 1]) image batches ``(B, 3, H, W)``,
or of ``(images, labels)`` tuples, or of objects with ``.images``; ``eval_data`` is the
k-NN monitor's ``(train_images, train_labels, test_images, test_labels)``. What would
only fail later in a run (at the first save, at the end of epoch 0) fails here first,
with a message that names the value and what was expected.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from teachkit.dino.config import DINOConfig
from teachkit.infra.hardware import pick_device

__all__ = ["batches_from", "check_run_inputs", "check_value_range", "images_of"]


def check_run_inputs(
    config: DINOConfig, eval_data: tuple[Tensor, Tensor, Tensor, Tensor] | None
) -> None:
    """Raise a ValueError for what would only fail later in a run: an ``out_dir`` where
    no checkpoint can be written, or ``eval_data`` the k-NN monitor cannot use (it
    first runs at the end of epoch 0)."""
    if config.device is not None:
        pick_device(config.device)  # one that exists here (None: the best there is)
    if not -(2**63) <= config.seed < 2**63:
        raise ValueError(f"seed must be a 64-bit integer; got {config.seed}")
    if config.out_dir is not None:
        out = Path(config.out_dir).expanduser()
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not existing.is_dir():
            where = "is a file" if existing == out else f"lies under the file {existing}"
            raise ValueError(
                f"out_dir {str(out)!r} {where}: checkpoints go into a folder; choose another"
            )
    if eval_data is None:
        return
    if not isinstance(eval_data, (tuple, list)) or len(eval_data) != 4:
        raise ValueError("eval_data must be (train_images, train_labels, test_images, test_labels)")
    for name, images, labels in (
        ("train", eval_data[0], eval_data[1]),
        ("test", eval_data[2], eval_data[3]),
    ):
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"eval_data {name} images must be (N, 3, H, W); got {shape}")
        if (
            not isinstance(labels, Tensor)
            or labels.is_floating_point()
            or labels.dtype == torch.bool
            or labels.shape != images.shape[:1]
        ):
            got = (labels.dtype, tuple(labels.shape)) if isinstance(labels, Tensor) else labels
            raise ValueError(
                f"eval_data {name} labels must be an integer tensor of shape "
                f"({images.shape[0]},), one per image; got {got}"
            )
        if len(images) == 0:
            raise ValueError(f"eval_data has no {name} images")
        check_value_range(images, f"eval_data has {name}")
    if len(eval_data[0]) < config.knn_k:
        raise ValueError(
            f"the k-NN monitor's bank has {len(eval_data[0])} images, fewer than its "
            f"knn_k = {config.knn_k} neighbours; give more bank images or a smaller knn_k"
        )


def check_value_range(images: Tensor, what: str = "data yields") -> None:
    """Raise a ValueError unless float ``images`` hold finite values in [0, 1] (one sync:
    used once). ``what`` begins the message ("data yields")."""
    if not images.is_floating_point() or images.numel() == 0:
        return
    lo, hi = torch.aminmax(images.detach())
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        hint = " (0..255 pixels? divide by 255, or pass uint8)" if hi > 1.0 else ""
        raise ValueError(
            f"{what} float images with values in [{lo:.3g}, {hi:.3g}]; DINO expects "
            f"uint8 images (0..255) or floats in [0, 1]{hint}"
        )


def images_of(item: Any, expected_batch: int) -> Tensor:
    """The image tensor of one item of ``data`` (tensor, (images, labels) or .images);
    a ValueError unless it is ``(expected_batch, 3, H, W)``."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    elif not isinstance(item, Tensor) and hasattr(item, "images"):
        item = item.images
    if not isinstance(item, Tensor) or item.ndim != 4 or item.shape[1] != 3:
        shape = tuple(item.shape) if isinstance(item, Tensor) else type(item).__name__
        raise ValueError(
            f"data must yield image batches (B, 3, H, W) (or (images, labels), "
            f"or objects with .images); got {shape}"
        )
    if item.shape[0] != expected_batch:
        raise ValueError(
            f"data yielded a batch of {item.shape[0]} images, the config says "
            f"batch_size={expected_batch}; use drop_last=True or ImageBatches"
        )
    return item


def batches_from(
    data: Iterable[Any], start: int, *, batch_size: int, steps_per_epoch: int
) -> Iterator[Tensor]:
    """The image batches of ``data`` from step ``start`` on, endlessly.

    A source with ``at_step(step)`` restarts exactly there; any other is iterated again
    from its beginning whenever it ends (a warning says a resumed run then differs).
    Each item is checked (:func:`images_of`); the first batch's values too
    (:func:`check_value_range`). A ValueError if ``data`` yields nothing.
    """
    if hasattr(data, "at_step"):
        source = data.at_step(start)
    else:
        source = data
        if start > 0:
            warnings.warn(
                "data has no at_step(step): the resumed run restarts the data "
                "from its beginning and will not match an uninterrupted run",
                stacklevel=3,
            )
    previous = None  # batches of the previous pass over data
    while True:
        n = 0
        for item in source:
            images = images_of(item, batch_size)
            if previous is None and n == 0:
                check_value_range(images)  # once, before the first step
            n += 1
            yield images
        if n == 0 and previous:
            raise ValueError(
                f"data yielded {previous} batches, then nothing when iterated again: a "
                "one-shot iterator (a generator?) shorter than the run, which needs "
                f"{steps_per_epoch} steps per epoch. Pass something that can be "
                "iterated again (a list, a DataLoader) or an endless stream"
            )
        if n == 0:
            raise ValueError("data yielded no batches")
        previous = n
        source = data  # a finite iterable: next pass
