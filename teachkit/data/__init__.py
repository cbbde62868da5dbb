"""Datasets of the course: procedural shapes and critters (offline), CIFAR-10, sample
photographs. Each dataset is one record of :data:`teachkit.data.datasets.DATASETS` (its
classes, images, splits, stream, SAM scenes and hold-out rule): consumers look a name
up there, so adding a dataset is one record and the module that draws it."""

from teachkit.data.datasets import DATASETS
from teachkit.data.shapes import CLASSES, ShapesBatch, ShapesStream, make_scenes, make_shapes

__all__ = [
    "CLASSES",
    "DATASETS",
    "ShapesBatch",
    "ShapesStream",
    "make_scenes",
    "make_shapes",
]
