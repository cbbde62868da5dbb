"""The official segment-anything architecture built from one of our configs (random weights).

Shared by the SAM equivalence tests; ``segment_anything`` is a test dependency only.
"""

from functools import partial

import torch
from segment_anything import modeling as official

from teachkit.sam.sizes import SamConfig

#: A small SAM for the equivalence tests: a 10 x 10 token grid in windows of 4 (windowed
#: blocks pad to 12 x 12), blocks 1 and 3 global.
SMALL = SamConfig(
    encoder_embed_dim=64,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    img_size=160,
    patch_size=16,
    window_size=4,
    prompt_embed_dim=64,
    decoder_mlp_dim=128,
    decoder_num_heads=4,
    iou_head_hidden_dim=64,
)


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
