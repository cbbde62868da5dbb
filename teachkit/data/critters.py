"""Critters: a procedural dataset whose categories work the way natural ones do.

Ten categories, each defined by four *partial* cues, none of which names the class
alone: a silhouette family, a typical colour, a surface texture and a typical
context (background). Every cue value is shared by two categories, and the pairings
differ from cue to cue, so any single cue narrows the choice to two classes and any
two cues settle it. Each cue is also noisy: with a small probability a critter wears
an untypical colour or texture, and the context is only the typical one in
``context_p`` of the images (a weaker cue, like the sky behind a plane).

=====  ===========  =========  ========  =========  ==========
class  name         outline    colour    texture    context
=====  ===========  =========  ========  =========  ==========
0      apple        round      red       plain      grass
1      bee          long       yellow    stripes    sand
2      clover       lobed      green     spots      sky
3      urchin       spiky      blue      gradient   water
4      crate        boxy       purple    checker    night
5      puffer       round      yellow    spots      water
6      caterpillar  long       green     gradient   night
7      flower       lobed      blue      checker    grass
8      thistle      spiky      purple    plain      sand
9      kite         boxy       red       stripes    sky
=====  ===========  =========  ========  =========  ==========

The outlines are parametric (a radius that varies with the angle as a sum of
harmonics), so no two critters of a class share a silhouette. Position, scale,
in-plane rotation, lighting (brightness and a colour cast) and clutter (10-16 small
blobs of random colour) are drawn independently of the class, so raw pixels stay weak.
:mod:`teachkit.data.shapes`, where only the silhouette carries the class, stays the
data of Chapter 6 (SAM) and of Chapter 2's live training; Chapter 3's shortcut lesson
uses the critters' own backgrounds (``context_strength``).

Why these settings: DINO learns what two views of one image share after the
augmentations, so a nuisance that is constant over an image and survives cropping and
colour jitter (a strong global lighting or colour cast, a few large clutter blobs, a
wide range of object saturation, a background drawn at random from five vivid
palettes) becomes a per-image signature that DINO matches instead of the class. With
those, the 1,000-step learning curve stayed flat; that is why the context palettes are
drawn faint (``context_strength=0.2``). Dense small clutter is the opposite kind of
nuisance: every image has the same mix, so it hides the critter from raw pixels and
random filters but gives DINO nothing to match.
The design log (every variant and its curve) is in the README, "The critters dataset".

Every image comes with its label and the exact object mask; a multi-object scene mode
(:func:`make_critter_scenes`) and an endless, seeded stream (:class:`CrittersStream`,
on the CPU or a GPU) mirror those of shapes.

Fitness at 32 px with the defaults (weighted k-NN, k = 20, T = 0.07,
``critters_splits(5000, 1000, seed=0)``; ``python benchmarks/critters_fitness.py``,
2-core Intel Xeon, 2026-11-27): raw pixels 41.6 %, colour histogram 43.1 %, small CNN at
random initialisation 44.9 %, ViT-nano (conv stem) at random initialisation 36.4 %. The
supervised and DINO rows are in the README and the model cards.

Example::

    from teachkit.data.critters import make_critters, CrittersStream
    data = make_critters(1000, resolution=32, seed=0)
    data.images.shape, data.labels.shape, data.masks.shape
    # (torch.Size([1000, 3, 32, 32]), torch.Size([1000]), torch.Size([1000, 32, 32]))
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from teachkit.data.shapes import (
    SceneBatch,
    ShapesBatch,
    _check,
    _finish,
    _generator,
    _paint,
    _smooth_field,
    _uniform,
    _visible,
)
from teachkit.data.stream import ProceduralStream
from teachkit.infra.config_checks import check_field_types, check_pair, check_range

__all__ = [
    "CRITTER_CLASSES",
    "CUES",
    "CrittersConfig",
    "critter_cues",
    "single_cue_config",
    "make_critters",
    "critters_splits",
    "make_critter_scenes",
    "CrittersStream",
]

CRITTER_CLASSES: tuple[str, ...] = (
    "apple",
    "bee",
    "clover",
    "urchin",
    "crate",
    "puffer",
    "caterpillar",
    "flower",
    "thistle",
    "kite",
)

#: The values each cue takes; a class's value of cue ``c`` is ``critter_cues(cls)[c]``.
CUES: dict[str, tuple[str, ...]] = {
    "outline": ("round", "long", "lobed", "spiky", "boxy"),
    "colour": ("red", "yellow", "green", "blue", "purple"),
    "texture": ("plain", "stripes", "spots", "gradient", "checker"),
    "context": ("grass", "sand", "sky", "water", "night"),
}

# Cue value of class i: outline i % 5; colour, texture and context shift by 1, 2, 3 for
# the second five classes, so every value is shared by two classes with other partners.
_SHIFT = {"outline": 0, "colour": 1, "texture": 2, "context": 3}

# Hue centres (fraction of the wheel) of the five colours.
_HUES = torch.tensor([0.0, 0.14, 0.33, 0.6, 0.79])

# Context palettes: (top colour, bottom colour) of the smooth background gradient.
_CONTEXTS = torch.tensor(
    [
        [[0.35, 0.55, 0.22], [0.20, 0.42, 0.12]],  # grass
        [[0.86, 0.78, 0.58], [0.74, 0.62, 0.40]],  # sand
        [[0.52, 0.72, 0.95], [0.82, 0.90, 0.98]],  # sky
        [[0.12, 0.38, 0.55], [0.05, 0.22, 0.40]],  # water
        [[0.06, 0.07, 0.16], [0.14, 0.14, 0.22]],  # night
    ]
)


@functools.cache
def _tables(device: torch.device) -> tuple[Tensor, Tensor]:
    """``(_HUES, _CONTEXTS)`` on ``device``, copied there once (a copy per batch is a
    host sync on a GPU)."""
    return _HUES.to(device), _CONTEXTS.to(device)


@dataclass(frozen=True)
class CrittersConfig:
    """How critters are drawn. Sizes are fractions of the image side.

    Attributes:
        radius: (min, max) radius of the critter's bounding circle.
        outline_p: probability that a critter has its class's outline family (else any of
            the five; 1 by default: the outline is the one cue always present).
        colour_p: probability that a critter has its class's colour (else any of the five).
        texture_p: probability that it has its class's texture (else any of the five).
        context_p: probability that the background is its class's context (else any).
        hue_spread: half-width of the hue range around the colour's centre.
        saturation, value: (min, max) HSV saturation and value of a critter's colour: a
            per-critter signature that survives DINO's colour jitter, so keep it narrow.
        lighting: (min, max) global brightness factor of the whole image.
        cast: maximum per-channel colour cast of the lighting.
        clutter: (min, max) number of small clutter blobs of random colour. Few blobs
            are a per-image signature that survives cropping; many blobs average out.
        clutter_radius: (min, max) radius of a clutter blob.
        texture_frequency: (min, max) angular frequency of stripes, spots and checks, in
            multiples of pi per critter radius (higher is finer).
        noise_std: per-pixel Gaussian noise.
        context_strength: how far the background palettes stand apart, from 1 (the five
            contexts at full strength, the default until 2026-11-27) to 0 (one neutral
            grey-green for every image, no grain or stars). A background that is not the
            class's context (1 - ``context_p`` of the images) is a per-image signature
            that survives every crop, and at full strength DINO matches two views by it
            instead of by the critter: the 1,000-step learning curve gains +6.9 points at
            1, +11.8 at the default 0.2 and +12.7 at 0, while raw pixels on context-only
            images fall from 46.2 % to 26.4 % and 9.1 % (README, "Design log"). At 0.2
            the context stays a cue, a weak one.

    Every field is checked when the config is made: a value of the wrong type is a
    TypeError (``True`` is not a count, a string is not a number), a probability
    outside [0, 1] or a pair that is not ``(min, max)`` within its bounds a ValueError.
    """

    radius: tuple[float, float] = (0.24, 0.42)
    outline_p: float = 1.0
    colour_p: float = 0.6
    texture_p: float = 0.95
    context_p: float = 0.2
    hue_spread: float = 0.07
    saturation: tuple[float, float] = (0.7, 0.9)
    value: tuple[float, float] = (0.7, 0.9)
    lighting: tuple[float, float] = (0.8, 1.2)
    cast: float = 0.04
    clutter: tuple[int, int] = (10, 16)
    clutter_radius: tuple[float, float] = (0.03, 0.06)
    texture_frequency: tuple[float, float] = (2.2, 3.0)
    noise_std: float = 0.03
    context_strength: float = 0.2

    def __post_init__(self) -> None:
        check_field_types(self)  # also: (min, max) pairs given as JSON lists become tuples
        for name in ("outline_p", "colour_p", "texture_p", "context_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not 0.0 <= self.context_strength <= 1.0:
            raise ValueError(f"context_strength must lie in [0, 1], got {self.context_strength!r}")
        lo, hi = self.radius
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(
                f"radius must be (min, max) with 0 < min <= max <= 0.5, got {self.radius}"
            )
        check_range("hue_spread", self.hue_spread, low=0, high=0.5)
        for name in ("saturation", "value"):
            check_pair(name, getattr(self, name), low=0, high=1)
        check_pair("lighting", self.lighting, low=0)
        check_range("cast", self.cast, low=0, high=1)
        check_pair("clutter", self.clutter, low=0)
        check_pair("clutter_radius", self.clutter_radius, low=0, high=0.5, low_open=True)
        check_pair("texture_frequency", self.texture_frequency, low=0)
        check_range("noise_std", self.noise_std, low=0)


def critter_cues(cls: int | str) -> dict[str, str]:
    """The typical value of each cue for a class (index or name)."""
    i = CRITTER_CLASSES.index(cls) if isinstance(cls, str) else int(cls)
    if not 0 <= i < len(CRITTER_CLASSES):
        raise ValueError(f"unknown critter class {cls!r}; expected one of {list(CRITTER_CLASSES)}")
    return {cue: CUES[cue][(i % 5 + _SHIFT[cue] * (i // 5)) % 5] for cue in CUES}


def single_cue_config(cue: str, config: CrittersConfig | None = None) -> CrittersConfig:
    """Critters in which only ``cue`` follows the class; every other cue is drawn at random.

    The cue study of Chapter 5 ("what does DINO look at?") measures k-NN on such images:
    a feature that reads the cue can tell the two classes sharing each of its values
    apart from the other eight, so 50 % is the most any feature can reach on them.

    Args:
        cue: one of ``CUES`` ("outline", "colour", "texture", "context").
        config: the other settings (position, lighting, noise...); the defaults if None.
    """
    if cue not in CUES:
        raise ValueError(f"unknown cue {cue!r}; expected one of {list(CUES)}")
    probabilities = {f"{name}_p": float(name == cue) for name in CUES}
    return replace(config or CrittersConfig(), **probabilities)


def _typical(labels: Tensor, cue: str) -> Tensor:
    """(N,) typical value index of ``cue`` for each label."""
    return (labels % 5 + _SHIFT[cue] * (labels // 5)) % 5


def _maybe_untypical(typical: Tensor, p: float, g: torch.Generator) -> Tensor:
    """Keep each value with probability p, else draw one of the five uniformly."""
    n, device = typical.shape[0], typical.device
    keep = torch.rand(n, generator=g, device=device) < p
    other = torch.randint(5, (n,), generator=g, device=device)
    return torch.where(keep, typical, other)


# ------------------------------------------------------------------------- outlines
def _outline_params(family: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Harmonic amplitudes (N, 8), phases (N, 8) and aspect ratio (N,) per family."""
    n, device = family.shape[0], family.device
    amp = 0.04 * torch.rand(n, 8, generator=g, device=device)  # every outline wobbles
    amp[:, :2] = 0
    phase = 2 * math.pi * torch.rand(n, 8, generator=g, device=device)
    aspect = 1 + 0.2 * torch.rand(n, generator=g, device=device)
    u = torch.rand(n, generator=g, device=device)
    lobes = torch.randint(5, 8, (n,), generator=g, device=device)  # spiky: 5-7 spikes
    # long: stretched 1.8-2.5x
    aspect = torch.where(family == 1, 1.8 + 0.7 * u, aspect)
    # lobed: three or four lobes
    _set_rows(amp, torch.where(u < 0.5, 3, 4), family == 2, 0.22 + 0.12 * u)
    # spiky: 5-7 sharp spikes
    _set_rows(amp, lobes, family == 3, 0.3 + 0.12 * u)
    # boxy: a rounded square (4th harmonic locked to the corners)
    fourth = torch.full_like(lobes, 4)
    _set_rows(amp, fourth, family == 4, 0.1 + 0.05 * u)
    _set_rows(phase, fourth, family == 4, torch.zeros_like(u))
    return amp, phase, aspect


