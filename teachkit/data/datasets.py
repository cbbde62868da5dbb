"""Datasets by name, one record each: the procedural ``"shapes"`` and ``"critters"``
(offline, the quick profile) and ``"cifar10"`` (the full profile).

A :class:`Dataset` record holds all that the trainers, the evaluations and the model
cards need of a dataset: its classes, how to draw (or load) its images, its fixed splits,
its endless stream, its multi-object scenes for SAM, the variants it takes and which of
its classes a SAM run holds out. Consumers look a name up in :data:`DATASETS` and switch
on nothing, so **adding a dataset is one record here** (plus the module that draws it)::

    >>> DATASETS["critters"].classes[:3]
    ('apple', 'bee', 'clover')
    >>> train, test = procedural_splits("critters", 5000, 1000, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from teachkit.data.cifar import CIFAR10_CLASSES, load_cifar10
from teachkit.data.critters import (
    CRITTER_CLASSES,
    CrittersStream,
    critters_splits,
    make_critter_scenes,
    make_critters,
)
from teachkit.data.shapes import CLASSES, ShapesStream, make_scenes, make_shapes, shapes_splits

__all__ = [
    "DATASETS",
    "PROCEDURAL",
    "SCENE_DATASETS",
    "Dataset",
    "make_procedural",
    "procedural_splits",
    "procedural_stream",
]


@dataclass(frozen=True)
class Dataset:
    """One dataset of the course.

    Attributes:
        name: its name on the command line and on model cards.
        classes: class names; label ``i`` is ``classes[i]``.
        make: ``(n, *, resolution, seed, **variant)`` -> ``n`` single-object images
            (a :class:`~teachkit.data.shapes.ShapesBatch`); ``None``: loaded, not drawn.
        splits: ``(n_train, n_test, *, resolution, seed, **variant)`` -> fixed train and
            test batches that never share an image.
        stream: ``(batch_size, *, resolution, seed, device, **variant)`` -> an endless,
            resumable stream of fresh batches.
        scenes: ``(n, *, resolution, seed, device, ...)`` -> multi-object scenes (a
            :class:`~teachkit.data.shapes.SceneBatch`) for SAM; ``None``: none.
        variants: the variant keywords ``make``, ``splits`` and ``stream`` take
            (``"shortcuts"``, ``"config"``), with what each one is.
        class_subsets: its scenes can be drawn from some of its classes only
            (``classes=``, ``nest_probability=``), so a SAM run can hold classes out.
        scene_holdout: the classes a SAM run holds out by default (its "unseen" ones).
        load: for a dataset on disk, the loader (``load(root, train=..., download=...)``
            -> ``(images, labels)``).
    """

    name: str
    classes: tuple[str, ...]
    make: Callable[..., Any] | None = None
    splits: Callable[..., Any] | None = None
    stream: Callable[..., Any] | None = None
    scenes: Callable[..., Any] | None = None
    variants: tuple[tuple[str, str], ...] = ()
    class_subsets: bool = False
    scene_holdout: tuple[str, ...] = ()
    load: Callable[..., Any] | None = None

    @property
    def procedural(self) -> bool:
        """Drawn offline from a seed (the quick profile), rather than loaded from disk."""
        return self.make is not None


#: Every dataset of the course, by name.
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "shapes",
            CLASSES,
            make=make_shapes,
            splits=shapes_splits,
            stream=ShapesStream,
            scenes=make_scenes,
            variants=(("shortcuts", "shortcuts=True"),),
            class_subsets=True,
            scene_holdout=("star", "heart", "arrow"),
        ),
        Dataset(
            "critters",
            CRITTER_CLASSES,
            make=make_critters,
            splits=critters_splits,
            stream=CrittersStream,
            scenes=make_critter_scenes,
            variants=(("config", "config= (a CrittersConfig)"),),
        ),
        Dataset("cifar10", CIFAR10_CLASSES, load=load_cifar10),
    )
}
#: The datasets drawn offline from a seed (quick profile).
PROCEDURAL: tuple[str, ...] = tuple(n for n, d in DATASETS.items() if d.procedural)
#: The datasets with multi-object scenes (SAM, Chapters 6 and 7).
SCENE_DATASETS: dict[str, Dataset] = {n: d for n, d in DATASETS.items() if d.scenes}


def _procedural(name: str, **variant: Any) -> tuple[Dataset, dict[str, Any]]:
    """The record of a procedural dataset and the variant keywords it was given."""
    procedural = [n for n, d in DATASETS.items() if d.procedural]
    if name not in procedural:
        raise ValueError(f"unknown procedural dataset {name!r}; expected one of {procedural}")
    dataset = DATASETS[name]
    takes = dict(dataset.variants)
    given = {k: v for k, v in variant.items() if v is not None and v is not False}
    for key in given.keys() - takes.keys():
        owner = next(n for n in procedural if key in dict(DATASETS[n].variants))
        what = dict(DATASETS[owner].variants)[key]
        raise ValueError(f"{what} exists for {owner!r} only, not for {name!r}")
    return dataset, given


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
    ``config`` is a :class:`~teachkit.data.critters.CrittersConfig` (critters only),
    ``shortcuts`` the shapes' shortcut variant (shapes only).

    Returns:
        A :class:`~teachkit.data.shapes.ShapesBatch`: images (N, 3, H, W) uint8, labels
        (N,), masks (N, H, W).
    """
    dataset, variant = _procedural(name, shortcuts=shortcuts, config=config)
    return dataset.make(n, resolution=resolution, seed=seed, **variant)


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
    dataset, variant = _procedural(name, shortcuts=shortcuts, config=config)
    return dataset.splits(n_train, n_test, resolution=resolution, seed=seed, **variant)


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
    dataset, variant = _procedural(name, shortcuts=shortcuts, config=config)
    return dataset.stream(batch_size, resolution=resolution, seed=seed, device=device, **variant)
