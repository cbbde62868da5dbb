"""Multi-crop on a whole batch, inside the training step (GPU or CPU).

The per-image pipeline (:mod:`teachkit.dino.augment`) runs in data-loader workers, one
image and one view at a time: on ImageNet that is 10 views x 64 images of Python per
step, and on a Colab GPU the loader, not the model, sets the pace. Here every random
draw is a tensor of shape (B,) and every operation is a batched tensor op, so the
same recipe costs a handful of kernels per view:

* **crop + resize + flip in one pass**: an affine sampling grid per image
  (``F.affine_grid``) maps the output square onto the crop box, mirrored when flipped,
  and ``F.grid_sample`` reads it (bicubic or bilinear). No antialiasing: at 32 px the
  crops are upsampled; at ImageNet sizes a strongly shrunk crop aliases slightly.
* **colour jitter** with per-image factors broadcast as (B, 1, 1, 1): brightness,
  contrast and saturation are blends (``f * x + (1 - f) * y``) exactly as torchvision;
  hue converts RGB -> HSV, shifts H and converts back (exact, not the YIQ-rotation
  approximation). torchvision applies the four ops in a random order per image; so
  does this: for each of the four positions, each op is applied to the images whose
  permutation puts it there.
* **grayscale**, **solarise**: per-image masks with ``torch.where``.
* **Gaussian blur** with a per-image sigma: a separable convolution whose kernels
  differ per image, run as one *grouped* convolution (one group per image channel).
  Images drawn without blur get a delta kernel.

The random draws (:class:`~teachkit.dino.augment.ViewParams`) come from a
``torch.Generator`` on the CPU, so a seed gives the same crops on any device, and one
process of a multi-GPU run can draw the parameters of the *global* batch and keep its
slice (:meth:`ViewParams.slice`), which makes 2 x B/2 on two GPUs augment exactly as
B on one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from teachkit.dino.augment import MultiCropConfig, ViewParams, ViewRecipe, to_float_image
from teachkit.dino.device_draws import draws_on

__all__ = [
    "BatchedMultiCrop",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "rgb_to_grayscale",
    "gaussian_blur",
]


# ---- batched colour ops: x (N, 3, H, W) float in [0, 1], factors (N,) --------------------
def _per_image(f: Tensor) -> Tensor:
    return f.to(torch.float32).view(-1, 1, 1, 1)


def _blend(x: Tensor, y: Tensor, factor: Tensor) -> Tensor:
    f = _per_image(factor)
    return (x * f + y * (1.0 - f)).clamp_(0.0, 1.0)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma, ITU-R 601 weights as torchvision."""
    r, g, b = x.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities: blend with black."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean gray level."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's own grayscale version."""
    return _blend(x, rgb_to_grayscale(x), factor)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = x.unbind(dim=-3)
    v, _ = x.max(dim=-3)
    c = v - x.min(dim=-3).values
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    cc = c.clamp_min(1e-12)
    h = torch.where(
        v == r, ((g - b) / cc) % 6.0, torch.where(v == g, (b - r) / cc + 2.0, (r - g) / cc + 4.0)
    )
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h))
    return h, s, v


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    # f(n) = v - v s max(0, min(k, 4 - k, 1)), k = (n + 6 h) mod 6, n = 5, 3, 1 for R, G, B
    # (made on the device: torch.tensor([5.0, 3.0, 1.0], device=cuda) would be a host sync)
    n = torch.arange(5.0, 0.0, -2.0, device=h.device).view(1, 3, 1, 1)
    k = (n + 6.0 * h.unsqueeze(-3)) % 6.0
    weight = torch.minimum(torch.minimum(k, 4.0 - k), torch.ones_like(k)).clamp_min(0.0)
    return v.unsqueeze(-3) - (v * s).unsqueeze(-3) * weight


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` (fraction of the colour wheel, in [-0.5, 0.5])."""
    h, s, v = _rgb_to_hsv(x)
    h = (h + shift.to(torch.float32).view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(h, s, v).clamp_(0.0, 1.0)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """(N,) sigmas -> (N, kernel_size) normalised 1-D Gaussians; sigma 0 -> delta."""
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=sigma.device)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma)).view(-1, 1)
    kernel = torch.exp(-0.5 * (t / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (t.abs() < 0.5).to(kernel.dtype).expand_as(kernel)
    return torch.where((sigma > 0).view(-1, 1), kernel, delta)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur image ``i`` of (N, C, H, W) with its own ``sigma[i]`` (0 = unchanged).

    Separable: a horizontal then a vertical pass, each one grouped convolution with
    one group per (image, channel), reflect padding as torchvision.
    """
    n, c, h, w = x.shape
    if kernel_size <= 1:
        return x
    k = gaussian_kernels(sigma.to(torch.float32), kernel_size).repeat_interleave(c, dim=0)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, h, w)


def _apply_where(op, x: Tensor, factor: Tensor, mask: Tensor) -> Tensor:
    """``op(x[i], factor[i])`` where ``mask[i]``, else ``x[i]``.

    On a GPU: ``torch.where`` over the whole batch (no host sync). On the CPU, where
    compute is scarce and a sync is free: only the selected images are computed.
    """
    if x.device.type != "cpu":
        return torch.where(mask.view(-1, 1, 1, 1), op(x, factor), x)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    return x.index_copy(0, idx, op(x.index_select(0, idx), factor.index_select(0, idx)))


# ---- crop + resize + flip -----------------------------------------------------------------
def resized_crop(x: Tensor, crop: Tensor, flip: Tensor, size: int, mode: str) -> Tensor:
    """Crop box ``crop[i] = (top, left, h, w)`` (fractions) of image i, resized to
    ``size x size`` and mirrored where ``flip[i]``; one ``grid_sample`` for the batch.

    In ``grid_sample``'s coordinates (-1 and 1 are the image edges) the box centre is
    ``2 (left + w / 2) - 1`` and its half-width ``w``, so the affine map is
    ``x_in = centre_x +- w * x_out`` (minus when flipped), likewise for y.
    """
    top, left, h, w = crop.to(torch.float32).unbind(dim=1)
    sign = 1.0 - 2.0 * flip.to(torch.float32)
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * left + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * top + h - 1
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


class BatchedMultiCrop:
    """DINO's multi-crop for a batch (B, 3, H, W), every image with its own draws.

    ``__call__(images) -> [global1 (B,3,G,G), global2, local1 (B,3,L,L), ...]``,
    float32, normalised, on the images' device. Same recipe and same distributions as
    :class:`teachkit.dino.augment.MultiCropAugmentation` (tested); crops are continuous
    boxes here, integer pixel boxes there.

    Args:
        config: the recipe; ``MultiCropConfig()`` is the official one at 32 px.
    """

    def __init__(self, config: MultiCropConfig | None = None) -> None:
        self.config = config or MultiCropConfig()
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(
        self,
        images: Tensor,
        *,
        generator: torch.Generator | None = None,
        params: Sequence[ViewParams] | None = None,
    ) -> list[Tensor]:
        """Augment ``images`` (B, 3, H, W), uint8 or float in [0, 1].

        Args:
            images: the batch, on any device.
            generator: a CPU generator for the draws (``None``: torch's global one).
            params: draws to use instead (one :class:`ViewParams` of length B per view).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        b, _, height, width = images.shape
        if params is None:
            params = self.sample_params(b, generator=generator, image_size=(height, width))
        recipes = self.config.views()
        if len(params) != len(recipes) or any(len(p) != b for p in params):
            raise ValueError(
                f"expected {len(recipes)} ViewParams of length {b}, got {[len(p) for p in params]}"
            )
        x = to_float_image(images)
        draws, slots = draws_on(params, x.device)
        crops: list[Tensor] = []
        start = 0
        for size in dict.fromkeys(r.size for r in recipes):  # global size, then local
            stop = start + b * sum(r.size == size for r in recipes)  # consecutive views
            views = self._views_of_size(x, size, draws.slice(start, stop), slots[start:stop])
            crops += views.split(b)
            start = stop
        return crops

    def _views_of_size(self, x: Tensor, size: int, p: ViewParams, slots: Tensor) -> Tensor:
        """All V views sharing an output size as one batch of V * B crops.

        ``x`` (B, 3, H, W) in [0, 1]; ``p`` the V views' draws concatenated (V * B rows)
        and ``slots`` their colour-jitter masks (V * B, 4, 4), both on x's device
        (:func:`~teachkit.dino.device_draws.draws_on`). Returns (V * B, 3, size, size),
        normalised. One crop, one colour pipeline and one blur for all V views.
        """
        c = self.config
        views = len(p) // x.shape[0]
        crops = resized_crop(x.repeat(views, 1, 1, 1), p.crop, p.flip, size, c.interpolation)
        crops = self._color_jitter(crops, p, slots)
        crops = torch.where(
            p.grayscale.view(-1, 1, 1, 1), rgb_to_grayscale(crops).expand_as(crops), crops
        )
        crops = gaussian_blur(crops, p.blur_sigma, c.blur_kernel_size(size))
        crops = torch.where(p.solarize.view(-1, 1, 1, 1) & (crops >= 0.5), 1.0 - crops, crops)
        mean, std = self._normalisation(x.device)
        return (crops - mean) / std

    def _normalisation(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The recipe's (1, 3, 1, 1) mean and std on ``device``, copied there once (a
        tensor made from Python numbers on a GPU is a host sync each time)."""
        if device not in self._constants:
            c = self.config
            self._constants[device] = tuple(
                torch.tensor(v).view(1, 3, 1, 1).to(device) for v in (c.mean, c.std)
            )
        return self._constants[device]

    @staticmethod
    def _color_jitter(x: Tensor, p: ViewParams, slots: Tensor) -> Tensor:
        """torchvision's ColorJitter per image: at each of the 4 positions, the op that
        image's ``jitter_order`` puts there (``slots[:, position, op]``), if jittered."""
        ops = (
            (adjust_brightness, p.brightness),
            (adjust_contrast, p.contrast),
            (adjust_saturation, p.saturation),
            (adjust_hue, p.hue),
        )
        for position in range(4):
            for op_index, (op, factor) in enumerate(ops):
                x = _apply_where(op, x, factor, slots[:, position, op_index])
        return x

    # ---- the random draws -------------------------------------------------------------
    def sample_params(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        image_size: tuple[int, int] = (1, 1),
    ) -> list[ViewParams]:
        """Draw every view's parameters for ``batch_size`` images, on the CPU.

        Args:
            batch_size: number of images B.
            generator: a CPU ``torch.Generator`` (``None``: the global one).
            image_size: (H, W); only the aspect ratio W / H matters.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        aspect = image_size[1] / image_size[0]
        return [self._sample_view(r, batch_size, aspect, generator) for r in self.config.views()]

    def _sample_view(
        self, recipe: ViewRecipe, n: int, aspect: float, g: torch.Generator | None
    ) -> ViewParams:
        c = self.config
        jitter = torch.rand(n, generator=g) < c.jitter_p
        one, zero = torch.ones(n), torch.zeros(n)
        brightness = _uniform((n,), max(0.0, 1 - c.brightness), 1 + c.brightness, g)
        contrast = _uniform((n,), max(0.0, 1 - c.contrast), 1 + c.contrast, g)
        saturation = _uniform((n,), max(0.0, 1 - c.saturation), 1 + c.saturation, g)
        hue = _uniform((n,), -c.hue, c.hue, g)
        blur = torch.rand(n, generator=g) < recipe.blur_p
        sigma = _uniform((n,), *c.blur_sigma_pixels(), g)
        return ViewParams(
            crop=self._random_resized_crop(recipe.scale, n, aspect, g),
            flip=torch.rand(n, generator=g) < c.flip_p,
            jitter=jitter,
            brightness=torch.where(jitter, brightness, one),
            contrast=torch.where(jitter, contrast, one),
            saturation=torch.where(jitter, saturation, one),
            hue=torch.where(jitter, hue, zero),
            jitter_order=torch.rand(n, 4, generator=g).argsort(dim=1),
            grayscale=torch.rand(n, generator=g) < c.grayscale_p,
            blur_sigma=torch.where(blur, sigma, zero),
            solarize=torch.rand(n, generator=g) < recipe.solarize_p,
        )

    def _random_resized_crop(
        self,
        scale: tuple[float, float],
        n: int,
        aspect: float,
        g: torch.Generator | None,
        tries: int = 10,
    ) -> Tensor:
        """(n, 4) boxes: torchvision's algorithm (ten tries, central fallback), vectorised.

        Area fraction s ~ U(scale) and log ratio ~ U(log crop_ratio); with image aspect
        a = W / H the box is ``w = sqrt(s r / a)``, ``h = sqrt(s a / r)`` in fractions.
        """
        area = _uniform((n, tries), *scale, g)
        log_lo, log_hi = (math.log(r) for r in self.config.crop_ratio)
        ratio = torch.exp(_uniform((n, tries), log_lo, log_hi, g))
        w = torch.sqrt(area * ratio / aspect)
        h = torch.sqrt(area * aspect / ratio)
        ok = (w <= 1.0) & (h <= 1.0)
        first = ok.int().argmax(dim=1, keepdim=True)  # first valid try
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        fb_w, fb_h = self._fallback_box(aspect)
        found = ok.any(dim=1)
        w = torch.where(found, w, torch.full_like(w, fb_w))
        h = torch.where(found, h, torch.full_like(h, fb_h))
        top = torch.where(found, torch.rand(n, generator=g), torch.full_like(h, 0.5)) * (1.0 - h)
        left = torch.where(found, torch.rand(n, generator=g), torch.full_like(w, 0.5)) * (1.0 - w)
        return torch.stack([top, left, h, w], dim=1)

    def _fallback_box(self, aspect: float) -> tuple[float, float]:
        r_lo, r_hi = self.config.crop_ratio
        if aspect < r_lo:
            return 1.0, aspect / r_lo
        if aspect > r_hi:
            return r_hi / aspect, 1.0
        return 1.0, 1.0
