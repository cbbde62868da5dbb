"""Shapes: the course's built-in, offline, procedural image dataset.

Ten shape classes drawn with random colour, scale, rotation and position on
cluttered backgrounds (smooth colour fields, local stripe patches, pixel noise and
small distractor blobs). Every sample comes with its class label and the exact
object mask, so the same data serves classification (Chapters 1, 3, 5),
attention-map segmentation (Chapter 4) and promptable segmentation (Chapters 6-7).

Design: what two crops of one image share should be the *shape*. Backgrounds are
drawn from statistics common to all images (no per-image palette or texture that
survives cropping), and object colours come from a small palette shared with the
distractors, so colour carries no class information and little instance
information. ``shortcuts=True`` brings back per-image signatures (a saturated
background hue, whole-image stripes of one orientation, a continuous random
object colour): the setting in which DINO learns colour and background instead of
shape (Chapter 3, "What DINO learns is what survives the augmentations").

Rendering is vectorised in PyTorch and runs on the CPU or directly on a GPU.
Measured with ``OMP_NUM_THREADS=1 python benchmarks/shapes_speed.py`` on one thread of a
2-core AMD EPYC shared with other jobs (load about 4): 1,191 images/s at 32 x 32,
297 at 64 x 64, 26 at 224 x 224, and 50 multi-object scenes/s at 128 x 128. A batch
of 128 images at 32 px takes about 0.1 s, well under a CPU training step.

Example::

    from teachkit.data.shapes import make_shapes, ShapesStream
    train = make_shapes(5000, resolution=32, seed=0)            # fixed split
    train.images.shape, train.labels.shape, train.masks.shape
    # (torch.Size([5000, 3, 32, 32]), torch.Size([5000]), torch.Size([5000, 32, 32]))
    for batch in ShapesStream(256, seed=1):                     # fresh images forever
        ...
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from teachkit.data.stream import ProceduralStream
from teachkit.infra.config_checks import check_field_types, check_pair, check_range
from teachkit.infra.hardware import pick_device
from teachkit.infra.tensor_checks import as_integer

__all__ = [
    "CLASSES",
    "ShapesConfig",
    "ShapesBatch",
    "SceneBatch",
    "make_shapes",
    "make_scenes",
    "shapes_splits",
    "ShapesStream",
    "class_index",
]

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "arrow",
    "ell",
)

# Object and distractor colours (RGB in [0, 1]), shared by every image.
PALETTE = torch.tensor(
    [
        [0.86, 0.16, 0.14],  # red
        [0.12, 0.66, 0.22],  # green
        [0.16, 0.28, 0.90],  # blue
        [0.95, 0.88, 0.14],  # yellow
        [0.84, 0.22, 0.80],  # magenta
        [0.10, 0.82, 0.88],  # cyan
        [0.96, 0.55, 0.10],  # orange
        [0.07, 0.07, 0.10],  # near black
        [0.97, 0.97, 0.95],  # near white
    ]
)

# Offset added to the seed of the test split so train and test never share images.
_TEST_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class ShapesConfig:
    """How the scenes are drawn. All sizes are fractions of the image side.

    Attributes:
        radius: (min, max) object radius; the object's bounding circle.
        distractors: (min, max) number of small distractor blobs per image.
        distractor_radius: (min, max) blob radius; keep max below ``radius[0]`` so a
            blob can never pass for a small object.
        stripe_amplitude: (min, max) contrast of the local stripe patch.
        noise_std: standard deviation of the per-pixel Gaussian noise.
        colour_jitter: per-object uniform jitter added to the palette colour.
        shortcuts: per-image background hue, whole-image stripes and continuous
            random object colours (the failure case of Chapter 3).

    Every field is checked when the config is made: a value of the wrong type is a
    TypeError, a pair that is not ``(min, max)`` within its bounds a ValueError.
    """

    radius: tuple[float, float] = (0.22, 0.40)
    distractors: tuple[int, int] = (3, 6)
    distractor_radius: tuple[float, float] = (0.03, 0.08)
    stripe_amplitude: tuple[float, float] = (0.08, 0.2)
    noise_std: float = 0.04
    colour_jitter: float = 0.06
    shortcuts: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)  # also: (min, max) pairs given as JSON lists become tuples
        check_pair("radius", self.radius, low=0, high=0.5, low_open=True)
        check_pair("distractors", self.distractors, low=0)
        check_pair("distractor_radius", self.distractor_radius, low=0, high=0.5, low_open=True)
        check_pair("stripe_amplitude", self.stripe_amplitude, low=0, high=1)
        check_range("noise_std", self.noise_std, low=0)
        check_range("colour_jitter", self.colour_jitter, low=0)


@dataclass
class ShapesBatch:
    """Single-object images.

    Attributes:
        images: (N, 3, H, W) uint8 RGB.
        labels: (N,) int64 class indices into :data:`CLASSES`.
        masks: (N, H, W) bool, True exactly on the object's pixels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ShapesBatch:
        return ShapesBatch(self.images.to(device), self.labels.to(device), self.masks.to(device))


