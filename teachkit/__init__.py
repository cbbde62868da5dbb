"""teachkit: the tested code behind the DINO & SAM course.

The package mirrors the course: ``profiles`` (quick/full), ``data`` (shapes, critters,
CIFAR-10, photos), ``models`` (ViT, ResNet), ``dino`` (multi-crop, head, loss, teacher,
one step, trainer), ``attention`` and ``knn`` (evaluation), ``sam`` (Segment Anything),
``dino_sam`` (the capstone) and ``hub`` (pretrained weights). The README's "Reading
order" lists the fourteen files to read first.
"""

__version__ = "0.1.0"
