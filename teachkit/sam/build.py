"""Build SAM models by name and load checkpoints strictly.

Chapter 6: SAM, encoder to decoder -- section "Three sizes, one recipe".

The official ViT-B / ViT-L / ViT-H models differ in four numbers (embedding width, depth,
heads, global-attention blocks); everything after the image encoder is the same. The
``vit_tiny_shapes`` configuration is the course's CPU model for the ``quick`` profile:
128-pixel images, 8-pixel patches (a 16 x 16 embedding grid), a 4-block encoder and a
64-channel decoder: 0.73 M parameters. One training step (forward + backward + AdamW)
on a batch of 8 images with box prompts took about 0.6 s on one CPU core of a busy
2-core machine, so a few hundred steps fit in a few minutes.

    >>> from teachkit.sam.build import build_sam
    >>> sam = build_sam("vit_tiny_shapes")            # random weights
    >>> sam = build_sam("vit_b", "sam_vit_b_01ec64.pth")  # official weights, strict

Official checkpoints: https://github.com/facebookresearch/segment-anything#model-checkpoints
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from teachkit.sam.image_encoder import ImageEncoderViT
from teachkit.sam.mask_decoder import MaskDecoder
from teachkit.sam.model import PIXEL_MEAN, PIXEL_STD, Sam
from teachkit.sam.prompt_encoder import PromptEncoder
from teachkit.sam.transformer import TwoWayTransformer

__all__ = ["SamConfig", "SAM_CONFIGS", "build_sam", "build_sam_from_config", "load_sam_checkpoint"]


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


def build_sam_from_config(config: SamConfig) -> Sam:
    """A randomly initialised :class:`Sam` in eval mode (call ``.train()`` to train it)."""
    g = config.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=4.0,
            out_chans=config.prompt_embed_dim,
            qkv_bias=True,
            use_rel_pos=True,
            window_size=config.window_size,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(g, g),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
    )
    return sam.eval()


def load_sam_checkpoint(model: Sam, checkpoint: str | Path) -> None:
    """Load a state dict file into ``model`` strictly, with ``weights_only=True``.

    Accepts the official ``sam_vit_*.pth`` files (a bare state dict) and files that wrap
    it as ``{"model": state_dict}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: keys are missing or unexpected, or shapes differ; the message lists
            them (a wrong model size is the usual cause).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"checkpoint {path.name} does not match the model "
            f"(is it for another size?): missing keys {_head(missing)}; "
            f"unexpected keys {_head(unexpected)}; shape mismatches {_head(wrong_shape)}"
        )
    model.load_state_dict(state, strict=True)


def _head(items: list[str], n: int = 10) -> str:
    """``items`` as a short list for an error message (first ``n``, then a count)."""
    if len(items) <= n:
        return str(items)
    return f"{items[:n]} ... and {len(items) - n} more"


def build_sam(name: str, checkpoint: str | Path | None = None) -> Sam:
    """Build a SAM model by configuration name, optionally loading weights strictly.

    Args:
        name: one of ``SAM_CONFIGS``: "vit_b", "vit_l", "vit_h", "vit_tiny_shapes".
        checkpoint: path to a state dict (e.g. the official ``sam_vit_b_01ec64.pth``);
            ``None`` keeps the random initialisation.

    Returns:
        The model in eval mode, on the CPU (or the default device of a
        ``torch.device(...)`` context).

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or a checkpoint
            that does not match (see :func:`load_sam_checkpoint`).
    """
    if name not in SAM_CONFIGS:
        raise ValueError(f"unknown SAM model {name!r}; expected one of {sorted(SAM_CONFIGS)}")
    sam = build_sam_from_config(SAM_CONFIGS[name])
    if checkpoint is not None:
        load_sam_checkpoint(sam, checkpoint)
    return sam