@dataclass
class SceneBatch:
    """Multi-object scenes (2-5 instances that may overlap or nest).

    Attributes:
        images: (N, 3, H, W) uint8 RGB.
        labels: (N, K) int64 class of each instance, -1 where there is none.
        masks: (N, K, H, W) bool visible mask of each instance; masks of one image
            are disjoint (later instances occlude earlier ones).
        counts: (N,) int64 number of instances per image.
        parents: (N, K) int64 index of the instance an instance is nested in, or -1.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    counts: torch.Tensor
    parents: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def class_index(name: str) -> int:
    """The index of a class name; ValueError listing the valid names otherwise."""
    if name not in CLASSES:
        raise ValueError(f"unknown shape class {name!r}; expected one of {list(CLASSES)}")
    return CLASSES.index(name)


# --------------------------------------------------------------------------- shapes
def _shape_inside(cls: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether local coordinates (u, v) lie inside shape ``cls``.

    The shape is centred at 0 with its bounding circle of radius 1; ``v`` points up.
    """
    r = torch.sqrt(u * u + v * v)
    name = CLASSES[cls]
    if name == "circle":
        return r <= 0.92
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.68
    if name == "triangle":
        inside = v >= -0.5
        for angle in (math.pi / 6, 5 * math.pi / 6):  # the two slanted edges
            inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5
        return inside & (r <= 1.0)
    if name == "star":
        theta = torch.atan2(v, u) - math.pi / 2
        tooth = torch.remainder(theta * 5 / (2 * math.pi), 1.0)  # 0..1 per point
        edge = 0.42 + 0.58 * (1 - 2 * (tooth - 0.5).abs())  # triangle wave
        return r <= edge
    if name == "cross":
        arm = 0.3
        return ((u.abs() <= arm) & (v.abs() <= 0.92)) | ((v.abs() <= arm) & (u.abs() <= 0.92))
    if name == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if name == "crescent":
        bite = torch.sqrt((u - 0.45) ** 2 + (v - 0.15) ** 2)
        return (r <= 0.92) & (bite >= 0.72)
    if name == "heart":
        x, y = u * 1.25, v * 1.25 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if name == "arrow":
        shaft = (v.abs() <= 0.2) & (u >= -0.9) & (u <= 0.15)
        head = (u >= 0.1) & (u <= 0.9) & (v.abs() <= 0.85 * (0.9 - u))
        return shaft | head
    if name == "ell":
        return ((u >= -0.7) & (u <= -0.25) & (v.abs() <= 0.85)) | (
            (u >= -0.7) & (u <= 0.7) & (v >= -0.85) & (v <= -0.4)
        )
    raise AssertionError(name)  # unreachable: cls comes from range(len(CLASSES))


