"""The SAM model: image encoder + prompt encoder + mask decoder, and the image geometry.

Chapter 6: SAM, encoder to decoder -- section "Putting SAM together".

Three frames of pixel coordinates appear, always X (column) then Y (row), and image
sizes always as ``(H, W)``:

1. the *original* image, ``H x W``;
2. the *input* frame: the image resized so its longest side is ``img_size``
   (:func:`preprocess_shape`, :func:`resize_longest_side`), ``h x w``, then normalised
   with ``pixel_mean`` / ``pixel_std`` and zero-padded at the bottom/right to
   ``img_size x img_size`` (:meth:`Sam.preprocess`);
3. the *low-res* mask frame, ``4g x 4g`` (256 x 256 official), which covers the padded
   input square.

The decoder predicts low-res logits; :meth:`Sam.postprocess_masks` upsamples them to the
padded input square, crops the padding, and resizes to the original ``H x W``. A pixel
belongs to the mask where the logit is > ``mask_threshold`` = 0.

``Sam.forward`` does *not* disable gradients (the official one does): the same module is
trained in :mod:`teachkit.sam` training code. :class:`~teachkit.sam.predictor.SamPredictor`
and the automatic mask generator switch gradients off themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from teachkit.sam.image_encoder import ImageEncoderViT
from teachkit.sam.mask_decoder import MaskDecoder
from teachkit.sam.prompt_encoder import PromptEncoder
from teachkit.sam.sizes import PIXEL_MEAN, PIXEL_STD

__all__ = [
    "Sam",
    "preprocess_shape",
    "resize_longest_side",
    "resize_coords",
    "resize_boxes",
]


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Size ``(h, w)`` of an ``height x width`` image resized so its longest side is ``long_side``.

    Sides are rounded half up, as in the official ``ResizeLongestSide``.
    """
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an ``H x W x 3`` uint8 RGB image to longest side ``long_side`` (PIL bilinear).

    Returns an ``h x w x 3`` uint8 array, pixel-identical to the official preprocessing.
    """
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def resize_coords(
    coords: torch.Tensor, original_size: tuple[int, int], long_side: int
) -> torch.Tensor:
    """Map ``... x 2`` pixel coordinates (X, Y) from the original frame to the input frame.

    Args:
        coords: coordinates in the original ``H x W`` image.
        original_size: ``(H, W)``.
        long_side: the model's ``img_size``.

    Returns:
        float32 coordinates, scaled by ``w / W`` in X and ``h / H`` in Y (computed in
        float64, as the official numpy code does).
    """
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float64, device=coords.device)
    return (coords.to(torch.float64) * scale).to(torch.float32)


def resize_boxes(
    boxes: torch.Tensor, original_size: tuple[int, int], long_side: int
) -> torch.Tensor:
    """Map ``B x 4`` XYXY boxes from the original frame to the input frame."""
    return resize_coords(boxes.reshape(-1, 2, 2), original_size, long_side).reshape(-1, 4)


class Sam(nn.Module):
    """Segment Anything: predicts object masks from an image and prompts.

    Args:
        image_encoder: the ViT backbone, image -> ``1 x C x g x g`` embedding.
        prompt_encoder: points / boxes / masks -> sparse and dense embeddings.
        mask_decoder: embeddings -> mask logits and predicted IoUs.
        pixel_mean: per-channel RGB mean on the 0..255 scale.
        pixel_std: per-channel RGB std on the 0..255 scale.

    ``pixel_mean`` and ``pixel_std`` are non-persistent buffers (not in the state dict),
    as in the official release, so its checkpoints load with ``strict=True``.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        *,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024 official)."""
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and zero-pad a resized image to the square model input.

        ``(B x) 3 x h x w`` RGB on the 0..255 scale (any dtype), longest side
        ``img_size`` -> float ``(B x) 3 x img_size x img_size``.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Low-res logits ``B x M x 4g x 4g`` -> logits ``B x M x H x W`` on the original image.

        Args:
            masks: decoder logits covering the padded input square.
            input_size: ``(h, w)`` of the resized image before padding.
            original_size: ``(H, W)`` of the original image.
        """
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode B prompts and decode them against an image embedding.

        Args:
            image_embeddings: ``1 x C x g x g`` (shared) or ``B x C x g x g``.
            point_coords: ``B x N x 2`` pixels (X, Y) in the *input* frame.
            point_labels: ``B x N``, 1 positive / 0 negative.
            boxes: ``B x 4`` XYXY pixels in the input frame.
            mask_input: ``B x 1 x 4g x 4g`` mask logits.
            multimask_output: 3 masks per prompt instead of 1.

        Returns:
            Low-res mask logits ``B x M x 4g x 4g`` and predicted IoUs ``B x M``.

        Raises:
            ValueError: ``point_coords`` without ``point_labels``, or the reverse.
        """
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def forward(
        self,
        batched_input: list[dict[str, Any]],
        multimask_output: bool,
        *,
        return_logits: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """Predict masks end to end, one dict per image (the official interface).

        Args:
            batched_input: one dict per image with ``"image"``: ``3 x h x w`` RGB 0..255,
                already resized to longest side ``img_size``; ``"original_size"``:
                ``(H, W)``; and optionally ``"point_coords"`` (``B x N x 2``),
                ``"point_labels"`` (``B x N``), ``"boxes"`` (``B x 4``, XYXY) in the input
                frame and ``"mask_inputs"`` (``B x 1 x 4g x 4g``).
            multimask_output: 3 masks per prompt instead of 1.
            return_logits: return logits in ``"masks"`` instead of booleans.

        Returns:
            Per image: ``"masks"`` ``B x M x H x W`` (bool, or logits), ``"iou_predictions"``
            ``B x M`` and ``"low_res_logits"`` ``B x M x 4g x 4g``.
        """
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        embeddings = self.image_encoder(images)
        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            low_res, iou = self.decode(
                embedding[None],
                point_coords=record.get("point_coords"),
                point_labels=record.get("point_labels"),
                boxes=record.get("boxes"),
                mask_input=record.get("mask_inputs"),
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res,
                input_size=tuple(record["image"].shape[-2:]),
                original_size=tuple(record["original_size"]),
            )
            if not return_logits:
                masks = masks > self.mask_threshold
            outputs.append({"masks": masks, "iou_predictions": iou, "low_res_logits": low_res})
        return outputs
