"""Moving-shapes clips: a tiny video with the object's mask in every frame (Chapter 4).

One shape moves along a straight line and turns slowly over a cluttered background that
stays still, as a camera watching a moving object would see it. A still *decoy* of
another class and the same colour sits away from the path (``decoy=True``), so that
colour alone cannot tell the object from the rest of the frame. The background and the
distractor blobs are those of :mod:`teachkit.data.shapes`; each frame gets fresh pixel
noise. Every frame comes with the exact object mask, so a method that follows the object
(the DINO paper's video segmentation protocol, :mod:`teachkit.video`) can be scored frame
by frame.

Example::

    clip = make_clip(12, resolution=64, seed=0)
    clip.frames.shape, clip.masks.shape   # (12, 3, 64, 64) uint8, (12, 64, 64) bool
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from teachkit.data.shapes import (
    CLASSES,
    ShapesConfig,
    _background,
    _distractors,
    _finish,
    _generator,
    _object_colours,
    _paint,
    _shape_masks,
    class_index,
)

__all__ = ["Clip", "make_clip"]


@dataclass
class Clip:
    """A clip of ``T`` frames.

    Attributes:
        frames: (T, 3, H, W) uint8 RGB frames.
        masks: (T, H, W) bool, the moving object in each frame.
        label: the object's class index into :data:`teachkit.data.shapes.CLASSES`.
    """

    frames: torch.Tensor
    masks: torch.Tensor
    label: int

    def __len__(self) -> int:
        return self.frames.shape[0]


def make_clip(
    n_frames: int,
    *,
    resolution: int = 64,
    seed: int = 0,
    shape: str | None = None,
    radius: tuple[float, float] = (0.16, 0.22),
    speed: float = 0.04,
    decoy: bool = True,
) -> Clip:
    """A clip of one shape crossing a still, cluttered background.

    Args:
        n_frames: number of frames T (>= 2).
        resolution: frame side in pixels (8 to 224).
        seed: everything (background, shape, path, noise) follows from it.
        shape: a class name (``"star"``...); ``None`` draws one.
        radius: (min, max) object radius as a fraction of the side.
        speed: distance moved per frame, as a fraction of the side (> 0).
        decoy: add a still shape of another class in the object's colour, placed where
            as far from the moving object's path as the frame allows.

    Raises:
        ValueError: for fewer than 2 frames, a bad resolution or speed, or an unknown shape.
    """
    if not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(f"n_frames must be an integer >= 2, got {n_frames!r}")
    if not isinstance(resolution, int) or not 8 <= resolution <= 224:
        raise ValueError(f"resolution must be an integer in [8, 224], got {resolution!r}")
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    g = _generator(seed, torch.device("cpu"))
    label = (
        class_index(shape)
        if shape is not None
        else int(torch.randint(len(CLASSES), (1,), generator=g))
    )
    cfg = ShapesConfig()
    background = _background(1, resolution, cfg, g, "cpu")
    _distractors(background, cfg, g)
    r = radius[0] + (radius[1] - radius[0]) * float(torch.rand((), generator=g))
    # A straight path through the middle region: start, direction, and a slow turn.
    heading = 2 * math.pi * float(torch.rand((), generator=g))
    direction = torch.tensor([math.cos(heading), math.sin(heading)])
    span = speed * (n_frames - 1)
    centre = torch.tensor([0.5, 0.5]) - direction * span / 2
    start_angle = 2 * math.pi * float(torch.rand((), generator=g))
    turn = 0.08 * (2 * float(torch.rand((), generator=g)) - 1)  # radians per frame
    t = torch.arange(n_frames, dtype=torch.float32)
    centres = (centre + t.view(-1, 1) * speed * direction).clamp(r, 1 - r)
    masks = _shape_masks(
        torch.full((n_frames,), label),
        centres,
        torch.full((n_frames,), r),
        start_angle + turn * t,
        resolution,
    )
    colour = _object_colours(1, cfg, g, "cpu").expand(n_frames, 3)
    canvas = background.expand(n_frames, -1, -1, -1).clone()
    if decoy:
        other = (label + 1 + int(torch.randint(len(CLASSES) - 1, (1,), generator=g))) % len(CLASSES)
        spots = torch.rand(64, 2, generator=g) * (1 - 2 * r) + r  # candidates, farthest wins
        clearance = torch.cdist(spots, centres).min(dim=1).values
        where = spots[clearance.argmax()].view(1, 2)
        still = _shape_masks(
            torch.tensor([other]), where, torch.tensor([r]), torch.tensor([start_angle]), resolution
        )
        _paint(canvas, still.expand(n_frames, -1, -1), colour)
    _paint(canvas, masks, colour)
    return Clip(frames=_finish(canvas, cfg, g), masks=masks, label=label)