def _set_rows(x: Tensor, column: Tensor, rows: Tensor, value: Tensor) -> None:
    """In place: ``x[i, column[i]] = value[i]`` where ``rows[i]``; x (N, C), the others
    (N,). As a gather, a ``where`` and a scatter: selecting the rows by a boolean mask
    would make the host wait for the GPU to count them."""
    index = column.view(-1, 1)
    old = x.gather(1, index).squeeze(1)
    x.scatter_(1, index, torch.where(rows, value, old).unsqueeze(1))


def _outline_masks(
    family: Tensor, centres: Tensor, radii: Tensor, angles: Tensor, res: int, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Masks (N, H, W) of one critter per row, and its local coordinates u, v (N, H, W).

    ``u, v`` are in units of the radius, rotated with the critter, so textures drawn in
    them turn and scale with it.
    """
    n, device = family.shape[0], family.device
    amp, phase, aspect = _outline_params(family, g)
    coords = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res
    x = coords.view(1, 1, -1) - centres[:, 0].view(n, 1, 1)
    y = centres[:, 1].view(n, 1, 1) - coords.view(1, -1, 1)
    cos, sin = torch.cos(angles).view(n, 1, 1), torch.sin(angles).view(n, 1, 1)
    scale = radii.view(n, 1, 1)
    u = (cos * x + sin * y) / scale
    v = (-sin * x + cos * y) / scale
    a = aspect.view(n, 1, 1)
    us, vs = u / a.sqrt(), v * a.sqrt()  # stretch along u, keep the area
    theta = torch.atan2(vs, us)
    k = torch.arange(8, device=device, dtype=torch.float32).view(1, 8, 1, 1)
    wave = amp.view(n, 8, 1, 1) * torch.cos(k * theta.unsqueeze(1) - phase.view(n, 8, 1, 1))
    edge = (1 + wave.sum(1)) / (1 + amp.sum(1)).view(n, 1, 1)  # max radius <= 1
    inside = torch.sqrt(us * us + vs * vs) <= 0.95 * edge / a.sqrt()
    return inside, u, v


# -------------------------------------------------------------------------- colours
def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(N,) hue, saturation, value in [0, 1] -> (N, 3) RGB."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v.unsqueeze(1) * (1 - s.unsqueeze(1) * f)


def _critter_colours(colour: Tensor, cfg: CrittersConfig, g: torch.Generator) -> Tensor:
    """(N, 3) base colours around the hue centres of the colour indices (N,)."""
    n, device = colour.shape[0], colour.device
    jitter = cfg.hue_spread * (2 * torch.rand(n, generator=g, device=device) - 1)
    hue = (_tables(device)[0][colour] + jitter) % 1.0
    sat = _uniform(n, *cfg.saturation, g, device)
    val = _uniform(n, *cfg.value, g, device)
    return _hsv_to_rgb(hue, sat, val)


def _texture(kind: Tensor, u: Tensor, v: Tensor, cfg: CrittersConfig, g: torch.Generator) -> Tensor:
    """(N, H, W) multiplicative shading of each texture kind in local coordinates."""
    n, device = kind.shape[0], kind.device
    freq = _uniform(n, *cfg.texture_frequency, g, device).view(n, 1, 1) * math.pi
    shade = torch.ones_like(u)
    stripes = 0.55 + 0.45 * (torch.sin(freq * u) > 0).float()
    spots = 1 - 0.5 * ((torch.cos(freq * u) * torch.cos(freq * v)) > 0.55).float()
    gradient = 1.05 - 0.55 * (v + 1) / 2
    checker = 0.55 + 0.45 * ((torch.sin(freq * u) * torch.sin(freq * v)) > 0).float()
    k = kind.view(n, 1, 1)
    shade = torch.where(k == 1, stripes, shade)
    shade = torch.where(k == 2, spots, shade)
    shade = torch.where(k == 3, gradient.clamp(0.4, 1.1), shade)
    shade = torch.where(k == 4, checker, shade)
    return shade


# ---------------------------------------------------------------------- backgrounds
def _context_background(
    context: Tensor, res: int, g: torch.Generator, strength: float = 1.0
) -> Tensor:
    """(N, 3, H, W) backgrounds: a vertical gradient between the context's two colours,
    a smooth mottling, and fine grain (grass and water ripple, night has stars); with
    ``strength`` < 1 the palettes and the grain shrink towards their mean (no stars
    below 0.5). ``strength == 1`` draws the same bytes as before the option existed."""
    n, device = context.shape[0], context.device
    palettes = _tables(device)[1]
    pal = palettes[context]  # (N, 2, 3)
    if strength != 1.0:
        neutral = palettes.mean(dim=0, keepdim=True)
        pal = neutral + strength * (pal - neutral)
    rows = ((torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res).view(1, 1, -1, 1)
    canvas = pal[:, 0].view(n, 3, 1, 1) * (1 - rows) + pal[:, 1].view(n, 3, 1, 1) * rows
    canvas = canvas.expand(n, 3, res, res).clone()
    canvas += 0.12 * (_smooth_field(n, res, 4, g, device) - 0.5)
    grain = torch.rand(n, 1, res, res, generator=g, device=device)
    c = context.view(n, 1, 1, 1)
    ripple = 0.12 * strength * (grain - 0.5)
    canvas += torch.where((c == 0) | (c == 3), ripple, torch.zeros_like(grain))
    stars = (grain > 0.97) & (c == 4) & (strength > 0.5)
    return torch.where(stars, torch.full_like(canvas, 0.9), canvas)


def _clutter(canvas: Tensor, cfg: CrittersConfig, g: torch.Generator) -> None:
    """In place: small elliptic blobs of random colour (pebbles, leaves)."""
    n, _, res, _ = canvas.shape
    device = canvas.device
    lo, hi = cfg.clutter
    counts = torch.randint(lo, hi + 1, (n,), generator=g, device=device)
    coords = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res
    for i in range(hi):
        centres = torch.rand(n, 2, 1, generator=g, device=device)
        radii = _uniform(2 * n, *cfg.clutter_radius, g, device).view(n, 2, 1)
        dx = ((coords.view(1, -1) - centres[:, 0]) / radii[:, 0]) ** 2
        dy = ((coords.view(1, -1) - centres[:, 1]) / radii[:, 1]) ** 2
        masks = (dy.unsqueeze(2) + dx.unsqueeze(1) <= 1) & (counts > i).view(n, 1, 1)
        _paint(canvas, masks, torch.rand(n, 3, generator=g, device=device))


def _light(canvas: Tensor, cfg: CrittersConfig, g: torch.Generator) -> Tensor:
    """A global brightness factor and colour cast per image (the scene's lighting)."""
    n, device = canvas.shape[0], canvas.device
    gain = _uniform(n, *cfg.lighting, g, device).view(n, 1, 1, 1)
    cast = cfg.cast * (2 * torch.rand(n, 3, 1, 1, generator=g, device=device) - 1)
    return canvas * gain + cast


def _draw_critters(
    canvas: Tensor,
    labels: Tensor,
    centres: Tensor,
    radii: Tensor,
    cfg: CrittersConfig,
    g: torch.Generator,
) -> Tensor:
    """In place: paint one critter per row of ``canvas``; returns its masks (N, H, W)."""
    n, res, device = labels.shape[0], canvas.shape[-1], canvas.device
    angles = _uniform(n, 0, 2 * math.pi, g, device)
    family = _maybe_untypical(_typical(labels, "outline"), cfg.outline_p, g)
    masks, u, v = _outline_masks(family, centres, radii, angles, res, g)
    colour = _maybe_untypical(_typical(labels, "colour"), cfg.colour_p, g)
    texture = _maybe_untypical(_typical(labels, "texture"), cfg.texture_p, g)
    base = _critter_colours(colour, cfg, g).view(n, 3, 1, 1)
    body = base * _texture(texture, u, v, cfg, g).unsqueeze(1)
    canvas.copy_(torch.where(masks.unsqueeze(1), body, canvas))
    return masks


def _labels(n: int, classes: tuple[str, ...] | None, g: torch.Generator, device) -> Tensor:
    names = CRITTER_CLASSES if classes is None else classes
    if len(names) == 0:
        raise ValueError(f"classes must name at least one class of {list(CRITTER_CLASSES)}")
    bad = [c for c in names if c not in CRITTER_CLASSES]
    if bad:
        raise ValueError(
            f"unknown critter class(es) {bad}; expected names from {list(CRITTER_CLASSES)}"
        )
    # made on the host and copied without waiting: made on a GPU it would be a host sync
    allowed = torch.tensor([CRITTER_CLASSES.index(c) for c in names]).to(device, non_blocking=True)
    order = torch.randperm(n, generator=g, device=device)
    return allowed[order % len(allowed)]


def _contexts(labels: Tensor, cfg: CrittersConfig, g: torch.Generator) -> Tensor:
    return _maybe_untypical(_typical(labels, "context"), cfg.context_p, g)


# --------------------------------------------------------------------------- public
def make_critters(
    n: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    config: CrittersConfig | None = None,
    device: torch.device | str = "cpu",
    classes: tuple[str, ...] | None = None,
) -> ShapesBatch:
    """Draw ``n`` single-critter images, deterministic from ``seed`` on a device.

    Classes are balanced (each appears ``n // 10`` or ``n // 10 + 1`` times, shuffled).

    Args:
        n: number of images.
        resolution: image side in pixels (8 to 224; 32 by default).
        seed: the same seed, resolution and config give the same bytes on a device.
        config: drawing parameters (:class:`CrittersConfig`).
        device: where to draw ("cuda" draws directly on the GPU).
        classes: restrict to these class names (labels keep their global index).

    Returns:
        A :class:`~teachkit.data.shapes.ShapesBatch`: uint8 images (N, 3, H, W), labels
        (N,) into :data:`CRITTER_CLASSES`, masks (N, H, W) True on the critter.
    """
    _check(n, resolution)
    cfg = config or CrittersConfig()
    device = torch.device(device)
    g = _generator(seed, device)
    labels = _labels(n, classes, g, device)
    radii = _uniform(n, *cfg.radius, g, device)
    margin = 0.85 * radii
    centres = margin.unsqueeze(1) + (1 - 2 * margin).unsqueeze(1) * torch.rand(
        n, 2, generator=g, device=device
    )
    canvas = _context_background(_contexts(labels, cfg, g), resolution, g, cfg.context_strength)
    _clutter(canvas, cfg, g)
    masks = _draw_critters(canvas, labels, centres, radii, cfg, g)
    canvas = _light(canvas, cfg, g)
    return ShapesBatch(_finish(canvas, cfg, g), labels, masks)


def critters_splits(
    n_train: int,
    n_test: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    config: CrittersConfig | None = None,
) -> tuple[ShapesBatch, ShapesBatch]:
    """Fixed, seeded train and test splits that never share an image."""
    kw = dict(resolution=resolution, config=config)
    return make_critters(n_train, seed=seed, **kw), make_critters(
        n_test, seed=seed + 1_000_003, **kw
    )


def make_critter_scenes(
    n: int,
    *,
    resolution: int = 64,
    seed: int = 0,
    instances: tuple[int, int] = (2, 4),
    clutter: tuple[int, int] = (0, 2),
    config: CrittersConfig | None = None,
    device: torch.device | str = "cpu",
) -> SceneBatch:
    """Draw ``n`` scenes of several critters that may overlap (later ones occlude).

    The background is the context of the first critter's class (with probability
    ``config.context_p``). Between ``clutter[0]`` and ``clutter[1]`` blobs of random
    colour (radius ``config.clutter_radius`` of the image side) lie under the critters;
    they are not objects and have no mask.

    Returns:
        A :class:`~teachkit.data.shapes.SceneBatch`; ``masks`` (N, K, H, W) are the visible
        masks, disjoint within a scene; ``parents`` is all -1 (critters do not nest).
    """
    _check(n, resolution)
    lo, hi = instances
    if not 1 <= lo <= hi:
        raise ValueError(f"instances must be (min, max) with 1 <= min <= max, got {instances!r}")
    if len(clutter) != 2 or not 0 <= clutter[0] <= clutter[1]:
        raise ValueError(f"clutter must be (min, max) with 0 <= min <= max, got {clutter!r}")
    base = config or CrittersConfig()
    cfg = replace(base, radius=(base.radius[0] * 0.5, base.radius[1] * 0.55))
    device = torch.device(device)
    g = _generator(seed, device)
    counts = torch.randint(lo, hi + 1, (n,), generator=g, device=device)
    labels = torch.full((n, hi), -1, dtype=torch.long, device=device)
    full = torch.zeros(n, hi, resolution, resolution, dtype=torch.bool, device=device)
    first = torch.randint(len(CRITTER_CLASSES), (n,), generator=g, device=device)
    canvas = _context_background(_contexts(first, cfg, g), resolution, g, cfg.context_strength)
    _clutter(canvas, replace(cfg, clutter=clutter), g)
    for k in range(hi):
        active = counts > k
        lab = first if k == 0 else torch.randint(10, (n,), generator=g, device=device)
        radii = _uniform(n, *cfg.radius, g, device)
        margin = 0.85 * radii
        centres = margin.unsqueeze(1) + (1 - 2 * margin).unsqueeze(1) * torch.rand(
            n, 2, generator=g, device=device
        )
        layer = canvas.clone()
        masks = _draw_critters(layer, lab, centres, radii, cfg, g) & active.view(n, 1, 1)
        canvas = torch.where(masks.unsqueeze(1), layer, canvas)
        full[:, k] = masks
        labels[:, k] = torch.where(active, lab, -1)
    images = _finish(_light(canvas, cfg, g), cfg, g)
    parents = torch.full((n, hi), -1, dtype=torch.long, device=device)
    return SceneBatch(images, labels, _visible(full), counts, parents)


class CrittersStream(ProceduralStream):
    """Fresh critters every batch, forever; batch ``i`` is drawn from seed ``(seed, i)``.

    A run resumed at step ``i`` sees exactly the batches an uninterrupted run would
    (:meth:`at_step`). Same interface as :class:`teachkit.data.shapes.ShapesStream`.

    Args:
        batch_size: images per batch.
        resolution: image side in pixels.
        seed: base seed of the stream.
        device: where to draw ("cuda" draws on the GPU).
        config: drawing parameters.
        start_step: the first step's index.

    Yields:
        :class:`~teachkit.data.shapes.ShapesBatch` with ``images`` (B, 3, H, W) uint8.
    """

    draw = staticmethod(make_critters)

    def __init__(
        self,
        batch_size: int,
        *,
        resolution: int = 32,
        seed: int = 0,
        device: torch.device | str = "cpu",
        config: CrittersConfig | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(
            batch_size, resolution=resolution, seed=seed, device=device,
            start_step=start_step, config=config,
        )
        _check(self.batch_size, self.resolution)
        self.config = config
