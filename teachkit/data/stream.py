"""Random batches of an in-memory dataset, with the same interface as ``ShapesStream``.

The full profile trains on CIFAR-10 held as one uint8 tensor; this draws batches from
it, deterministic from ``(seed, step)`` so a resumed run sees the batches an
uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["LabeledBatch", "TensorStream", "random_batches"]


@dataclass
class LabeledBatch:
    """images (B, 3, H, W) uint8 and labels (B,) int64 (or None)."""

    images: torch.Tensor
    labels: torch.Tensor | None


class TensorStream:
    """Endless random batches of ``images`` (N, 3, H, W): epoch by epoch, reshuffled.

    Args:
        images: the dataset, uint8 (N, 3, H, W); move it to the GPU first to draw there.
        labels: optional (N,) labels, returned alongside.
        batch_size: images per batch (at most N).
        seed: the shuffling seed.
        start_step: the first step to yield (for resuming).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        batch_size: int,
        seed: int = 0,
        start_step: int = 0,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
        if not 0 < batch_size <= len(images):
            raise ValueError(
                f"batch_size must be in [1, {len(images)}] (the dataset size), got {batch_size}"
            )
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.start_step = batch_size, seed, start_step
        self.steps_per_epoch = len(images) // batch_size

    def batch(self, step: int) -> LabeledBatch:
        """The batch of step ``step``: a slice of the shuffled order of its epoch."""
        epoch, i = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.images), generator=g)
        idx = order[i * self.batch_size : (i + 1) * self.batch_size].to(self.images.device)
        labels = None if self.labels is None else self.labels[idx]
        return LabeledBatch(self.images[idx], labels)

    def at_step(self, step: int) -> TensorStream:
        """The same stream, starting at ``step``."""
        return TensorStream(self.images, self.labels, batch_size=self.batch_size,
                            seed=self.seed, start_step=step)

    def __iter__(self) -> Iterator[LabeledBatch]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def random_batches(
    images: torch.Tensor, batch_size: int, *, labels: torch.Tensor | None = None, seed: int = 0
) -> TensorStream:
    """Shorthand for :class:`TensorStream`."""
    return TensorStream(images, labels, batch_size=batch_size, seed=seed)
