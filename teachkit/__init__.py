"""teachkit: the tested code behind the DINO & SAM course.

The package mirrors the course: ``profiles`` (quick/full), ``data`` (shapes, CIFAR-10,
photos), ``models`` (ViT, ResNet), ``dino`` (multi-crop, head, loss, teacher,
trainer), ``attention`` and ``knn`` (evaluation), ``sam`` (Segment Anything) and
``hub`` (pretrained weights).
"""

__version__ = "0.1.0"
