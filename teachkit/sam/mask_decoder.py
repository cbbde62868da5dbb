"""SAM's mask decoder: output tokens read the image and become masks and quality scores.

Chapter 6: SAM, encoder to decoder -- section "The mask decoder".

Learned *output tokens* are put in front of the prompt tokens: one IoU token and
``num_multimask_outputs + 1`` = 4 mask tokens. Token 0 of the masks is the single-mask
answer (for unambiguous prompts); tokens 1..3 are the three ambiguity-aware answers
(whole / part / sub-part) returned when ``multimask_output=True``.

1. The image embedding plus the dense prompt embedding, and all tokens, go through the
   :class:`~teachkit.sam.transformer.TwoWayTransformer`.
2. The updated image tokens are upscaled 4x by two transposed convolutions
   (``output_upscaling``): ``C x g x g`` -> ``C/8 x 4g x 4g`` (32 x 256 x 256 official).
3. Each mask token goes through its own 3-layer MLP (a *hypernetwork*,
   ``output_hypernetworks_mlps.i``) to a ``C/8`` vector; its dot product with every
   upscaled pixel gives that mask's logits at ``4g x 4g``.
4. The IoU token goes through ``iou_prediction_head`` to one predicted IoU per mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from teachkit.sam.common import LayerNorm2d

__all__ = ["MLP", "MaskDecoder"]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    Works on ``... x input_dim`` tensors and returns ``... x output_dim``.
    """

    def __init__(
        self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"an MLP needs num_layers >= 1, got {num_layers}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predict mask logits and their IoU from image and prompt embeddings.

    Args:
        transformer_dim: channels C of the image embedding and of the tokens (256).
        transformer: the two-way transformer working at width C.
        num_multimask_outputs: masks returned when ``multimask_output=True`` (3).
        activation: activation of the upscaling convolutions (GELU).
        iou_head_depth: layers of the IoU-prediction MLP (3).
        iou_head_hidden_dim: hidden width of the IoU-prediction MLP (256).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        c = transformer_dim
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            activation(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(input_dim=c, hidden_dim=c, output_dim=c // 8, num_layers=3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            input_dim=c,
            hidden_dim=iou_head_hidden_dim,
            output_dim=self.num_mask_tokens,
            num_layers=iou_head_depth,
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts.

        Args:
            image_embeddings: ``1 x C x g x g`` (one image shared by all B prompts, as the
                official model expects) or ``B x C x g x g`` (one image per prompt, for
                training on a batch of images).
            image_pe: ``1 x C x g x g`` dense positional encoding
                (:meth:`PromptEncoder.get_dense_pe`).
            sparse_prompt_embeddings: ``B x T x C`` point/box tokens.
            dense_prompt_embeddings: ``B x C x g x g`` (or ``1 x ...``) mask embeddings.
            multimask_output: return the 3 ambiguity masks instead of the single mask.

        Returns:
            Mask logits ``B x M x 4g x 4g`` and predicted IoUs ``B x M``, with M = 3 for
            multimask output and M = 1 otherwise.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks ``B x 4 x 4g x 4g`` and IoUs ``B x 4`` (see forward)."""
        b = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}, expected 1 (shared) "
                f"or {b} (one per prompt)"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

        src = image_embeddings.expand(b, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # B x num_mask_tokens x C/8
        _, c_up, h_up, w_up = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c_up, h_up * w_up)).reshape(b, -1, h_up, w_up)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
