"""Datasets by name: the procedural ``"shapes"`` and ``"critters"`` (offline, the quick
profile) and ``"cifar10"`` (the full profile).

The procedural datasets share one interface: fixed seeded splits
(:func:`procedural_splits`) and an endless resumable stream (:func:`procedural_stream`),
so the trainers and the model cards name a dataset instead of importing its module.
"""

from __future__ import annotations

import torch

__all__ = [
    "DATASETS",
    "PROCEDURAL",
    "make_procedural",
    "procedural_splits",
    "procedural_stream",
]

DATASETS: tuple[str, ...] = ("shapes", "critters", "cifar10")
#: The datasets drawn offline from a seed (quick profile).
PROCEDURAL: tuple[str, ...] = ("shapes", "critters")


def _check_procedural(name: str, shortcuts: bool, config=None) -> None:
    if name not in PROCEDURAL:
        raise ValueError(f"unknown procedural dataset {name!r}; expected one of {list(PROCEDURAL)}")
    if shortcuts and name != "shapes":
        raise ValueError(f"shortcuts=True exists for 'shapes' only, not for {name!r}")
    if config is not None and name != "critters":
        raise ValueError(f"config= describes a critters variant; the dataset is {name!r}")


def make_procedural(
    name: str,
    n: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    shortcuts: bool = False,
    config=None,
):
    """``n`` single-object images of a procedural dataset, deterministic from ``seed``;
    ``config`` is a :class:`~teachkit.data.critters.CrittersConfig` (critters only).

    Returns:
        A :class:`~teachkit.data.shapes.ShapesBatch`: images (N, 3, H, W) uint8, labels
        (N,), masks (N, H, W).
    """
    _check_procedural(name, shortcuts, config)
    if name == "shapes":
        from teachkit.data.shapes import make_shapes

        return make_shapes(n, resolution=resolution, seed=seed, shortcuts=shortcuts)
    from teachkit.data.critters import make_critters

    return make_critters(n, resolution=resolution, seed=seed, config=config)


def procedural_splits(
    name: str,
    n_train: int,
    n_test: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    shortcuts: bool = False,
    config=None,
):
    """Fixed train and test splits of a procedural dataset (they never share an image).

    Args:
        config: a :class:`~teachkit.data.critters.CrittersConfig` for a critters variant
            (``None``: the defaults); critters only.

    Returns:
        Two :class:`~teachkit.data.shapes.ShapesBatch` (images, labels, masks).
    """
    _check_procedural(name, shortcuts, config)
    if name == "shapes":
        from teachkit.data.shapes import shapes_splits

        return shapes_splits(n_train, n_test, resolution=resolution, seed=seed, shortcuts=shortcuts)
    from teachkit.data.critters import critters_splits

    return critters_splits(n_train, n_test, resolution=resolution, seed=seed, config=config)


def procedural_stream(
    name: str,
    batch_size: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    shortcuts: bool = False,
    config=None,
):
    """An endless, resumable stream of fresh batches of a procedural dataset; ``config``
    is a :class:`~teachkit.data.critters.CrittersConfig` (critters only).

    Returns:
        A :class:`~teachkit.data.shapes.ShapesStream` or
        :class:`~teachkit.data.critters.CrittersStream`.
    """
    _check_procedural(name, shortcuts, config)
    if name == "shapes":
        from teachkit.data.shapes import ShapesStream

        return ShapesStream(
            batch_size, resolution=resolution, seed=seed, device=device, shortcuts=shortcuts
        )
    from teachkit.data.critters import CrittersStream

    return CrittersStream(
        batch_size, resolution=resolution, seed=seed, device=device, config=config
    )
