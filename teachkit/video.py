"""Segmenting a video with no labels: mask propagation by patch-feature matching (Chapter 4).

The DINO paper's DAVIS protocol (Sec. 4.2.3; ``eval_video_segmentation.py`` of the official
repository), in miniature. Given the object's mask in the first frame, every later frame
is labelled patch by patch: each patch looks for its most similar patches (cosine
similarity of the last block's patch tokens) in the first frame and the few frames just
before it, within a spatial neighbourhood, and takes the similarity-weighted average of
their labels::

    feats = patch_features(model, frames)                 # (T, h*w, D), unit norm
    masks = propagate_mask(feats, grid, first_mask)       # (T, H, W) bool

Official settings: context = the first frame + the 7 previous frames, top-5 sources per
patch, affinity ``exp(cos / 0.1)``, neighbourhood of 12 patches. The quick profile's
frames are small (a 16 x 16 grid), so the neighbourhood default here is 3 patches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from teachkit.preprocess import imagenet_preprocess

__all__ = [
    "mask_to_patches",
    "patch_features",
    "pixel_patch_features",
    "propagate_mask",
    "propagate_labels",
]


def patch_features(
    model: nn.Module,
    frames: Tensor,
    *,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 16,
) -> tuple[Tensor, tuple[int, int]]:
    """L2-normalised last-block patch tokens of every frame.

    Args:
        model: a ViT with ``get_intermediate_layers(x, n)`` and ``patch_size`` (the course
            ViT and the official DINO ViT).
        frames: (T, 3, H, W) uint8, or float already normalised as ``model`` expects.
        preprocess: applied to each uint8 batch (default: ImageNet normalisation).

    Returns:
        ``(features (T, h*w, D), (h, w))`` on the CPU, rows of unit norm, row-major grid.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W); got {tuple(frames.shape)}")
    p = getattr(model, "patch_size", None)
    if not isinstance(p, int) or frames.shape[-1] % p or frames.shape[-2] % p:
        raise ValueError(
            f"frame size {tuple(frames.shape[-2:])} must be a multiple of the model's "
            f"patch_size ({p})"
        )
    grid = (frames.shape[-2] // p, frames.shape[-1] // p)
    device = next(model.parameters()).device
    prep = preprocess or imagenet_preprocess
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, frames.shape[0], batch_size):
                x = frames[s : s + batch_size].to(device)
                x = prep(x) if not x.is_floating_point() or preprocess else x
                tokens = model.get_intermediate_layers(x, n=1)[0][:, 1:]  # drop [CLS]
                out.append(F.normalize(tokens.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out), grid


def pixel_patch_features(frames: Tensor, patch_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Raw pixels of each patch as its feature: the baseline with no network.

    The same layout as :func:`patch_features`, so either can feed
    :func:`propagate_mask` or :func:`teachkit.dino_sam.border_contrast`.

    Args:
        frames: (T, 3, H, W) images, H and W multiples of ``patch_size``.
        patch_size: side ``p`` of the square patches.

    Returns:
        ``(features (T, h*w, 3*p*p), (h, w))``: each patch's pixels, centred and
        L2-normalised, row-major grid.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W); got {tuple(frames.shape)}")
    p = patch_size
    t, _, h, w = frames.shape
    if p < 1 or h % p or w % p:
        raise ValueError(f"frame size {(h, w)} must be a multiple of patch_size ({p})")
    x = frames.float().unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
    x = x.reshape(t, (h // p) * (w // p), 3 * p * p)
    return F.normalize(x - x.mean(-1, keepdim=True), dim=-1), (h // p, w // p)


def mask_to_patches(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """(H, W) bool mask -> (h*w,) fraction of each patch's pixels inside the mask."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W); got {tuple(mask.shape)}")
    return F.adaptive_avg_pool2d(mask.float()[None, None], grid).flatten()


def _neighbourhood(grid: tuple[int, int], radius: int) -> Tensor:
    """(N, N) bool: patch j lies within ``radius`` patches of patch i (Chebyshev)."""
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    near = (rows[:, None] - rows[None, :]).abs() <= radius
    return near & ((cols[:, None] - cols[None, :]).abs() <= radius)


def propagate_labels(
    features: Tensor,
    grid: tuple[int, int],
    first: Tensor,
    *,
    n_last: int = 7,
    topk: int = 5,
    radius: int = 3,
    temperature: float = 0.1,
) -> Tensor:
    """Soft foreground labels of every frame's patches, propagated from frame 0.

    Args:
        features: (T, N, D) unit-norm patch features, N = h * w.
        grid: (h, w).
        first: (N,) foreground fraction of frame 0's patches (:func:`mask_to_patches`).
        n_last: previous frames in the context, besides frame 0 (official: 7).
        topk: sources kept per target patch (official: 5).
        radius: spatial neighbourhood in patches; negative means everywhere.
        temperature: affinity ``exp(cos / temperature)`` (official: 0.1).

    Returns:
        (T, N) foreground probability per patch; row 0 is ``first``.
    """
    t_frames, n, _ = features.shape
    if grid[0] * grid[1] != n:
        raise ValueError(f"grid {grid} has {grid[0] * grid[1]} patches, features have {n}")
    if first.shape != (n,):
        raise ValueError(f"first must be ({n},) patch labels; got {tuple(first.shape)}")
    if topk < 1 or n_last < 0 or temperature <= 0:
        raise ValueError(
            f"need topk >= 1, n_last >= 0, temperature > 0; got {topk}, {n_last}, {temperature}"
        )
    near = _neighbourhood(grid, radius) if radius >= 0 else torch.ones(n, n, dtype=torch.bool)
    labels = [torch.stack([1 - first, first], dim=1)]  # (N, 2): background, foreground
    for t in range(1, t_frames):
        context = [0] + list(range(max(1, t - n_last), t))
        aff = torch.exp(features[t] @ features[context].transpose(1, 2) / temperature)  # (C, N, N)
        aff = (aff * near).permute(1, 0, 2).reshape(n, -1)  # (N targets, C * N sources)
        k = min(topk, aff.shape[1])
        values, idx = aff.topk(k, dim=1)
        weights = values / values.sum(dim=1, keepdim=True).clamp_min(1e-30)
        sources = torch.cat([labels[c] for c in context])  # (C * N, 2)
        labels.append((weights.unsqueeze(-1) * sources[idx]).sum(dim=1))
    return torch.stack([lab[:, 1] for lab in labels])


def propagate_mask(
    features: Tensor,
    grid: tuple[int, int],
    first_mask: Tensor,
    **kwargs: float,
) -> Tensor:
    """Pixel masks of every frame: (T, H, W) bool, frame 0's mask propagated forward.

    The patch probabilities of :func:`propagate_labels` are upsampled bilinearly to the
    size of ``first_mask`` and thresholded at 0.5. Keyword arguments go to
    :func:`propagate_labels`.
    """
    soft = propagate_labels(features, grid, mask_to_patches(first_mask, grid), **kwargs)
    maps = F.interpolate(
        soft.view(-1, 1, *grid), size=first_mask.shape, mode="bilinear", align_corners=False
    )[:, 0]
    masks = maps > 0.5
    masks[0] = first_mask.bool()
    return masks
