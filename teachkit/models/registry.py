"""The backbones the course trains, by name: the one place that maps a name to a network.

Every training entry point builds its backbone here: the DINO trainer
(:func:`teachkit.dino.trainer.train_dino`, and :func:`teachkit.dino.export.build_run_backbone`
which rebuilds a run's random initialisation), the supervised baseline
(``python -m teachkit.train supervised``) and the command line's ``--arch`` choices.

Example::

    backbone = build_backbone("vit_nano", patch_size=4, img_size=32)
    features = backbone(images)          # (B, 3, 32, 32) -> (B, backbone.embed_dim)
"""

from __future__ import annotations

from torch import nn

from teachkit.models.resnet import resnet18_cifar, small_cnn
from teachkit.models.vit import build_vit

__all__ = ["ARCHS", "build_backbone", "check_arch", "is_vit"]

#: Names accepted by :func:`build_backbone`: the ViT sizes of
#: :data:`teachkit.models.vit.VIT_SIZES`, then the convolutional networks of
#: :mod:`teachkit.models.resnet`.
ARCHS: tuple[str, ...] = ("vit_nano", "vit_tiny", "vit_small", "vit_base", "resnet18", "small_cnn")


def is_vit(arch: str) -> bool:
    """Whether ``arch`` names a Vision Transformer (``patch_size`` and ``conv_stem`` apply)."""
    return arch.startswith("vit_")


def check_arch(arch: str, *, conv_stem: bool = False) -> None:
    """Raise the ValueError :func:`build_backbone` raises for an unknown ``arch`` or for
    ``conv_stem`` asked of a convolutional network; return None otherwise."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {list(ARCHS)}")
    if conv_stem and not is_vit(arch):
        raise ValueError(f"conv_stem applies to ViTs only, not to arch {arch!r}")


def build_backbone(
    arch: str,
    *,
    patch_size: int = 4,
    img_size: int = 32,
    drop_path_rate: float = 0.0,
    conv_stem: bool = False,
) -> nn.Module:
    """A freshly initialised backbone, by name.

    Args:
        arch: one of :data:`ARCHS`.
        patch_size: ViT patch side in pixels.
        img_size: side of the training images (sets the ViT's position-embedding grid;
            other sizes are interpolated at run time).
        drop_path_rate: stochastic depth of the ViT (0 for a teacher or an evaluation).
        conv_stem: ViTs only: stride-2 convolutions instead of the patchify layer.

    Returns:
        A module with an integer attribute ``embed_dim`` (D) whose ``forward`` maps images
        (B, 3, H, W) to one feature vector per image (B, D); no classifier. Its weights are
        drawn from the global RNG: seed first (:func:`teachkit.profiles.seed_everything`)
        for a reproducible initialisation.

    Raises:
        ValueError: an unknown ``arch``, or ``conv_stem`` for a convolutional network.
    """
    check_arch(arch, conv_stem=conv_stem)
    if is_vit(arch):
        return build_vit(
            arch,
            patch_size=patch_size,
            img_size=img_size,
            drop_path_rate=drop_path_rate,
            conv_stem=conv_stem,
        )
    if arch == "resnet18":
        return resnet18_cifar()
    return small_cnn()
