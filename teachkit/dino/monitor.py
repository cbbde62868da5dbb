"""What the DINO trainer watches while it trains.

* the **k-NN monitor**: after an epoch, the weighted k-NN accuracy of the teacher
  backbone on held-out images (DINO paper, Sec. 4.1; :mod:`teachkit.knn`);
* **uniform collapse**: a teacher whose outputs stay flat (entropy at ln K) for a whole
  epoch after the warm-up teaches nothing (Sec. 5.3, "avoiding collapse");
* a loss that is no longer finite: the message that says where and what to change.

Used by :func:`teachkit.dino.trainer.train_dino`; each function says what it returns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from teachkit.dino.augment import MultiCropConfig, to_float_image
from teachkit.dino.config import DINOConfig
from teachkit.infra.hardware import Precision
from teachkit.preprocess import resize_and_normalise

__all__ = [
    "COLLAPSE_MARGIN",
    "eval_preprocess",
    "knn_monitor",
    "non_finite_message",
    "uniform_collapse_message",
]

#: The teacher entropy counts as uniform within this distance of ln K.
COLLAPSE_MARGIN = 0.05


def eval_preprocess(images: Tensor, crops: MultiCropConfig) -> Tensor:
    """uint8 (or [0, 1] float) ``(B, 3, H, W)`` -> normalised float at the global-crop
    size, ``(B, 3, G, G)``: what training saw (bilinear, antialiased resize), normalised
    with the recipe's mean and std. The same arithmetic as
    :func:`teachkit.preprocess.imagenet_preprocess` (``size=G``) for uint8 images and
    the default recipe; unlike it, it takes [0, 1] floats and a recipe's own statistics."""
    return resize_and_normalise(to_float_image(images), crops.global_size, crops.mean, crops.std)


def knn_monitor(
    backbone: nn.Module,
    eval_data: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    crops: MultiCropConfig,
    k: int,
    device: torch.device,
    precision: Precision,
) -> dict[str, float]:
    """Weighted k-NN accuracy (temperature 0.07) of ``backbone``'s features.

    Args:
        backbone: the teacher backbone, ``(B, 3, G, G) -> (B, D)``.
        eval_data: ``(bank images, bank labels, query images, query labels)``, uint8.
        crops: the run's recipe (global-crop size, mean and std of the preprocessing).
        k: neighbours.
        device, precision: where and in which arithmetic the features are computed.

    Returns:
        ``{"knn_top1": ..., "knn_top5": ...}`` in percent.
    """
    from teachkit.knn import extract_features, knn_accuracy

    train_x, train_y, test_x, test_y = eval_data
    kw: dict[str, Any] = {
        "batch_size": 256,
        "device": device,
        "progress": False,
        "preprocess": lambda x: eval_preprocess(x, crops),
    }
    with precision.autocast(device):
        bank = extract_features(backbone, train_x, **kw)
        queries = extract_features(backbone, test_x, **kw)
    acc = knn_accuracy(bank, train_y, queries, test_y, k=k, temperature=0.07)
    return {f"knn_{name}": float(value) for name, value in acc.items()}


def uniform_collapse_message(
    steps: list[dict[str, float]], epoch: int, cfg: DINOConfig
) -> str | None:
    """The error message if the teacher entropy sat within :data:`COLLAPSE_MARGIN` of
    ln K over every step of ``epoch`` (an epoch after the warm-up); otherwise None.

    Args:
        steps: the history's step records (``epoch`` and ``teacher_entropy`` are read).
        epoch: the epoch that just ended.
        cfg: the run's settings (named in the message with what to change).
    """
    if not cfg.collapse_guard or epoch < cfg.warmup_epochs:
        return None
    entropies = [r["teacher_entropy"] for r in steps if r["epoch"] == epoch]
    ln_k = math.log(cfg.out_dim)
    if not entropies or min(entropies) < ln_k - COLLAPSE_MARGIN:
        return None
    where = f" The checkpoint of this epoch is in {cfg.out_dir}." if cfg.out_dir else ""
    return (
        f"uniform collapse: the teacher entropy stayed within {COLLAPSE_MARGIN} of "
        f"ln K = {ln_k:.3f} for all of epoch {epoch} (min {min(entropies):.3f}), after "
        f"the {cfg.warmup_epochs}-epoch warm-up: the teacher gives every image the same "
        "flat distribution, so the student learns nothing. Training stopped. Try a lower "
        f"teacher_temp (now {cfg.teacher_temp}; 0.02-0.04), use_bn_in_head=True for small "
        f"models, a higher momentum_teacher (now {cfg.momentum_teacher}) or a lower lr "
        f"(now {cfg.lr}); data whose classes differ in more than one cue also helps. "
        f"Set collapse_guard=False (--no-collapse-guard) to train on anyway.{where}"
    )


def non_finite_message(record: dict[str, float], cfg: DINOConfig, precision: str) -> str:
    """The message of :class:`teachkit.infra.run.NonFiniteLossError` for the step ``record``
    (``loss``, ``step``, ``epoch``, ``lr``, ``teacher_temp``): where training stopped,
    the likely causes with this run's values, and the checkpoint to resume from.
    ``precision`` is the arithmetic's name (``"fp16"``)."""
    where = ""
    if cfg.out_dir is not None:
        saved = Path(cfg.out_dir) / "checkpoint.pt"
        where = (
            f" The last good checkpoint is {saved}; re-running resumes from it."
            if saved.is_file()
            else f" No checkpoint was written before this step (out_dir {cfg.out_dir}, "
            f"checkpoint_every {cfg.checkpoint_every})."
        )
    r = record
    return (
        f"DINO loss is {r['loss']} at step {r['step']} (epoch {r['epoch']}); training "
        f"stopped. Likely causes: a learning rate too high (lr {r['lr']:.2e} at this step: "
        f"lower lr or lengthen warmup_epochs, try clip_grad 0.3-1.0); fp16 overflow "
        f"(precision {precision}: try precision='bf16' or 'fp32'); a teacher "
        f"temperature too high or too low (teacher_temp {r['teacher_temp']}: keep it in "
        f"0.04-0.07).{where}"
    )
