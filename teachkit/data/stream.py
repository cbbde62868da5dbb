"""An in-memory image dataset as an endless, resumable, shuffled stream of batches.

The full profile trains on CIFAR-10 held as one uint8 tensor (on the GPU if you like:
then batches are drawn there, with no data-loader bottleneck). Batches are
deterministic from ``(seed, step)``, so a resumed run sees the batches an
uninterrupted one would, and several processes of a ``torchrun`` job each take their
slice of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from teachkit.infra import distributed as dist

__all__ = ["ImageBatches", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from several integers (e.g. seed and step)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, np.uint64)[0] >> 1)


class ImageBatches:
    """An in-memory image tensor as an endless, resumable stream of shuffled batches.

    Epoch ``e`` is a permutation drawn from ``(seed, e)``; batch ``i`` of the global
    batch (``batch_size x world_size`` images, the last incomplete one dropped) is split
    between processes, ``rank`` taking its slice, so several processes see exactly what
    one process with the whole batch would.

    Args:
        images: (N, 3, H, W) uint8 (or float in [0, 1]), e.g. CIFAR-10's training set.
        batch_size: images per step for this process.
        seed: seed of the shuffling.
        rank, world_size: this process's share (defaults: from :mod:`teachkit.infra.distributed`).
    """

    def __init__(
        self,
        images: Tensor,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        start_step: int = 0,
    ) -> None:
        self.rank = dist.rank() if rank is None else rank
        self.world_size = dist.world_size() if world_size is None else world_size
        if images.ndim != 4:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if batch_size * self.world_size > images.shape[0]:
            raise ValueError(
                f"a global batch of {batch_size} x {self.world_size} needs at "
                f"least that many images, got {images.shape[0]}"
            )
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.start_step = start_step

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.images.shape[0] // (self.batch_size * self.world_size)

    def at_step(self, step: int) -> ImageBatches:
        return ImageBatches(
            self.images,
            self.batch_size,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
            start_step=step,
        )

    def __iter__(self) -> Iterator[Tensor]:
        step, order, order_epoch = self.start_step, None, -1
        while True:
            epoch, i = divmod(step, len(self))
            if epoch != order_epoch:
                g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
                order = torch.randperm(self.images.shape[0], generator=g)
                # on the images' device once per epoch: a per-step copy of the batch's
                # indices would make the host wait for the GPU every step
                order, order_epoch = order.to(self.images.device, non_blocking=True), epoch
            start = (i * self.world_size + self.rank) * self.batch_size
            yield self.images[order[start : start + self.batch_size]]
            step += 1
