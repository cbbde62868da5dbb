"""Multi-crop augmentation, one image at a time (DINO paper, Sec. 3.1 and Appendix).

From one image DINO makes a set of *views*: two **global** crops covering 40-100 %
of the image at full resolution, and several **local** crops covering 5-40 % at a
smaller resolution. The teacher sees only the global views, the student sees all of
them, so the student must predict from a small patch what the teacher sees in the
whole image ("local-to-global correspondence").

Each view then goes through the BYOL photometric recipe that the official code uses
(``main_dino.py``, ``DataAugmentationDINO``):

===================  ==========  ==========  ======
operation            global 1    global 2    local
===================  ==========  ==========  ======
random resized crop  0.4 - 1     0.4 - 1     0.05 - 0.4
horizontal flip      p 0.5       p 0.5       p 0.5
colour jitter        p 0.8       p 0.8       p 0.8
  (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, in random order)
grayscale            p 0.2       p 0.2       p 0.2
Gaussian blur        p 1.0       p 0.1       p 0.5
solarisation         --          p 0.2       --
normalisation        yes         yes         yes
===================  ==========  ==========  ======

This module holds the recipe (:class:`MultiCropConfig`), the random draws of one
view (:class:`ViewParams`) and the per-image implementation
(:class:`MultiCropAugmentation`, torchvision functional ops, for a ``Dataset`` or for
looking at crops in a notebook). :mod:`teachkit.dino.batched_augment` applies the same
recipe to a whole batch on the GPU inside the training step.

Example::

    aug = MultiCropAugmentation(MultiCropConfig(global_size=32, local_size=16))
    crops = aug(image_uint8_chw, generator=torch.Generator().manual_seed(0))
    [c.shape for c in crops]   # 2 x (3, 32, 32), then 8 x (3, 16, 16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from teachkit.infra.config_checks import check_field_types
from teachkit.infra.config_fields import config_field
from teachkit.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "MultiCropConfig",
    "ViewRecipe",
    "ViewParams",
    "MultiCropAugmentation",
    "to_float_image",
]



@dataclass
class MultiCropConfig:
    """The multi-crop recipe. Defaults are the official DINO values at 32 px.

    Every field's ``metadata["help"]`` says what it does and what to try; the
    command line (:mod:`teachkit.dino.cli`) shows the same text. Every field is checked
    when the config is made (:mod:`teachkit.infra.config_checks`): a wrong type is a
    TypeError, a value out of range (a probability outside [0, 1], a ``(min, max)``
    pair in the wrong order, NaN) a ValueError naming the field.
    """

    global_crops_scale: tuple[float, float] = config_field(
        (0.4, 1.0),
        "Area range of the two global crops, as a fraction of the image, before resizing. "
        "Official: 0.4 1. Without local crops use a wider range, 0.14 1.",
    )
    local_crops_scale: tuple[float, float] = config_field(
        (0.05, 0.4),
        "Area range of the small local crops, as a fraction of the image. Official: 0.05 0.4.",
    )
    local_crops_number: int = config_field(
        8,
        "Number of local crops per image. Official: 8 (10 in the best ViT-S run); "
        "0 disables multi-crop (2 views only). 4-6 halves CPU cost.",
    )
    global_size: int = config_field(
        32,
        "Side in pixels of the global crops after resizing: 224 on ImageNet, 32 for "
        "CIFAR-10 and shapes (the native resolution).",
    )
    local_size: int = config_field(
        16,
        "Side in pixels of the local crops: 96 on ImageNet (3/7 of 224); half the global "
        "size works at 32 px. Must be divisible by the ViT patch size.",
    )
    crop_ratio: tuple[float, float] = config_field(
        (3 / 4, 4 / 3), "Aspect-ratio range (width / height) of the random crops."
    )
    flip_p: float = config_field(0.5, "Probability of a horizontal flip.")
    jitter_p: float = config_field(0.8, "Probability of applying colour jitter to a view.")
    brightness: float = config_field(0.4, "Brightness factor drawn from [1 - b, 1 + b].")
    contrast: float = config_field(0.4, "Contrast factor drawn from [1 - c, 1 + c].")
    saturation: float = config_field(0.2, "Saturation factor drawn from [1 - s, 1 + s].")
    hue: float = config_field(0.1, "Hue shift drawn from [-h, h] (fraction of the colour wheel).")
    grayscale_p: float = config_field(0.2, "Probability of turning a view grayscale.")
    blur_p: tuple[float, float, float] = config_field(
        (1.0, 0.1, 0.5), "Gaussian-blur probability for global 1, global 2 and local crops."
    )
    blur_sigma: tuple[float, float] = config_field(
        (0.1, 2.0),
        "Blur standard-deviation range, in pixels of a global crop of side "
        "blur_reference_size (official: 0.1-2 px at 224 px).",
    )
    blur_reference_size: int = config_field(
        224,
        "Global-crop side at which blur_sigma is given; sigmas scale by global_size / "
        "blur_reference_size. 224 keeps the official blur relative to the image (at 32 px: "
        "0.014-0.29 px, almost no blur, like CIFAR recipes that switch blur off). Set it to "
        "global_size (e.g. 32) for a visible blur.",
    )
    solarize_p: float = config_field(0.2, "Solarisation probability, second global crop only.")
    interpolation: str = config_field(
        "bicubic",
        "Resampling of the crops: 'bicubic' (official) or 'bilinear' (faster).",
        choices=("bicubic", "bilinear"),
    )
    mean: tuple[float, float, float] = config_field(
        IMAGENET_MEAN, "Per-channel mean subtracted at the end."
    )
    std: tuple[float, float, float] = config_field(
        IMAGENET_STD, "Per-channel standard deviation divided by."
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in (
            "global_crops_scale",
            "local_crops_scale",
            "crop_ratio",
            "blur_sigma",
            "mean",
            "std",
        ):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("global_crops_scale", "local_crops_scale"):
            lo, hi = _pair(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        lo, hi = _pair(self, "crop_ratio")
        if not 0.0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {(lo, hi)}")
        lo, hi = _pair(self, "blur_sigma")
        if not 0.0 < lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {(lo, hi)}")
        if self.local_crops_number < 0:
            raise ValueError(f"local_crops_number must be >= 0, got {self.local_crops_number}")
        for name in ("global_size", "local_size", "blur_reference_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be a positive number of pixels, got {getattr(self, name)}"
                )
        self.blur_p = tuple(float(p) for p in self.blur_p)
        if len(self.blur_p) != 3:
            raise ValueError(
                f"blur_p needs 3 probabilities (global 1, global 2, local), got {self.blur_p}"
            )
        probs = {
            "flip_p": self.flip_p,
            "jitter_p": self.jitter_p,
            "grayscale_p": self.grayscale_p,
            "solarize_p": self.solarize_p,
            **{f"blur_p[{i}]": p for i, p in enumerate(self.blur_p)},
        }
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {p}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {self.hue}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(
                f"interpolation must be 'bicubic' or 'bilinear', got {self.interpolation!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {self.mean}, {self.std}")

    @property
    def n_views(self) -> int:
        """2 global + ``local_crops_number`` local views."""
        return 2 + self.local_crops_number

    def views(self) -> list[ViewRecipe]:
        """The recipe of each view, in the order the crops are returned."""
        g = [
            ViewRecipe("global1", self.global_size, self.global_crops_scale, self.blur_p[0], 0.0),
            ViewRecipe(
                "global2",
                self.global_size,
                self.global_crops_scale,
                self.blur_p[1],
                self.solarize_p,
            ),
        ]
        local = ViewRecipe("local", self.local_size, self.local_crops_scale, self.blur_p[2], 0.0)
        return g + [local] * self.local_crops_number

    def blur_sigma_pixels(self) -> tuple[float, float]:
        """``blur_sigma`` in pixels of the crops: scaled by global_size / reference."""
        k = self.global_size / self.blur_reference_size
        return self.blur_sigma[0] * k, self.blur_sigma[1] * k

    def blur_kernel_size(self, size: int) -> int:
        """Odd kernel side covering +-3 sigma of the widest blur, at most ``2 size - 1``."""
        radius = max(1, math.ceil(3 * self.blur_sigma_pixels()[1]))
        return 2 * min(radius, size - 1) + 1 if size > 1 else 1

    def summary(self) -> str:
        """One line per field, for printing."""
        return "\n".join(f"{f.name:<22}: {getattr(self, f.name)}" for f in fields(self))


def _pair(cfg: MultiCropConfig, name: str) -> tuple[float, float]:
    value = getattr(cfg, name)
    if len(value) != 2:
        raise ValueError(f"{name} needs two values (min, max), got {value}")
    return value[0], value[1]


@dataclass(frozen=True)
class ViewRecipe:
    """What differs between the views: output side, crop-area range, blur/solarise p."""

    name: str
    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


@dataclass
class ViewParams:
    """The random draws behind one view of a batch of ``B`` images.

    Both implementations draw these, so the distributions can be tested directly.

    Attributes:
        crop: (B, 4) float, ``top, left, height, width`` as fractions of the image
            height / width. Crop area fraction = ``height * width``.
        flip: (B,) bool, horizontal flip.
        jitter: (B,) bool, whether colour jitter was applied (p 0.8).
        brightness, contrast, saturation: (B,) float factors, 1 where not jittered.
        hue: (B,) float shift in [-0.5, 0.5], 0 where not jittered.
        jitter_order: (B, 4) int64, a permutation of (0 brightness, 1 contrast,
            2 saturation, 3 hue): torchvision's ColorJitter applies them in random order.
        grayscale: (B,) bool.
        blur_sigma: (B,) float, standard deviation in output pixels; 0 means no blur.
        solarize: (B,) bool, invert pixels >= 0.5.
    """

    crop: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    jitter_order: Tensor
    grayscale: Tensor
    blur_sigma: Tensor
    solarize: Tensor

    def __len__(self) -> int:
        return self.crop.shape[0]

    def _map(self, fn) -> ViewParams:
        return ViewParams(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> ViewParams:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def slice(self, start: int, stop: int) -> ViewParams:
        """Rows ``start:stop``: one process's share of a global batch (DDP)."""
        return self._map(lambda t: t[start:stop])

    @staticmethod
    def cat(params: Sequence[ViewParams]) -> ViewParams:
        """Concatenate along the batch dimension."""
        return ViewParams(
            **{f.name: torch.cat([getattr(p, f.name) for p in params]) for f in fields(ViewParams)}
        )

    def area_fraction(self) -> Tensor:
        """(B,) crop area as a fraction of the image area (the 'scale' of the paper)."""
        return self.crop[:, 2] * self.crop[:, 3]

    def aspect_ratio(self, height: int, width: int) -> Tensor:
        """(B,) crop width / height in pixels, for an image of ``height x width``."""
        return (self.crop[:, 3] * width) / (self.crop[:, 2] * height)


