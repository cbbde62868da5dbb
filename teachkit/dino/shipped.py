"""Shipped DINO backbones, rebuilt from their model cards (Chapters 2-5 and 7 load them).

A card written by ``python -m teachkit.train ship`` (:func:`teachkit.dino.export.ship_run`)
records the run's full :class:`~teachkit.dino.config.DINOConfig`. That is enough to rebuild
the network twice: once to receive the shipped teacher weights, once at the random
initialisation training started from (the run's seed rebuilds it bit for bit), the
baseline every chapter compares a trained backbone with.

Example::

    trained, random_init, card = load_shipped_dino("dino_vit_nano_critters")
    features = trained(images)           # (B, 3, 32, 32) -> (B, trained.embed_dim)
"""

from __future__ import annotations

from torch import nn

from teachkit import pretrained
from teachkit.dino.config import DINOConfig
from teachkit.dino.export import build_run_backbone

__all__ = ["load_shipped_dino"]


def load_shipped_dino(name: str) -> tuple[nn.Module, nn.Module, pretrained.ModelCard]:
    """The shipped DINO teacher backbone ``name``, its random initialisation and its card.

    Args:
        name: a shipped checkpoint whose card records a DINO config
            (e.g. ``"dino_vit_nano_critters"``; see :func:`teachkit.pretrained.available`).

    Returns:
        ``(trained, random_init, card)``: two backbones of the card's architecture, both
        in eval mode, mapping images (B, 3, H, W) to features (B, D); ``trained`` holds
        the shipped weights (loaded strictly), ``random_init`` equals
        ``build_run_backbone(config)``.

    Raises:
        ValueError: no such shipped checkpoint, or its card records no DINO config.
    """
    card = pretrained.load_card(name)
    if not card.config.get("arch"):
        raise ValueError(
            f"the card of {name!r} records no DINO config (no 'arch'): it is not a DINO "
            "run's card; load it with teachkit.hub.load"
        )
    config = DINOConfig.from_dict(card.config)
    trained = build_run_backbone(config)
    pretrained.load_shipped(name, trained)
    return trained, build_run_backbone(config), card
