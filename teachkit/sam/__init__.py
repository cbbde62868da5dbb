"""Segment Anything (SAM): image encoder, prompt encoder, mask decoder, predictor, automatic masks.

Chapter 6: SAM, encoder to decoder. One module per idea, in the order the chapter
explains them:

* :mod:`~teachkit.sam.image_encoder` -- ViT with windowed attention, relative
  positions and a conv neck (image -> ``256 x 64 x 64`` embedding);
* :mod:`~teachkit.sam.common` -- the blocks the four parts share: ``LayerNorm2d``
  (channels of a feature map) and ``MLPBlock``;
* :mod:`~teachkit.sam.prompt_encoder` -- points / boxes / masks -> embeddings;
* :mod:`~teachkit.sam.transformer` -- the two-way transformer;
* :mod:`~teachkit.sam.mask_decoder` -- output tokens -> mask logits and IoU scores;
* :mod:`~teachkit.sam.model` -- :class:`Sam`, and resizing / padding / unpadding;
* :mod:`~teachkit.sam.sizes` -- ``SamConfig``, every number that shapes a model, and
  the named sizes ``vit_b`` / ``vit_l`` / ``vit_h`` / ``vit_tiny_shapes`` (no model code);
* :mod:`~teachkit.sam.build` -- a model from a size, strict checkpoint loading (official
  checkpoints load unchanged);
* :mod:`~teachkit.sam.predictor` -- :class:`SamPredictor`, prompts in image pixels;
* :mod:`~teachkit.sam.automatic` -- :class:`AutomaticMaskGenerator`, "segment everything";
* :mod:`~teachkit.sam.batching` -- many prompts against one image, decoded in batches of
  bounded size (``points_per_batch``), so a 32 x 32 grid of clicks fits a 15 GB GPU;
* :mod:`~teachkit.sam.geometry` -- mask geometry every stage shares: boxes, NMS, IoU,
  centres, stability score, small-region clean-up, the click grid.

Training and measuring the chapter's tiny SAM:

* :mod:`~teachkit.sam.losses` -- focal, dice and IoU losses, the minimum over three masks;
* :mod:`~teachkit.sam.prompting` -- the simulated user: first click, corrections, boxes;
* :mod:`~teachkit.sam.config` -- ``SamTrainConfig``, every setting of a training run
  with what to try, and the held-out classes;
* :mod:`~teachkit.sam.interactive_loss` -- one training step's loss with simulated
  clicks: a few instances per image, a first click or box, corrective clicks;
* :mod:`~teachkit.sam.train` -- the training loop: schedule, monitor, checkpoints and
  resuming;
* :mod:`~teachkit.sam.evaluate` -- mIoU with 1 point, k points and a box, seen vs unseen;
* :mod:`~teachkit.sam.unet` -- the class-aware U-Net baseline;
* :mod:`~teachkit.sam.cli` -- the ``sam`` and ``unet`` commands of ``python -m teachkit.train``.
"""

from teachkit.sam.automatic import AutomaticMaskGenerator
from teachkit.sam.build import build_sam, build_sam_from_config, load_sam_checkpoint
from teachkit.sam.model import Sam
from teachkit.sam.predictor import SamPredictor
from teachkit.sam.sizes import SAM_CONFIGS, SamConfig

__all__ = [
    "AutomaticMaskGenerator",
    "SAM_CONFIGS",
    "Sam",
    "SamConfig",
    "SamPredictor",
    "build_sam",
    "build_sam_from_config",
    "load_sam_checkpoint",
]
