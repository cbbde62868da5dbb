"""The sizes of SAM: every number that shapes a model, and the named configurations.

Chapter 6: SAM, encoder to decoder -- section "Three sizes, one recipe".

The official ViT-B / ViT-L / ViT-H models differ in four numbers (embedding width, depth,
heads, global-attention blocks); everything after the image encoder is the same.
``vit_tiny_shapes`` is the course's CPU model: 128-pixel images, 8-pixel patches (a
16 x 16 embedding grid), a 4-block encoder and a 64-channel decoder (0.73 M parameters).

This module holds numbers only and imports no model code, so a training config can check
its ``model`` name against :data:`SAM_CONFIGS` without building anything;
:func:`teachkit.sam.build.build_sam_from_config` turns a :class:`SamConfig` into a model.

    >>> SAM_CONFIGS["vit_tiny_shapes"].embedding_size
    16
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "SAM_CONFIGS", "SamConfig"]

PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)  # ImageNet, 0..255 RGB
PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamConfig:
    """Every number that shapes a SAM model.

    Attributes:
        img_size: side of the square model input; images are resized to this longest
            side and padded. 1024 official; 128 for the shapes dataset.
        patch_size: patch side; the embedding grid is ``img_size / patch_size``
            (64 official). Smaller patches = finer masks but quadratic attention cost.
        encoder_embed_dim: ViT token width (768 / 1024 / 1280 for B / L / H).
        encoder_depth: ViT blocks (12 / 24 / 32).
        encoder_num_heads: ViT attention heads (12 / 16 / 16); must divide the width.
        encoder_global_attn_indexes: blocks with global attention, the last of each
            quarter of the depth (e.g. 2, 5, 8, 11); the others attend in windows.
        window_size: side of the attention windows in tokens (14 official); a divisor of
            the grid avoids padding.
        prompt_embed_dim: width of the neck output, prompt tokens and decoder (256).
        mask_in_chans: hidden channels of the mask-prompt downscaler (16).
        decoder_depth: two-way transformer blocks (2).
        decoder_mlp_dim: hidden width of the decoder MLPs (2048).
        decoder_num_heads: decoder attention heads (8); must divide
            ``prompt_embed_dim / 2`` (the cross-attention width).
        iou_head_hidden_dim: hidden width of the IoU-prediction MLP (256).
        num_multimask_outputs: ambiguity masks returned in multimask mode (3).
        pixel_mean: RGB mean on the 0..255 scale used to normalise inputs.
        pixel_std: RGB std on the 0..255 scale.
    """

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    @property
    def embedding_size(self) -> int:
        """Side ``g`` of the image-embedding grid."""
        return self.img_size // self.patch_size


SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
    ),
    "vit_l": SamConfig(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    # CPU model of the quick profile: 16 x 16 grid in 2 x 2 windows of 8, blocks 1 and 3 global.
    "vit_tiny_shapes": SamConfig(
        encoder_embed_dim=96,
        encoder_depth=4,
        encoder_num_heads=3,
        encoder_global_attn_indexes=(1, 3),
        img_size=128,
        patch_size=8,
        window_size=8,
        prompt_embed_dim=64,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
        iou_head_hidden_dim=64,
    ),
}
