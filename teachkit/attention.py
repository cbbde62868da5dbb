"""Self-attention maps that segment objects (DINO paper, Fig. 1 and Sec. 4.2.3).

In a DINO ViT, the attention of the CLS token to the patches in the last block picks out
the main object, without any label. This module turns the raw attention tensor into
those maps, thresholds them as the paper does, and scores them against masks::

    attn = model.get_last_selfattention(x)          # (B, heads, 1 + h*w, 1 + h*w)
    maps = cls_attention_maps(attn, grid=(h, w))    # (B, heads, h, w)
    masks = mass_threshold(maps, mass=0.6)          # keep 60% of each head's mass
    union = merge_heads(masks)                      # (B, h, w)

Conventions: ``grid = (h, w)`` is (rows, columns) of patches; tokens after the CLS token
are patches in row-major order (patch ``(i, j)`` is token ``1 + i * w + j``, the order of
``Conv2d`` patch embedding + ``flatten(2)``); patch ``(i, j)`` covers the pixels
``[i*p:(i+1)*p, j*p:(j+1)*p]`` of an image of size ``(h*p, w*p)``.

Every function checks its arguments before it uses them: an argument that is not a
tensor (a list, a NumPy array) is a ``TypeError`` naming it and the tensor expected; a
tensor of the wrong shape or dtype, or a value out of range, is a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from teachkit.infra.tensor_checks import require_positive_int, require_tensor

__all__ = [
    "attention_jaccard",
    "best_head_jaccard",
    "cls_attention_maps",
    "jaccard",
    "mass_threshold",
    "merge_heads",
    "overlay",
    "upsample_patches",
]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``value`` as ``(a, b)`` of positive ints (``True`` is not one)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(f"{name} must be a positive int or a pair of them; got {value!r}")
    return pair  # type: ignore[return-value]


def _check_mass(mass: object) -> None:
    """Raise unless ``mass`` is a number in ``(0, 1]`` (TypeError for a non-number)."""
    if isinstance(mass, bool) or not isinstance(mass, (int, float)):
        raise TypeError(f"mass must be a number in (0, 1]; got {mass!r}")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1]; got {mass}")


def upsample_patches(x: Tensor, patch_size: int | tuple[int, int]) -> Tensor:
    """Repeat each patch value over its ``p x p`` pixel block: ``(..., h, w)`` -> ``(..., hp, wp)``.

    The same as ``F.interpolate(scale_factor=p, mode="nearest")`` in the official
    ``visualize_attention.py``, for any number of leading dims and for bool masks.
    """
    ph, pw = _pair(patch_size, "patch_size")
    require_tensor("x", x, "of shape (..., h, w)")
    if x.ndim < 2:
        raise ValueError(f"expected (..., h, w); got shape {tuple(x.shape)}")
    return x.repeat_interleave(ph, dim=-2).repeat_interleave(pw, dim=-1)


def cls_attention_maps(
    attn: Tensor,
    grid: tuple[int, int],
    *,
    image_size: tuple[int, int] | None = None,
) -> Tensor:
    """The attention of the CLS token to every patch, one map per head.

    Args:
        attn: ``(B, heads, 1 + h*w, 1 + h*w)`` attention probabilities of one block
            (from ``get_last_selfattention``); token 0 is CLS.
        grid: ``(h, w)``, patch rows and columns (non-square is fine).
        image_size: ``(H, W)`` to upsample to, an integer multiple of the grid
            (``H = h * p``); each patch value fills its ``p x p`` block (nearest).
            ``None`` keeps patch resolution.

    Returns:
        ``(B, heads, h, w)``, or ``(B, heads, H, W)`` with ``image_size``.

    Raises:
        ValueError: ``attn`` is not 4-D and square in its last two dims, its token
            count is not ``1 + h*w``, or ``image_size`` is not a multiple of ``grid``.
    """
    h, w = _pair(grid, "grid")
    require_tensor("attn", attn, "of shape (B, heads, 1+N, 1+N)")
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must have shape (B, heads, 1+N, 1+N); got {tuple(attn.shape)}")
    tokens = attn.shape[-1]
    if tokens != 1 + h * w:
        raise ValueError(
            f"attn has {tokens} tokens but grid {(h, w)} needs 1 + {h}*{w} = {1 + h * w} "
            "(one CLS token, then the patches)"
        )
    maps = attn[:, :, 0, 1:].reshape(attn.shape[0], attn.shape[1], h, w)
    if image_size is None:
        return maps
    H, W = _pair(image_size, "image_size")
    if H % h or W % w:
        raise ValueError(
            f"image_size {(H, W)} is not a multiple of the grid {(h, w)}; crop the image to "
            "a multiple of the patch size first, as the official script does"
        )
    return upsample_patches(maps, (H // h, W // w))


def mass_threshold(maps: Tensor, mass: float = 0.6) -> Tensor:
    """Keep the most-attended patches that together hold ``mass`` of the attention.

    Exactly the official rule (``visualize_attention.py --threshold``): per map, sort the
    values in ascending order, normalise them to sum to 1, take the cumulative sum and
    keep the patches where it exceeds ``1 - mass``. The kept set is the smallest set of
    largest values whose total is at least ``mass``. Ties are resolved by a stable sort
    (the earlier patch in row-major order is dropped first); the official sort is not
    stable, so it may pick differently among exactly equal values.

    Args:
        maps: ``(..., h, w)`` non-negative attention, one map per leading index
            (e.g. ``(B, heads, h, w)``).
        mass: fraction of the mass to keep, in ``(0, 1]`` (DINO: 0.6).

    Returns:
        A bool mask of the same shape. A map whose values are all zero keeps nothing.

    Raises:
        ValueError: ``mass`` outside ``(0, 1]``, fewer than 2 dims, negative or
            non-finite values.
    """
    _check_mass(mass)
    require_tensor("maps", maps, "of shape (..., h, w)")
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (..., h, w); got {tuple(maps.shape)}")
    if not torch.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("maps must be finite and non-negative (attention probabilities)")
    flat = maps.flatten(-2)
    values, order = torch.sort(flat, dim=-1, stable=True)
    values = values / values.sum(dim=-1, keepdim=True)
    keep_sorted = torch.cumsum(values, dim=-1) > (1 - mass)  # NaN (all-zero map) -> False
    keep = torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep.reshape(maps.shape)


def merge_heads(masks: Tensor, *, head_dim: int = -3) -> Tensor:
    """Union over heads: a pixel is foreground if any head keeps it.

    ``(B, heads, h, w)`` or ``(heads, h, w)`` -> ``(B, h, w)`` or ``(h, w)``.
    """
    require_tensor("masks", masks, "of shape (..., heads, h, w), bool")
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool; got {masks.dtype}")
    if masks.ndim < 3:
        raise ValueError(f"masks must have shape (..., heads, h, w); got {tuple(masks.shape)}")
    return masks.any(dim=head_dim)


def jaccard(pred_mask: Tensor, true_mask: Tensor) -> Tensor:
    """Intersection over union of bool masks, one value per mask.

    Args:
        pred_mask, true_mask: bool ``(..., H, W)`` of the same shape.

    Returns:
        float32 ``(...)``. Two empty masks agree perfectly: 0/0 is defined as 1.

    Raises:
        ValueError: different shapes, non-bool dtype or fewer than 2 dims.
    """
    require_tensor("pred_mask", pred_mask, "of shape (..., H, W), bool")
    require_tensor("true_mask", true_mask, "of shape (..., H, W), bool")
    if pred_mask.shape != true_mask.shape:
        raise ValueError(
            f"masks differ in shape: pred {tuple(pred_mask.shape)}, true {tuple(true_mask.shape)}"
        )
    if pred_mask.dtype != torch.bool or true_mask.dtype != torch.bool:
        raise ValueError(f"masks must be bool; got {pred_mask.dtype} and {true_mask.dtype}")
    if pred_mask.ndim < 2:
        raise ValueError(f"masks must have shape (..., H, W); got {tuple(pred_mask.shape)}")
    inter = (pred_mask & true_mask).flatten(-2).sum(-1).float()
    union = (pred_mask | true_mask).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def best_head_jaccard(head_masks: Tensor, true_mask: Tensor) -> Tensor:
    """Per sample, the Jaccard of its best head: ``(B, heads, H, W)``, ``(B, H, W)`` -> ``(B,)``.

    This is an oracle (the head is chosen with the ground truth of each image); the
    dataset-level choice of one head for all images is in :func:`attention_jaccard`.
    """
    require_tensor("head_masks", head_masks, "of shape (B, heads, H, W), bool")
    require_tensor("true_mask", true_mask, "of shape (B, H, W), bool")
    if head_masks.ndim != true_mask.ndim + 1:
        raise ValueError(
            f"expected head_masks (B, heads, H, W) and true_mask (B, H, W); got "
            f"{tuple(head_masks.shape)} and {tuple(true_mask.shape)}"
        )
    per_head = jaccard(head_masks, true_mask.unsqueeze(-3).expand_as(head_masks))
    return per_head.max(dim=-1).values


def attention_jaccard(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    patch_size: int | None = None,
    mass: float = 0.6,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, object]:
    """How well thresholded CLS attention segments a labelled set (DINO Table 7 style).

    Every image is passed through ``model.get_last_selfattention``; each head's map is
    thresholded with :func:`mass_threshold`, upsampled to pixels and compared with the
    true mask by :func:`jaccard`.

    Args:
        model: exposes ``get_last_selfattention(x) -> (B, heads, 1+N, 1+N)`` and
            ``patch_size`` (the course ViT and the official DINO ViT both do). It runs in
            eval mode under ``torch.inference_mode`` on the device of its parameters;
            its mode is restored afterwards.
        images: ``(N, 3, H, W)`` float, normalised as the model expects, with ``H`` and
            ``W`` multiples of the patch size.
        masks: ``(N, H, W)`` bool foreground masks.
        patch_size: overrides ``model.patch_size``.
        mass: fraction of attention mass kept (DINO: 0.6).
        batch_size: images per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``per_head``: ``(heads,)`` tensor, mean Jaccard of each head over the set;
        ``best_head`` / ``best_head_index``: the best of those (one head for the whole
        set, as the paper reports); ``mean_head``: their mean; ``merged``: mean Jaccard
        of the union of all heads; ``oracle_head``: mean of each image's best head
        (:func:`best_head_jaccard`, an upper bound); ``head_average``: mean Jaccard of
        one map per image, the heads' maps averaged *before* the threshold (the map
        :func:`teachkit.dino_sam.attention_saliency` proposes objects with). Heads that
        attend to different parts of the object add up; a lone head that looks at the
        background is outvoted.
    """
    if patch_size is None:
        patch_size = getattr(model, "patch_size", None)
        if patch_size is None:
            raise ValueError("model has no patch_size attribute; pass patch_size=")
    if not callable(getattr(model, "get_last_selfattention", None)):
        raise ValueError("model must have a get_last_selfattention(x) method")
    p = _pair(patch_size, "patch_size")
    require_tensor("images", images, "of shape (N, 3, H, W), float")
    require_tensor("masks", masks, "of shape (N, H, W), bool")
    _check_mass(mass)
    require_positive_int("batch_size", batch_size)
    if images.ndim != 4 or masks.ndim != 3:
        raise ValueError(
            f"expected images (N, 3, H, W) and masks (N, H, W); got {tuple(images.shape)} "
            f"and {tuple(masks.shape)}"
        )
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"images {tuple(images.shape)} and masks {tuple(masks.shape)} must agree in N, H, W"
        )
    if images.shape[0] == 0:
        raise ValueError("images is empty: give at least one image and its mask")
    H, W = images.shape[-2:]
    if H % p[0] or W % p[1]:
        raise ValueError(f"image size {(H, W)} is not a multiple of the patch size {p}")
    grid = (H // p[0], W // p[1])
    device = next((q.device for q in model.parameters()), torch.device("cpu"))

    per_head, merged, oracle, averaged = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            starts = range(0, images.shape[0], batch_size)
            for s in tqdm(starts, desc="attention", disable=not progress):
                x = images[s : s + batch_size].to(device)
                truth = masks[s : s + batch_size].to(device=device, dtype=torch.bool)
                maps = cls_attention_maps(model.get_last_selfattention(x), grid)
                kept = upsample_patches(mass_threshold(maps, mass), p)
                per_head.append(jaccard(kept, truth.unsqueeze(1).expand_as(kept)).cpu())
                merged.append(jaccard(merge_heads(kept), truth).cpu())
                oracle.append(best_head_jaccard(kept, truth).cpu())
                mean_map = upsample_patches(mass_threshold(maps.mean(dim=1), mass), p)
                averaged.append(jaccard(mean_map, truth).cpu())
    finally:
        model.train(was_training)

    heads = torch.cat(per_head).mean(dim=0)
    best = int(heads.argmax())
    return {
        "per_head": heads,
        "best_head": float(heads[best]),
        "best_head_index": best,
        "mean_head": float(heads.mean()),
        "merged": float(torch.cat(merged).mean()),
        "oracle_head": float(torch.cat(oracle).mean()),
        "head_average": float(torch.cat(averaged).mean()),
    }


def _to_hwc_unit(image: Tensor | np.ndarray) -> np.ndarray:
    img = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"image must be (3, H, W) or (H, W, 3); got shape {img.shape}")
    if img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.shape[-1] != 3:
        raise ValueError(f"image must have 3 channels; got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:  # e.g. ImageNet-normalised: rescale for display
        img = (img - lo) / max(hi - lo, 1e-12)
    return img


def overlay(
    image: Tensor | np.ndarray,
    mask_or_map: Tensor | np.ndarray,
    *,
    color: tuple[float, float, float] = (1.0, 0.2, 0.2),
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a mask or an attention map over an image, for ``plt.imshow``.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)``, uint8 (0..255) or float; floats outside
            [0, 1] (a normalised image) are min-max rescaled for display.
        mask_or_map: ``(H, W)`` or patch-resolution ``(h, w)`` dividing ``(H, W)``
            (nearest upsampling). A bool mask paints ``color`` with opacity ``alpha``;
            a float map is min-max scaled to [0, 1] and sets the opacity per pixel.
        color: RGB in [0, 1].
        alpha: the largest opacity of the colour.

    Returns:
        ``(H, W, 3)`` float32 array in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    img = _to_hwc_unit(image)
    if isinstance(mask_or_map, Tensor):
        m = mask_or_map.detach().cpu()
    else:
        m = torch.from_numpy(np.asarray(mask_or_map))
    if m.ndim != 2:
        raise ValueError(f"mask_or_map must be 2-D (H, W) or (h, w); got {tuple(m.shape)}")
    H, W = img.shape[:2]
    if tuple(m.shape) != (H, W):
        if H % m.shape[0] or W % m.shape[1]:
            raise ValueError(
                f"mask_or_map {tuple(m.shape)} neither matches nor divides the image {(H, W)}"
            )
        m = upsample_patches(m, (H // m.shape[0], W // m.shape[1]))
    if m.dtype == torch.bool:
        weight = m.float()
    else:
        m = m.float()
        weight = (m - m.min()) / (m.max() - m.min()).clamp(min=1e-12)
    weight = (alpha * weight).numpy()[..., None]
    return ((1 - weight) * img + weight * np.asarray(color, np.float32)).astype(np.float32)
