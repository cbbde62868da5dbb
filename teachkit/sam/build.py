"""Build SAM models by name and load checkpoints strictly.

Chapter 6: SAM, encoder to decoder -- section "Three sizes, one recipe".

The sizes themselves, :class:`~teachkit.sam.sizes.SamConfig` and the named
:data:`~teachkit.sam.sizes.SAM_CONFIGS` (``vit_b`` / ``vit_l`` / ``vit_h`` /
``vit_tiny_shapes``), live in :mod:`teachkit.sam.sizes`, which imports no model code;
they are re-exported here. The tiny model has 0.73 M parameters: one training step
(forward + backward + AdamW) on a batch of 8 images with box prompts took about 0.6 s on
one CPU core of a busy 2-core machine, so a few hundred steps fit in a few minutes.

    >>> from teachkit.sam.build import build_sam
    >>> sam = build_sam("vit_tiny_shapes")            # random weights
    >>> sam = build_sam("vit_b", "sam_vit_b_01ec64.pth")  # official weights, strict

Official checkpoints: https://github.com/facebookresearch/segment-anything#model-checkpoints
"""

from __future__ import annotations

from pathlib import Path

from teachkit.infra.weights import StateDictMismatchError, load_strict, read_state_dict
from teachkit.sam.image_encoder import ImageEncoderViT
from teachkit.sam.mask_decoder import MaskDecoder
from teachkit.sam.model import Sam
from teachkit.sam.prompt_encoder import PromptEncoder
from teachkit.sam.sizes import SAM_CONFIGS, SamConfig
from teachkit.sam.transformer import TwoWayTransformer

__all__ = ["build_sam", "build_sam_from_config", "load_sam_checkpoint"]


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
    it as ``{"model": state_dict}``. The course's one reader and strict loader
    (:func:`teachkit.infra.weights.read_state_dict`, :func:`~teachkit.infra.weights.load_strict`)
    do the work: nothing is copied unless every key fits.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a file ``torch.load`` cannot read (truncated, damaged, not a
            checkpoint at all, or a pickle that needs more than tensors and containers);
            keys that are missing or unexpected, or shapes that differ, listed (a wrong
            model size is the usual cause); or a file that holds no mapping of names to
            tensors. Every message names the file.
    """
    state = read_state_dict(checkpoint)
    try:
        load_strict(model, state, source=f"SAM checkpoint {checkpoint}")
    except StateDictMismatchError as err:
        # The shared check; the message keeps SAM's wording (Python lists of keys, which
        # tests/test_sam_model.py matches) and adds the usual cause.
        raise ValueError(
            f"checkpoint {checkpoint} does not match the model "
            f"(is it for another size?): missing keys {_head(err.missing)}; "
            f"unexpected keys {_head(err.unexpected)}; shape mismatches {_head(err.mismatched)}"
        ) from None


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