def to_float_image(images: Tensor) -> Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    return images.float()


def _uniform(g: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _coin(g: torch.Generator | None, p: float) -> bool:
    return torch.rand((), generator=g).item() < p


def _scalar(value: float | bool | list, dtype: torch.dtype) -> Tensor:
    return torch.tensor([value], dtype=dtype)


class MultiCropAugmentation:
    """DINO's multi-crop, one image at a time, with torchvision functional ops.

    ``__call__(image) -> [global1, global2, local1, ...]``: float32 tensors, normalised,
    (3, G, G) then (3, L, L). Use it as a ``Dataset`` transform or to show crops; for
    training, :class:`teachkit.dino.batched_augment.BatchedMultiCrop` does the same on
    a batch inside the training step.

    Differences from the official PIL pipeline, all small: ops run on float tensors in
    [0, 1] (PIL rounds to uint8 after each op); the blur is an exact Gaussian (PIL uses
    box-blur approximations); the crop is bicubic with antialiasing, clamped to [0, 1].

    Args:
        config: the recipe; ``MultiCropConfig()`` is the official one at 32 px.
    """

    def __init__(self, config: MultiCropConfig | None = None) -> None:
        self.config = config or MultiCropConfig()

    def __call__(
        self,
        image: Tensor,
        *,
        generator: torch.Generator | None = None,
        params: Sequence[ViewParams] | None = None,
    ) -> list[Tensor]:
        """Crops of one image.

        Args:
            image: (3, H, W) uint8 tensor, float tensor in [0, 1], or a PIL image.
            generator: randomness (``None``: torch's global generator).
            params: draws to use instead of sampling (one per view, each of length 1).
        """
        image = self._as_tensor(image)
        if params is None:
            params = self.sample_params(image.shape[-2], image.shape[-1], generator=generator)
        recipes = self.config.views()
        if len(params) != len(recipes):
            raise ValueError(
                f"expected {len(recipes)} ViewParams (one per view), got {len(params)}"
            )
        return [self.apply_view(image, r, p) for r, p in zip(recipes, params, strict=True)]

    @staticmethod
    def _as_tensor(image) -> Tensor:
        if not isinstance(image, Tensor):  # PIL image
            image = TF.pil_to_tensor(image.convert("RGB"))
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected one RGB image of shape (3, H, W), got {tuple(image.shape)}; "
                "for batches use teachkit.dino.batched_augment.BatchedMultiCrop"
            )
        return to_float_image(image)

    # ---- the random draws -------------------------------------------------------------
    def sample_params(
        self, height: int, width: int, *, generator: torch.Generator | None = None
    ) -> list[ViewParams]:
        """Draw the parameters of every view of one ``height x width`` image."""
        return [self._sample_view(r, height, width, generator) for r in self.config.views()]

    def _sample_view(
        self, recipe: ViewRecipe, height: int, width: int, g: torch.Generator | None
    ) -> ViewParams:
        c = self.config
        top, left, h, w = self._random_resized_crop(recipe.scale, height, width, g)
        jitter = _coin(g, c.jitter_p)
        # ColorJitter.get_params: factors uniform around 1, applied in a random order.
        factors = [1.0, 1.0, 1.0, 0.0]
        if jitter:
            factors = [
                _uniform(g, max(0.0, 1 - c.brightness), 1 + c.brightness),
                _uniform(g, max(0.0, 1 - c.contrast), 1 + c.contrast),
                _uniform(g, max(0.0, 1 - c.saturation), 1 + c.saturation),
                _uniform(g, -c.hue, c.hue),
            ]
        order = torch.randperm(4, generator=g)
        sigma_lo, sigma_hi = c.blur_sigma_pixels()
        sigma = _uniform(g, sigma_lo, sigma_hi) if _coin(g, recipe.blur_p) else 0.0
        return ViewParams(
            crop=torch.tensor([[top / height, left / width, h / height, w / width]]),
            flip=_scalar(_coin(g, c.flip_p), torch.bool),
            jitter=_scalar(jitter, torch.bool),
            brightness=_scalar(factors[0], torch.float32),
            contrast=_scalar(factors[1], torch.float32),
            saturation=_scalar(factors[2], torch.float32),
            hue=_scalar(factors[3], torch.float32),
            jitter_order=order[None],
            grayscale=_scalar(_coin(g, c.grayscale_p), torch.bool),
            blur_sigma=_scalar(sigma, torch.float32),
            solarize=_scalar(_coin(g, recipe.solarize_p), torch.bool),
        )

    def _random_resized_crop(
        self, scale: tuple[float, float], height: int, width: int, g: torch.Generator | None
    ) -> tuple[int, int, int, int]:
        """torchvision's ``RandomResizedCrop.get_params``: an integer box (top, left, h, w).

        Area ~ U(scale) x image area, log aspect ratio ~ U(log ratio); ten tries, then
        the largest central crop within the ratio range.
        """
        area = height * width
        log_lo, log_hi = (math.log(r) for r in self.config.crop_ratio)
        for _ in range(10):
            target = area * _uniform(g, *scale)
            ratio = math.exp(_uniform(g, log_lo, log_hi))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (), generator=g))
                left = int(torch.randint(0, width - w + 1, (), generator=g))
                return top, left, h, w
        r_lo, r_hi = self.config.crop_ratio
        w, h = width, height
        if width / height < r_lo:
            h = int(round(width / r_lo))
        elif width / height > r_hi:
            w = int(round(height * r_hi))
        return (height - h) // 2, (width - w) // 2, h, w

    # ---- applying one view ------------------------------------------------------------
    def apply_view(self, image: Tensor, recipe: ViewRecipe, p: ViewParams) -> Tensor:
        """Crop, flip, jitter, grayscale, blur, solarise, normalise: (3, H, W) -> (3, S, S)."""
        c = self.config
        _, height, width = image.shape
        top, left, h, w = p.crop[0].tolist()
        box = [round(top * height), round(left * width), round(h * height), round(w * width)]
        mode = (
            InterpolationMode.BICUBIC
            if c.interpolation == "bicubic"
            else (InterpolationMode.BILINEAR)
        )
        x = TF.resized_crop(
            image, *box, size=[recipe.size, recipe.size], interpolation=mode, antialias=True
        ).clamp_(0.0, 1.0)
        if p.flip.item():
            x = TF.horizontal_flip(x)
        if p.jitter.item():
            x = self._color_jitter(x, p)
        if p.grayscale.item():
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        sigma = p.blur_sigma.item()
        if sigma > 0:
            k = c.blur_kernel_size(recipe.size)
            x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
        if p.solarize.item():
            x = TF.solarize(x, threshold=0.5)
        return TF.normalize(x, mean=list(c.mean), std=list(c.std))

    @staticmethod
    def _color_jitter(x: Tensor, p: ViewParams) -> Tensor:
        ops = {
            0: lambda im: TF.adjust_brightness(im, p.brightness.item()),
            1: lambda im: TF.adjust_contrast(im, p.contrast.item()),
            2: lambda im: TF.adjust_saturation(im, p.saturation.item()),
            3: lambda im: TF.adjust_hue(im, p.hue.item()),
        }
        for op in p.jitter_order[0].tolist():
            x = ops[op](x)
        return x
