"""Datasets of the course: procedural shapes (offline), CIFAR-10, sample photographs."""

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
