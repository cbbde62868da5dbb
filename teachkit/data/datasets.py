"""Datasets by name, as the profiles name them: ``"shapes"`` (quick) and ``"cifar10"`` (full)."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["DATASETS", "load_dataset"]

DATASETS: tuple[str, ...] = ("shapes", "cifar10")


def load_dataset(
    name: str,
    *,
    train: bool,
    n: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of a named dataset split.

    Args:
        name: "shapes" (drawn offline; train 5,000 / test 1,000 unless ``n``) or
            "cifar10" (50,000 / 10,000; the first ``n`` if given).
        train: the training split if True, else the test split.
        n: number of images (shapes: how many to draw; CIFAR-10: a prefix).
        seed: seed of the shapes splits (:func:`teachkit.data.shapes.shapes_splits`).
        root, download: where CIFAR-10 lives, and whether to fetch it.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or ``n < 1``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if name == "shapes":
        from teachkit.data.shapes import shapes_splits

        size = n or (5000 if train else 1000)
        tr, te = shapes_splits(size if train else 1, 1 if train else size, seed=seed)
        split = tr if train else te
        return split.images, split.labels
    from teachkit.data.cifar import load_cifar10

    images, labels = load_cifar10(root, train=train, download=download)
    return (images[:n], labels[:n]) if n else (images, labels)