def _shape_masks(
    labels: torch.Tensor,
    centres: torch.Tensor,
    radii: torch.Tensor,
    angles: torch.Tensor,
    resolution: int,
    *,
    sync_free: bool | None = None,
) -> torch.Tensor:
    """Masks of one shape per row: labels (N,), centres (N, 2) xy, radii (N,), angles (N,).

    Returns (N, H, W) bool, evaluated at pixel centres. ``sync_free`` (default: on any
    device but the CPU) draws every class on every row and keeps the matching one,
    instead of finding each class's rows (a host sync per class on a GPU); the masks are
    the same.
    """
    n = labels.shape[0]
    device = labels.device
    coords = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution
    x = coords.view(1, 1, -1) - centres[:, 0].view(n, 1, 1)
    y = centres[:, 1].view(n, 1, 1) - coords.view(1, -1, 1)  # image rows go down, v goes up
    cos, sin = torch.cos(angles).view(n, 1, 1), torch.sin(angles).view(n, 1, 1)
    scale = radii.view(n, 1, 1)
    u = (cos * x + sin * y) / scale
    v = (-sin * x + cos * y) / scale
    masks = torch.zeros(n, resolution, resolution, dtype=torch.bool, device=device)
    if sync_free is None:
        sync_free = device.type != "cpu"  # on the CPU compute costs, a sync does not
    for cls in range(len(CLASSES)):
        if sync_free:
            masks = torch.where((labels == cls).view(n, 1, 1), _shape_inside(cls, u, v), masks)
            continue
        rows = (labels == cls).nonzero(as_tuple=True)[0]
        if rows.numel():
            masks[rows] = _shape_inside(cls, u[rows], v[rows])
    return masks


# ---------------------------------------------------------------------- backgrounds
def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device)


