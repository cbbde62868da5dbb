"""Backbones: the Vision Transformer (Chapter 2) and small convolutional networks.

Every backbone maps images (B, C, H, W) to one feature vector per image (B, embed_dim)
and has an ``embed_dim`` attribute; none has a classifier.
"""

from teachkit.models.registry import ARCHS, build_backbone
from teachkit.models.resnet import ResNet, SmallCNN, resnet18_cifar, small_cnn
from teachkit.models.vit import (
    VIT_SIZES,
    VisionTransformer,
    build_vit,
    vit_base,
    vit_nano,
    vit_small,
    vit_tiny,
)

__all__ = [
    "ARCHS",
    "VIT_SIZES",
    "ResNet",
    "SmallCNN",
    "VisionTransformer",
    "build_backbone",
    "build_vit",
    "resnet18_cifar",
    "small_cnn",
    "vit_base",
    "vit_nano",
    "vit_small",
    "vit_tiny",
]
