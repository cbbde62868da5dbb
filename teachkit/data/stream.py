"""An in-memory image dataset as an endless, resumable, shuffled stream of batches.

The full profile trains on CIFAR-10 held as one uint8 tensor (on the GPU if you like:
then batches are drawn there, with no data-loader bottleneck). Batches are
deterministic from ``(seed, step)``, so a resumed run sees the batches an
uninterrupted one would, and several processes of a ``torchrun`` job each take their
slice of the same global batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from teachkit.infra import distributed as dist
from teachkit.infra.tensor_checks import as_integer

__all__ = ["ImageBatches", "ProceduralStream", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from several integers (e.g. seed and step)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, np.uint64)[0] >> 1)


def _step(name: str, value: object) -> int:
    step = as_integer(name, value)
    if step < 0:
        raise ValueError(f"{name} must be >= 0, got {step}")
    return step


class ProceduralStream:
    """Fresh procedural images every batch, forever: no fixed set to overfit.

    Batch ``i`` is ``draw(batch_size, seed=seed * 1_000_000_007 + i, ...)``, so a run
    resumed at step ``i`` sees exactly the batches an uninterrupted run would
    (:meth:`at_step`). The seed rule predates :func:`mix_seed` and stays: every shipped
    model's command reproduces its data through it. A dataset's stream is a subclass
    that names its ``draw`` function (:class:`~teachkit.data.shapes.ShapesStream`,
    :class:`~teachkit.data.critters.CrittersStream`); ``options`` are passed on to it.

    Args:
        batch_size: images per batch.
        resolution: image side in pixels.
        seed: base seed of the stream.
        device: where to draw ("cuda" draws on the GPU: no data-loader bottleneck).
        start_step: the first step's index.
        options: the dataset's own drawing options (``config``, ``shortcuts``).

    Yields:
        the batches ``draw`` returns, with ``images`` (B, 3, H, W) uint8.
    """

    draw: ClassVar[Callable[..., Any]]

    def __init__(
        self,
        batch_size: int,
        *,
        resolution: int = 32,
        seed: int = 0,
        device: torch.device | str = "cpu",
        start_step: int = 0,
        **options: Any,
    ) -> None:
        self.batch_size = as_integer("batch_size", batch_size)
        self.resolution = as_integer("resolution", resolution)
        self.seed = as_integer("seed", seed)
        self.start_step = _step("start_step", start_step)
        self.device = torch.device(device)
        self.options = options

    def batch(self, step: int) -> Any:
        """The batch of step ``step`` (deterministic)."""
        return type(self).draw(
            self.batch_size,
            resolution=self.resolution,
            seed=self.seed * 1_000_000_007 + step,
            device=self.device,
            **self.options,
        )

    def at_step(self, step: int) -> ProceduralStream:
        """The same stream, starting at ``step`` (for resuming a run)."""
        resumed = copy.copy(self)
        resumed.start_step = _step("step", step)
        return resumed

    def __iter__(self) -> Iterator[Any]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


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
