"""Datasets of the course: procedural shapes (offline), CIFAR-10, sample photographs."""

from teachkit.data.datasets import DATASETS, load_dataset
from teachkit.data.shapes import CLASSES, ShapesBatch, ShapesStream, make_scenes, make_shapes

__all__ = [
    "CLASSES",
    "DATASETS",
    "load_dataset",
    "ShapesBatch",
    "ShapesStream",
    "make_scenes",
    "make_shapes",
]
