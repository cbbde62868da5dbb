"""DINO proposes, SAM segments: object masks with no labels anywhere (Chapter 7).

A self-supervised DINO network knows roughly *where* the object of an image is; SAM
turns a rough hint into a crisp mask. Joined, they segment objects without a single
label, box or mask drawn by a person::

    saliency = attention_saliency(dino, small)     # (B, h, w): where DINO looks
    saliency = contrast_saliency(dino, small)      # (B, h, w): what differs from the border
    props = propose(saliency, image_size=(H, W))   # masks, boxes and points at (H, W)
    masks, scores = segment_with_sam(predictor, images, props, prompt="point")

Two label-free saliency maps are offered, both from the frozen DINO network:

* **attention**: the ``[CLS]`` attention of the last block, averaged over heads
  (Chapter 4; the DINO paper's Fig. 1);
* **border contrast**: how different each patch token is from the average token of
  the image border, ``1 - cos(f_ij, mean border f)``. Objects rarely cover the border,
  so the border describes the background; the same *background prior* is an old idea of
  saliency detection, here applied to DINO's patch features.

Either map is thresholded by :func:`~teachkit.attention.mass_threshold` (keep 60 % of
the mass, the paper's rule), giving a coarse patch mask; its tight box and its deepest
pixel become SAM's prompts.

Arguments are checked before they are used: one of the wrong type (a list for a tensor,
a model for a predictor) is a ``TypeError`` that names it, a tensor of the wrong shape
or dtype, an empty batch or a size that does not fit a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from teachkit.attention import cls_attention_maps, mass_threshold, upsample_patches
from teachkit.infra.tensor_checks import describe, require_positive_int, require_tensor
from teachkit.preprocess import imagenet_preprocess
from teachkit.sam.geometry import mask_center, masks_to_boxes
from teachkit.sam.predictor import SamPredictor
from teachkit.video import patch_features

__all__ = [
    "PROMPTS",
    "Proposals",
    "attention_saliency",
    "border_contrast",
    "contrast_saliency",
    "propose",
    "segment_with_sam",
]

PROMPTS = ("point", "box", "box+point")
"""How a proposal prompts SAM: its deepest pixel (multimask, SAM's best-scored mask is
kept), its box (single mask), or both (single mask)."""


def _check_images(images: Tensor, name: str = "images") -> None:
    """Raise unless ``images`` is a non-empty ``(B, 3, H, W)`` uint8 tensor."""
    require_tensor(name, images, "of shape (B, 3, H, W), uint8")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor; got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"{name} must be uint8 RGB (0..255); got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one image")


def _size_pair(value: object, name: str) -> tuple[int, int]:
    """``value`` as ``(rows, columns)``: two positive ints, or a ValueError naming it."""
    pair = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(f"{name} must be (rows, columns), two positive ints; got {value!r}")
    return pair[0], pair[1]


def _grid_of(model: nn.Module, images: Tensor) -> tuple[int, int]:
    p = getattr(model, "patch_size", None)
    if not isinstance(p, int) or images.shape[-1] % p or images.shape[-2] % p:
        raise ValueError(
            f"image size {tuple(images.shape[-2:])} must be a multiple of the model's "
            f"patch_size ({p})"
        )
    return images.shape[-2] // p, images.shape[-1] // p


@torch.no_grad()
def attention_saliency(
    model: nn.Module,
    images: Tensor,
    *,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 64,
) -> Tensor:
    """The last block's ``[CLS]`` attention to the patches, averaged over heads.

    Args:
        model: a ViT with ``get_last_selfattention`` and ``patch_size`` (the course ViT
            and the official DINO ViT).
        images: ``(B, 3, H, W)`` uint8 RGB at the size the network expects.
        preprocess: uint8 batch -> model input (default: ImageNet normalisation).
        batch_size: images per forward pass.

    Returns:
        ``(B, h, w)`` float on the CPU, non-negative; each map sums to less than 1
        (the rest is the ``[CLS]`` token's attention to itself).
    """
    _check_images(images)
    require_positive_int("batch_size", batch_size)
    grid = _grid_of(model, images)
    prep = preprocess or imagenet_preprocess
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = prep(images[start : start + batch_size].to(device))
        maps = cls_attention_maps(model.get_last_selfattention(x), grid)  # (b, heads, h, w)
        out.append(maps.float().mean(dim=1).cpu())
    return torch.cat(out)


def border_contrast(features: Tensor, grid: tuple[int, int]) -> Tensor:
    """``1 - cos(f_ij, m)`` per patch, where ``m`` is the mean feature of the border patches.

    Args:
        features: ``(B, h*w, D)`` patch features, row-major grid.
        grid: ``(h, w)``, both at least 3 (so the grid has an inside).

    Returns:
        ``(B, h, w)`` float in ``[0, 2]``: 0 for a patch exactly like the border's average.
    """
    require_tensor("features", features, "of shape (B, h*w, D)")
    h, w = _size_pair(grid, "grid")
    if h < 3 or w < 3:
        raise ValueError(f"border contrast needs a grid of at least 3 x 3 patches; got {grid}")
    if features.ndim != 3 or features.shape[1] != h * w:
        raise ValueError(
            f"features must be (B, h*w, D) = (B, {h * w}, D) for grid {grid}; "
            f"got {tuple(features.shape)}"
        )
    f = F.normalize(features.float(), dim=-1).reshape(features.shape[0], h, w, -1)
    border = torch.cat([f[:, 0], f[:, -1], f[:, 1:-1, 0], f[:, 1:-1, -1]], dim=1)  # (B, n, D)
    m = F.normalize(border.mean(dim=1), dim=-1)  # (B, D)
    cos = torch.einsum("bhwd,bd->bhw", f, m)
    return (1 - cos).clamp(0, 2)


def contrast_saliency(
    model: nn.Module,
    images: Tensor,
    *,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 64,
) -> Tensor:
    """:func:`border_contrast` of the network's last-block patch tokens.

    Args:
        model: a ViT with ``get_intermediate_layers`` and ``patch_size``.
        images: ``(B, 3, H, W)`` uint8 RGB at the size the network expects.
        preprocess: uint8 batch -> model input (default: ImageNet normalisation).
        batch_size: images per forward pass.

    Returns:
        ``(B, h, w)`` float on the CPU in ``[0, 2]``.
    """
    _check_images(images)
    require_positive_int("batch_size", batch_size)
    feats, grid = patch_features(model, images, preprocess=preprocess, batch_size=batch_size)
    return border_contrast(feats, grid)


@dataclass
class Proposals:
    """Where the objects are, as a coarse mask and as SAM prompts, at image resolution.

    Attributes:
        masks: ``(B, H, W)`` bool, the thresholded saliency, one patch = one block.
        boxes: ``(B, 4)`` float XYXY pixels, the tight box of each mask.
        points: ``(B, 2)`` float (x, y) pixels, each mask's pixel farthest from its edge.
    """

    masks: Tensor
    boxes: Tensor
    points: Tensor

    def __len__(self) -> int:
        return self.masks.shape[0]


def propose(
    saliency: Tensor,
    image_size: tuple[int, int],
    *,
    mass: float = 0.6,
    largest_part: bool = False,
) -> Proposals:
    """Threshold saliency maps and turn them into SAM prompts.

    Args:
        saliency: ``(B, h, w)`` non-negative maps (e.g. :func:`attention_saliency`).
        image_size: ``(H, W)`` of the images SAM will see; a whole multiple of
            ``(h, w)`` (each patch becomes an ``H/h x W/w`` block).
        mass: fraction of each map's mass to keep (DINO paper: 0.6).
        largest_part: keep only the connected part of the thresholded map (patches
            touching by a side) that holds the most saliency. Stray patches far from the
            object (clutter that stood out) then no longer stretch the box.

    Returns:
        :class:`Proposals` at ``image_size``.

    Raises:
        ValueError: wrong shapes, a size that is not a multiple of the grid, or a map
            that is zero everywhere (nothing stands out: no proposal can be made).
    """
    require_tensor("saliency", saliency, "of shape (B, h, w)")
    if saliency.ndim != 3 or 0 in saliency.shape:
        raise ValueError(f"saliency must be (B, h, w), none of them 0; got {tuple(saliency.shape)}")
    b, h, w = saliency.shape
    H, W = _size_pair(image_size, "image_size")
    if H % h or W % w:
        raise ValueError(
            f"image_size {(H, W)} must be a whole multiple of the saliency grid {(h, w)}"
        )
    keep = mass_threshold(saliency.float(), mass=mass)
    empty = ~keep.flatten(1).any(dim=1)
    if empty.any():
        i = int(empty.nonzero()[0])
        raise ValueError(f"saliency map {i} is zero everywhere: nothing stands out to propose")
    if largest_part:
        keep = _largest_part(keep, saliency.float())
    masks = upsample_patches(keep, (H // h, W // w))
    boxes = masks_to_boxes(masks).float()
    points = torch.stack([mask_center(m) for m in masks])
    return Proposals(masks=masks, boxes=boxes, points=points)


def _largest_part(keep: Tensor, saliency: Tensor) -> Tensor:
    """``(B, h, w)`` bool: per map, the 4-connected part of ``keep`` with the most saliency."""
    out = torch.zeros_like(keep)
    for i, (k, s) in enumerate(zip(keep.cpu().numpy(), saliency.cpu().numpy(), strict=True)):
        parts, n = ndimage.label(k)
        mass_of = ndimage.sum_labels(s, parts, index=np.arange(1, n + 1))
        out[i] = torch.from_numpy(parts == 1 + int(np.argmax(mass_of)))
    return out


@torch.no_grad()
def segment_with_sam(
    predictor: SamPredictor,
    images: Tensor | np.ndarray,
    proposals: Proposals,
    *,
    prompt: str = "point",
) -> tuple[Tensor, Tensor]:
    """Prompt SAM with each image's proposal; one mask per image.

    Args:
        predictor: a :class:`SamPredictor` (any SAM size; images are resized for it).
        images: ``(B, 3, H, W)`` uint8 RGB, the size the proposals were made at.
        proposals: from :func:`propose`, one per image.
        prompt: ``"point"`` (3 masks, the one with the highest predicted IoU is kept),
            ``"box"`` or ``"box+point"`` (one mask).

    Returns:
        ``masks`` ``(B, H, W)`` bool and ``scores`` ``(B,)`` SAM's predicted IoUs, on the CPU.
    """
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    if not isinstance(predictor, SamPredictor):
        raise TypeError(
            f"predictor must be a SamPredictor (SamPredictor(sam)); got {describe(predictor)}"
        )
    if not isinstance(proposals, Proposals):
        raise TypeError(f"proposals must be the Proposals of propose(); got {describe(proposals)}")
    images = torch.as_tensor(images)
    _check_images(images)
    if len(proposals) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(proposals)} proposals")
    if tuple(proposals.masks.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(
            f"proposals are {tuple(proposals.masks.shape[-2:])} but the images are "
            f"{tuple(images.shape[-2:])}: propose at the images' size"
        )
    masks, scores = [], []
    for image, box, point in zip(images, proposals.boxes, proposals.points, strict=True):
        predictor.set_image(image)
        kwargs: dict[str, Tensor] = {}
        if prompt in ("point", "box+point"):
            kwargs["point_coords"] = point.view(1, 1, 2).double()
            kwargs["point_labels"] = torch.ones(1, 1, dtype=torch.long)
        if prompt in ("box", "box+point"):
            kwargs["boxes"] = box.view(1, 4).double()
        out, iou, _ = predictor.predict_torch(**kwargs, multimask_output=prompt == "point")
        best = int(iou[0].argmax())
        masks.append(out[0, best].cpu())
        scores.append(iou[0, best].float().cpu())
    predictor.reset_image()
    return torch.stack(masks), torch.stack(scores)
