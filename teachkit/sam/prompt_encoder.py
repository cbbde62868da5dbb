"""SAM's prompt encoder: points and boxes become tokens, a mask becomes a dense map.

Chapter 6: SAM, encoder to decoder -- section "Prompts as tokens".

Coordinates are pixels of the *model input frame* (the resized, padded
``img_size x img_size`` image), X then Y. :class:`teachkit.sam.predictor.SamPredictor`
converts from original-image pixels before calling this module.

* **Sparse prompts.** A point ``(x, y)`` is shifted to its pixel centre (+0.5),
  normalised to ``[0, 1]``, and encoded with random Fourier features
  ``[sin(2 pi (2p - 1) G), cos(2 pi (2p - 1) G)]`` where ``G`` is a fixed ``2 x C/2``
  Gaussian matrix (the buffer ``pe_layer.positional_encoding_gaussian_matrix``). A
  learned vector is then added that says what the point is: ``point_embeddings.0``
  (negative / background click, label 0), ``point_embeddings.1`` (positive click,
  label 1), ``point_embeddings.2`` / ``.3`` (top-left / bottom-right box corner). A
  padding point (label -1) is replaced by ``not_a_point_embed``; one is appended to point
  prompts that come without a box.
* **Dense prompt.** A low-resolution mask logit map (``4 * g`` pixels a side, 256 for
  the official models) is downscaled by two stride-2 convolutions to the embedding grid
  (``mask_downscaling``). Without a mask, the learned ``no_mask_embed`` is broadcast
  over the grid instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from teachkit.sam.common import LayerNorm2d

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]

NEGATIVE, POSITIVE, PADDING = 0, 1, -1


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier positional encoding of 2-D coordinates (Tancik et al., 2020).

    Args:
        num_pos_feats: number of frequencies; the encoding has ``2 * num_pos_feats``
            channels (sines then cosines).
        scale: standard deviation of the Gaussian frequencies (1.0 when ``None`` or <= 0).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``... x 2`` coordinates in ``[0, 1]`` (X, Y) -> ``... x 2 num_pos_feats``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encode the centres of an ``H x W`` grid of cells: returns ``C x H x W``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )  # H x W x 2, (X, Y)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Encode ``B x N x 2`` pixel coordinates (X, Y) of an ``(H, W)`` image -> ``B x N x C``."""
        h, w = image_size
        coords = coords_input / coords_input.new_tensor([w, h])
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Encode point, box and mask prompts for the mask decoder.

    Args:
        embed_dim: width of the prompt tokens and of the image embedding (256 official).
        image_embedding_size: the embedding grid ``(g, g)`` (64 x 64 official).
        input_image_size: the padded model input ``(img_size, img_size)``.
        mask_in_chans: hidden channels of the mask downscaler (16 official).
        activation: activation of the mask downscaler.
    """

    num_point_embeddings: int = 4  # negative point, positive point, box corner 1, box corner 2

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every embedding cell: ``1 x embed_dim x g x g``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``B x N x 2`` points (X, Y) and ``B x N`` labels -> ``B x (N + pad) x embed_dim``."""
        points = points + 0.5  # pixel index -> pixel centre
        if pad:
            b = points.shape[0]
            points = torch.cat([points, points.new_zeros(b, 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), PADDING)], dim=1)
        encoding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        kind = (labels == NEGATIVE) * self.point_embeddings[NEGATIVE].weight + (
            labels == POSITIVE
        ) * self.point_embeddings[POSITIVE].weight
        padding = self.not_a_point_embed.weight.expand_as(encoding)
        return torch.where(labels == PADDING, padding, encoding + kind)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``B x 4`` boxes (XYXY) -> ``B x 2 x embed_dim``: one token per corner."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        encoding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_kind = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return encoding + corner_kind

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of B prompts (any combination; all-None gives B = 1, no tokens).

        Args:
            points: ``(coords, labels)``: ``B x N x 2`` pixel coordinates (X, Y) in the
                input frame and ``B x N`` labels (1 positive, 0 negative, -1 padding).
            boxes: ``B x 4`` boxes, XYXY pixels in the input frame.
            masks: ``B x 1 x 4g x 4g`` mask logits (e.g. a previous low-res prediction).

        Returns:
            Sparse embeddings ``B x T x embed_dim`` (T = N + 1 for points alone, N + 2 with
            a box) and dense embeddings ``B x embed_dim x g x g``.
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        weight = self.no_mask_embed.weight
        tokens = [torch.empty((bs, 0, self.embed_dim), device=weight.device, dtype=weight.dtype)]
        if points is not None:
            tokens.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))
        sparse = torch.cat(tokens, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense
