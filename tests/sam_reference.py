"""The official segment-anything architecture built from one of our configs (random weights).

Shared by the SAM equivalence tests; ``segment_anything`` is a test dependency only.
"""

from functools import partial

import torch
from segment_anything import modeling as official

from teachkit.sam.build import SamConfig


def official_sam(cfg: SamConfig) -> official.Sam:
    """The official architecture built from one of our configs (random weights)."""
    g = cfg.embedding_size
    return official.Sam(
        image_encoder=official.ImageEncoderViT(
            depth=cfg.encoder_depth,
            embed_dim=cfg.encoder_embed_dim,
            img_size=cfg.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg.encoder_num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=cfg.encoder_global_attn_indexes,
            window_size=cfg.window_size,
            out_chans=cfg.prompt_embed_dim,
        ),
        prompt_encoder=official.PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(g, g),
            input_image_size=(cfg.img_size, cfg.img_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=official.MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=official.TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=cfg.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
    ).eval()