def _background(n: int, res: int, cfg: ShapesConfig, g: torch.Generator, device) -> torch.Tensor:
    """(N, 3, H, W) float backgrounds: smooth colour field + local stripes."""
    if cfg.shortcuts:
        # A per-image signature: one saturated hue everywhere, stripes everywhere.
        hue = torch.rand(n, 3, 1, 1, generator=g, device=device)
        base = 0.25 + 0.5 * hue + 0.1 * _smooth_field(n, res, 4, g, device) - 0.05
    else:
        grey = 0.3 + 0.4 * _smooth_field(n, res, 4, g, device)[:, :1]
        tint = 0.12 * (_smooth_field(n, res, 3, g, device) - 0.5)
        base = grey + tint
    # Stripes: one patch per image (whole image under shortcuts).
    coords = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = _uniform(n, 0, math.pi, g, device).view(n, 1, 1)
    freq = _uniform(n, 3, 8, g, device).view(n, 1, 1)
    phase = _uniform(n, 0, 2 * math.pi, g, device).view(n, 1, 1)
    amp = _uniform(n, *cfg.stripe_amplitude, g, device).view(n, 1, 1)
    wave = torch.sin(2 * math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
    if cfg.shortcuts:
        region = torch.ones_like(wave)
    else:
        x0, y0 = (_uniform(n, -0.2, 0.7, g, device).view(n, 1, 1) for _ in range(2))
        w, h = (_uniform(n, 0.3, 0.6, g, device).view(n, 1, 1) for _ in range(2))
        region = ((xx >= x0) & (xx <= x0 + w) & (yy >= y0) & (yy <= y0 + h)).float()
    return base + (amp * wave * region).unsqueeze(1)


def _smooth_field(n: int, res: int, cells: int, g: torch.Generator, device) -> torch.Tensor:
    """(N, 3, H, W) values in [0, 1] that vary smoothly (bilinear from a coarse grid)."""
    coarse = torch.rand(n, 3, cells, cells, generator=g, device=device)
    return F.interpolate(coarse, size=(res, res), mode="bilinear", align_corners=False)


@functools.cache
def _palette(device: torch.device) -> torch.Tensor:
    """:data:`PALETTE` on ``device``, copied there once (a copy per batch is a host sync)."""
    return PALETTE.to(device)


def _object_colours(n: int, cfg: ShapesConfig, g: torch.Generator, device) -> torch.Tensor:
    """(N, 3) object colours: palette entries (continuous RGB under shortcuts)."""
    if cfg.shortcuts:
        return torch.rand(n, 3, generator=g, device=device)
    palette = _palette(torch.device(device))
    idx = torch.randint(len(palette), (n,), generator=g, device=device)
    jitter = cfg.colour_jitter * (2 * torch.rand(n, 3, generator=g, device=device) - 1)
    return (palette[idx] + jitter).clamp(0, 1)


def _paint(canvas: torch.Tensor, masks: torch.Tensor, colours: torch.Tensor) -> None:
    """In place: canvas (N,3,H,W) takes colours (N,3) where masks (N,H,W)."""
    m = masks.unsqueeze(1)
    canvas.copy_(torch.where(m, colours.view(-1, 3, 1, 1), canvas))


def _distractors(canvas: torch.Tensor, cfg: ShapesConfig, g: torch.Generator) -> None:
    """In place: paint small axis-aligned elliptic blobs in palette colours."""
    n, _, res, _ = canvas.shape
    device = canvas.device
    lo, hi = cfg.distractors
    counts = torch.randint(lo, hi + 1, (n,), generator=g, device=device)
    coords = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res
    plain = replace(cfg, shortcuts=False)
    for i in range(hi):
        centres = torch.rand(n, 2, 1, generator=g, device=device)
        radii = _uniform(2 * n, *cfg.distractor_radius, g, device).view(n, 2, 1)
        dx = ((coords.view(1, -1) - centres[:, 0]) / radii[:, 0]) ** 2  # (N, W)
        dy = ((coords.view(1, -1) - centres[:, 1]) / radii[:, 1]) ** 2  # (N, H)
        masks = (dy.unsqueeze(2) + dx.unsqueeze(1) <= 1) & (counts > i).view(n, 1, 1)
        _paint(canvas, masks, _object_colours(n, plain, g, device))


def _finish(canvas: torch.Tensor, cfg: ShapesConfig, g: torch.Generator) -> torch.Tensor:
    """Add pixel noise and convert (N,3,H,W) floats in [0,1] to uint8."""
    if cfg.noise_std > 0:
        noise = torch.randn(canvas.shape, generator=g, device=canvas.device)
        canvas = canvas + cfg.noise_std * noise
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------- public
def _check(n: int, resolution: int) -> None:
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(resolution, int) or not 8 <= resolution <= 224:
        raise ValueError(f"resolution must be an integer in [8, 224], got {resolution!r}")


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


# ------------------------------------------------------------------ argument checks
def _seed(seed: object) -> int:
    """Any integer seed, taken modulo 2**64 (the generator's state: what
    ``manual_seed`` does with a negative seed, and the same bytes for every seed it
    accepted), so huge seeds work instead of overflowing."""
    return as_integer("seed", seed) % 2**64


def _device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device that exists on this machine; ValueError otherwise."""
    return pick_device(device)


def _allowed_classes(classes: Sequence[str] | None, device: torch.device) -> torch.Tensor:
    """Global indices of ``classes`` (None: all of :data:`CLASSES`)."""
    if classes is None:
        classes = CLASSES
    elif isinstance(classes, str):
        raise ValueError(
            f"classes must be a sequence of class names such as ('circle', 'star'), "
            f"not the string {classes!r}"
        )
    elif len(classes) == 0:
        raise ValueError(
            f"classes is empty: name at least one class, or pass None for all of {list(CLASSES)}"
        )
    indices = torch.tensor([class_index(c) for c in classes], dtype=torch.long)
    return indices.to(device, non_blocking=True)  # made on a GPU it would be a host sync


def make_shapes(
    n: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    shortcuts: bool = False,
    config: ShapesConfig | None = None,
    device: torch.device | str = "cpu",
    classes: tuple[str, ...] | None = None,
) -> ShapesBatch:
    """Draw ``n`` single-object images, deterministic from ``seed``.

    Classes are balanced: each class appears ``n // 10`` or ``n // 10 + 1`` times
    (in shuffled order).

    Args:
        n: number of images.
        resolution: image side in pixels (8 to 224; 32 by default).
        seed: the same seed, resolution and config give the same bytes on a device. Any
            integer; it is taken modulo 2**64.
        shortcuts: bring back per-image background/colour signatures (see module doc).
        config: drawing parameters; ``shortcuts`` overrides ``config.shortcuts``.
        device: where to draw ("cuda" draws directly on the GPU).
        classes: restrict to these class names (labels keep their global index); at
            least one. ``None`` means all ten.

    Returns:
        A :class:`ShapesBatch` of uint8 images (N, 3, H, W), labels (N,), masks (N, H, W).

    Raises:
        ValueError: ``n`` or ``resolution`` not integers in range (numpy integers are
            fine), a seed that is not an integer, an unknown or empty ``classes``, or a
            device that this machine does not have.
    """
    n, resolution = as_integer("n", n), as_integer("resolution", resolution)
    _check(n, resolution)
    seed = _seed(seed)
    base = config or ShapesConfig()
    cfg = replace(base, shortcuts=shortcuts or base.shortcuts)
    device = _device(device)
    allowed = _allowed_classes(classes, device)
    g = _generator(seed, device)
    order = torch.randperm(n, generator=g, device=device)
    labels = allowed[order % len(allowed)]
    radii = _uniform(n, *cfg.radius, g, device)
    # Keep the bounding circle inside the image (up to 10% of the radius).
    margin = 0.9 * radii
    centres = margin.unsqueeze(1) + (1 - 2 * margin).unsqueeze(1) * torch.rand(
        n, 2, generator=g, device=device
    )
    angles = _uniform(n, 0, 2 * math.pi, g, device)
    canvas = _background(n, resolution, cfg, g, device)
    _distractors(canvas, cfg, g)
    masks = _shape_masks(labels, centres, radii, angles, resolution)
    _paint(canvas, masks, _object_colours(n, cfg, g, device))
    return ShapesBatch(_finish(canvas, cfg, g), labels, masks)


def shapes_splits(
    n_train: int,
    n_test: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    shortcuts: bool = False,
    config: ShapesConfig | None = None,
) -> tuple[ShapesBatch, ShapesBatch]:
    """Fixed, seeded train and test splits that never share an image."""
    kw = dict(resolution=resolution, shortcuts=shortcuts, config=config)
    seed = as_integer("seed", seed)
    return make_shapes(n_train, seed=seed, **kw), make_shapes(
        n_test, seed=seed + _TEST_SEED_OFFSET, **kw
    )


def make_scenes(
    n: int,
    *,
    resolution: int = 64,
    seed: int = 0,
    instances: tuple[int, int] = (2, 5),
    nest_probability: float = 0.3,
    classes: tuple[str, ...] | None = None,
    config: ShapesConfig | None = None,
    device: torch.device | str = "cpu",
) -> SceneBatch:
    """Draw ``n`` multi-object scenes for promptable segmentation (Chapters 6-7).

    Each scene holds between ``instances[0]`` and ``instances[1]`` shapes. With
    probability ``nest_probability`` the second instance is drawn *inside* the first
    (a small shape on a big one: the ambiguous click of SAM's three masks). The other
    arguments are those of :func:`make_shapes`.

    Returns:
        A :class:`SceneBatch`; ``masks`` are visible masks, disjoint within a scene.

    Raises:
        ValueError: as :func:`make_shapes`, and ``instances`` that is not two integers
            ``1 <= min <= max`` or a ``nest_probability`` outside ``[0, 1]``.
    """
    n, resolution = as_integer("n", n), as_integer("resolution", resolution)
    _check(n, resolution)
    try:
        lo, hi = (as_integer("instances", v) for v in instances)
    except (TypeError, ValueError):
        lo = hi = 0  # reported just below
    if not 1 <= lo <= hi:
        raise ValueError(
            f"instances must be (min, max) with 1 <= min <= max, two integers; got {instances!r}"
        )
    if (
        isinstance(nest_probability, bool)
        or not isinstance(nest_probability, numbers.Real)
        or not 0.0 <= nest_probability <= 1.0
    ):
        raise ValueError(f"nest_probability must be a number in [0, 1], got {nest_probability!r}")
    seed = _seed(seed)
    cfg = config or ShapesConfig(radius=(0.1, 0.25))
    device = _device(device)
    allowed = _allowed_classes(classes, device)
    g = _generator(seed, device)
    counts = torch.randint(lo, hi + 1, (n,), generator=g, device=device)
    nested = torch.rand(n, generator=g, device=device) < nest_probability
    canvas = _background(n, resolution, cfg, g, device)
    _distractors(canvas, replace(cfg, distractor_radius=(0.015, 0.035)), g)
    labels = torch.full((n, hi), -1, dtype=torch.long, device=device)
    parents = torch.full((n, hi), -1, dtype=torch.long, device=device)
    full = torch.zeros(n, hi, resolution, resolution, dtype=torch.bool, device=device)
    prev_centre = prev_radius = None
    for k in range(hi):
        active = counts > k
        lab = allowed[torch.randint(len(allowed), (n,), generator=g, device=device)]
        radii = _uniform(n, *cfg.radius, g, device)
        margin = 0.9 * radii
        centres = margin.unsqueeze(1) + (1 - 2 * margin).unsqueeze(1) * torch.rand(
            n, 2, generator=g, device=device
        )
        if k == 0:
            # A nesting parent is big and solid enough to hold another shape.
            big = _uniform(n, 0.3, 0.4, g, device)
            solid = torch.tensor([class_index(c) for c in ("circle", "square")])
            solid = solid.to(device, non_blocking=True)[
                torch.randint(2, (n,), generator=g, device=device)
            ]
            radii = torch.where(nested, big, radii)
            lab = torch.where(nested, solid, lab)
            margin = 0.9 * radii
            centres = torch.where(nested.unsqueeze(1), 0.5 + (centres - 0.5) * 0.2, centres)
        elif k == 1 and prev_centre is not None:
            small = prev_radius * _uniform(n, 0.35, 0.5, g, device)
            radii = torch.where(nested, small, radii)
            centres = torch.where(nested.unsqueeze(1), prev_centre, centres)
            parents[:, 1] = torch.where(nested & active, 0, -1)
        angles = _uniform(n, 0, 2 * math.pi, g, device)
        masks = _shape_masks(lab, centres, radii, angles, resolution) & active.view(n, 1, 1)
        _paint(canvas, masks, _object_colours(n, cfg, g, device))
        full[:, k] = masks
        labels[:, k] = torch.where(active, lab, -1)
        if k == 0:
            prev_centre, prev_radius = centres, radii
    # Visible masks: an instance loses the pixels of every instance drawn after it.
    return SceneBatch(_finish(canvas, cfg, g), labels, _visible(full), counts, parents)


def _visible(full: torch.Tensor) -> torch.Tensor:
    """Visible masks (N, K, H, W) from full ones: instance k loses every later one's pixels."""
    visible = full.clone()
    later = torch.zeros_like(full[:, 0])
    for k in reversed(range(full.shape[1])):
        visible[:, k] &= ~later
        later |= full[:, k]
    return visible


class ShapesStream(ProceduralStream):
    """Fresh single-object images every batch, forever: no fixed set to overfit.

    Batch ``i`` is drawn from seed ``(seed, i)``, so a run resumed at step ``i``
    sees exactly the batches an uninterrupted run would (:meth:`at_step`).

    Args:
        batch_size: images per batch.
        resolution: image side in pixels.
        seed: base seed of the stream.
        device: where to draw ("cuda" draws on the GPU: no data-loader bottleneck).
        shortcuts: per-image signatures on (see module doc).
        config: drawing parameters.
        start_step: the first step's index.

    Yields:
        :class:`ShapesBatch` objects with ``images`` (B, 3, H, W) uint8.
    """

    draw = staticmethod(make_shapes)

    def __init__(
        self,
        batch_size: int,
        *,
        resolution: int = 32,
        seed: int = 0,
        device: torch.device | str = "cpu",
        shortcuts: bool = False,
        config: ShapesConfig | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(
            batch_size, resolution=resolution, seed=seed, device=_device(device),
            start_step=start_step, shortcuts=shortcuts, config=config,
        )
        _check(self.batch_size, self.resolution)
        self.shortcuts, self.config = shortcuts, config
