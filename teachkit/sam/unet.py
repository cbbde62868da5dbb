"""The category-specific baseline: a small U-Net trained with class labels.

Chapter 6: SAM, encoder to decoder -- section "Seen and unseen shapes: what a class-aware
model cannot do".

Before promptable models, segmentation meant *semantic* segmentation: a network labels
every pixel with one of a fixed list of classes (Ronneberger et al., 2015, "U-Net").
Trained on the same scenes as the tiny SAM, with the same classes held out, it answers
a different question: "which pixels are a circle?" instead of "which object did the
user click?". It needs class labels to train, it sees no prompt, it does not separate
two instances of one class, and it has no output for a class it never saw -- the best
it can do on an unseen shape is to call it some seen class.

    model, losses = train_unet(UNetTrainConfig(steps=1500))
    evaluate_unet(model, eval_scenes(200))   # miou_seen, miou_unseen_any_foreground, ...

The shipped ``unet_shapes`` (the defaults: 1,500 steps of 8 images, 24 min on one busy
CPU core) labels 95 % of pixels right, but its per-instance mIoU is 0.39 on seen
classes (class confusions split objects; touching objects merge) and 0.41 on unseen
ones even when any foreground blob counts -- and it calls 97 % of the pixels of unseen
shapes by the name of some seen class. The tiny SAM, given one click, scores 0.60 on
seen and 0.62 on unseen classes.

Architecture: ``depth`` down-sampling stages (two 3x3 conv + BatchNorm + ReLU, then 2x2
max-pool), a bottleneck, and as many up-sampling stages (2x2 transposed conv, concat
with the encoder's feature map of the same size -- the skip connection -- and two
convs); a 1x1 conv gives ``1 + K`` logits per pixel (background and K seen classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn
from tqdm.auto import tqdm

from teachkit.data.scene_chunks import SceneChunks
from teachkit.data.shapes import CLASSES, SceneBatch
from teachkit.infra.config_checks import check_field_types, check_range, check_seed
from teachkit.infra.config_fields import config_field
from teachkit.infra.hardware import pick_device
from teachkit.infra.run import check_finite_loss
from teachkit.profiles import seed_everything
from teachkit.sam.config import seen_class_ids
from teachkit.sam.evaluate import instance_queries

__all__ = [
    "UNet",
    "UNetTrainConfig",
    "build_unet",
    "evaluate_unet",
    "predict_classes",
    "semantic_targets",
    "train_unet",
]

IGNORE = -1  # target of pixels whose class the model has no output for


class _DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice: ``B x c_in x H x W`` -> ``B x c_out x H x W``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A small U-Net for per-pixel classification into background + ``class_ids``.

    Args:
        class_ids: the class indices (into :data:`teachkit.data.shapes.CLASSES`) it
            predicts; output channel ``i + 1`` is class ``class_ids[i]``, channel 0 is
            background. Stored in the state dict (buffer ``class_ids``).
        width: channels of the first stage; stage ``i`` has ``width * 2**i``.
        depth: down-sampling stages; the image side must be divisible by ``2**depth``.
    """

    def __init__(self, class_ids: Sequence[int], *, width: int = 8, depth: int = 4) -> None:
        super().__init__()
        if len(class_ids) < 1 or width < 1 or depth < 1:
            raise ValueError(
                f"need >= 1 class, width >= 1, depth >= 1; got {list(class_ids)}, {width}, {depth}"
            )
        self.register_buffer("class_ids", torch.tensor(list(class_ids), dtype=torch.long))
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            _DoubleConv(c_in, c_out) for c_in, c_out in zip([3] + chans[:-1], chans, strict=True)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.fuse = nn.ModuleList(
            _DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], 1 + len(class_ids), 1)
        self.depth = depth

    @property
    def num_outputs(self) -> int:
        """Background plus the classes: ``1 + K``."""
        return 1 + int(self.class_ids.numel())

    def forward(self, images: Tensor) -> Tensor:
        """Per-pixel class logits of a batch of images.

        Args:
            images: ``B x 3 x H x W`` RGB on the 0..255 scale (uint8 or float).

        Returns:
            ``B x (1 + K) x H x W`` logits (channel 0: background).
        """
        h, w = images.shape[-2:]
        if h % 2**self.depth or w % 2**self.depth:
            raise ValueError(f"image side must be divisible by {2**self.depth}, got {h} x {w}")
        x = (images.float() / 255.0 - 0.5) / 0.25
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips), strict=True):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def semantic_targets(scenes: SceneBatch, class_ids: Sequence[int]) -> Tensor:
    """Per-pixel training targets of scenes: ``N x H x W`` int64.

    0 is background, ``i + 1`` a pixel of class ``class_ids[i]``, and ``IGNORE`` (-1) a
    pixel of a class the model has no output for.
    """
    lut = torch.full((len(CLASSES),), IGNORE, dtype=torch.long, device=scenes.labels.device)
    lut[torch.tensor(list(class_ids), device=lut.device)] = torch.arange(
        1, len(class_ids) + 1, device=lut.device
    )
    n, k, h, w = scenes.masks.shape
    target = torch.zeros(n, h, w, dtype=torch.long, device=scenes.masks.device)
    for j in range(k):
        cls = torch.where(scenes.labels[:, j] >= 0, lut[scenes.labels[:, j].clamp(min=0)], 0)
        target = torch.where(scenes.masks[:, j], cls.view(n, 1, 1), target)
    return target


@dataclass
class UNetTrainConfig:
    """Settings of the U-Net baseline; the data settings should match the SAM run's.

    Every field is checked when the config is made (:mod:`teachkit.infra.config_checks`): a
    wrong type is a TypeError, a value out of range or NaN a ValueError naming the field.
    """

    resolution: int = config_field(
        128, "Image side in pixels (divisible by 2**depth); as the SAM run."
    )
    holdout: tuple[str, ...] = config_field(
        ("star", "heart", "arrow"), "Classes never shown in training (as the SAM run)."
    )
    nest_probability: float = config_field(
        0.3, "Share of scenes with a nested pair (as the SAM run)."
    )
    chunk_size: int = config_field(512, "Scenes drawn at once (each used once).")
    steps: int = config_field(1500, "Optimisation steps (warm-up then cosine decay over them).")
    batch_size: int = config_field(8, "Images per step.")
    lr: float = config_field(2e-3, "Peak AdamW learning rate; warm-up over the first 5 % of steps.")
    weight_decay: float = config_field(1e-4, "AdamW weight decay.")
    width: int = config_field(
        8,
        "Channels of the first stage (8: 0.49 M parameters with depth 4, 0.3 s per step of 8 "
        "images at 128 px on one CPU core; 16 is 3.5x slower).",
    )
    depth: int = config_field(
        4,
        "Down-sampling stages (4: an 8 x 8 bottleneck at 128 px, a receptive field that "
        "covers a whole shape; 3 reached instance mIoU 0.24 instead of 0.39 on seen classes).",
    )
    seed: int = config_field(
        0,
        "Seed of the weights and the scenes (scenes differ from SAM's seed stream "
        "only by the seed).",
    )
    device: str | None = config_field(None, "'cpu', 'cuda', 'mps'; None picks the best one.")

    def __post_init__(self) -> None:
        check_field_types(self)  # also: a holdout given as a list becomes a tuple
        for name in ("steps", "batch_size", "chunk_size", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resolution % 2**self.depth or not 8 <= self.resolution <= 224:
            raise ValueError(
                f"resolution must lie in [8, 224] and be divisible by 2**depth = "
                f"{2**self.depth}, got {self.resolution}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        check_range("nest_probability", self.nest_probability, low=0, high=1)
        check_range("weight_decay", self.weight_decay, low=0)
        check_seed("seed", self.seed)
        seen_class_ids(self.holdout, nest_probability=self.nest_probability)

    @property
    def seen_classes(self) -> tuple[str, ...]:
        return tuple(c for c in CLASSES if c not in self.holdout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_unet(config: UNetTrainConfig) -> UNet:
    """The U-Net of ``config`` (its seen classes, width and depth), random weights."""
    class_ids = seen_class_ids(config.holdout, nest_probability=config.nest_probability)
    return UNet(class_ids, width=config.width, depth=config.depth)


def train_unet(config: UNetTrainConfig, *, progress: bool = True) -> tuple[UNet, list[float]]:
    """Train the U-Net with per-pixel cross-entropy on the seen classes.

    Returns:
        The trained model (eval mode, on the training device) and the loss of every step.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (a ``FloatingPointError``).
    """
    cfg = config
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = build_unet(cfg).to(device).train()
    class_ids = model.class_ids.tolist()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    data = SceneChunks(
        cfg.batch_size,
        chunk_size=cfg.chunk_size,
        resolution=cfg.resolution,
        seed=cfg.seed + 1,
        classes=cfg.seen_classes,
        nest_probability=cfg.nest_probability,
        device=device,
    )
    losses: list[float] = []
    for step in tqdm(range(cfg.steps), desc="U-Net", unit="step", disable=not progress):
        scenes = data.batch(step)
        logits = model(scenes.images)
        loss = F.cross_entropy(logits, semantic_targets(scenes, class_ids), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        check_finite_loss(losses[-1], step=step, trainer="U-Net", lr=cfg.lr)
    return model.eval(), losses


# ---------------------------------------------------------------------- evaluation
def _best_component_iou(region: np.ndarray, target: np.ndarray) -> float:
    """Best IoU between ``target`` and one 8-connected component of ``region`` (0 if none)."""
    components, _ = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    best = 0.0
    for c in np.unique(components[target]):
        if c:
            piece = components == c
            best = max(best, float((piece & target).sum() / (piece | target).sum()))
    return best


@torch.no_grad()
def predict_classes(model: UNet, images: Tensor, *, batch_size: int = 32) -> Tensor:
    """Per-pixel output index (0 background, ``i + 1`` class ``class_ids[i]``): ``N x H x W``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(images[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def evaluate_unet(model: UNet, scenes: SceneBatch, *, min_area: int = 16) -> dict[str, float]:
    """Per-instance mIoU of the class-aware U-Net on the queries of ``evaluate_sam``.

    The U-Net labels pixels, not instances, and takes no prompt. On the same instances
    (:func:`teachkit.sam.evaluate.instance_queries`):

    * ``miou_seen``: an instance of a *seen* class ``c`` is matched to the 8-connected
      component of the pixels predicted as ``c`` that overlaps it best (IoU 0 if the
      U-Net predicts no ``c`` there; two touching instances of one class merge into
      one component and both lose);
    * ``miou_unseen_any_foreground``: an *unseen* instance has no class the U-Net could
      output. Its most generous score is class-agnostic: the best-overlapping component
      of *any* foreground prediction. A high value means "found a blob and called it
      some seen class", never "recognised the class";
    * ``miou_seen_any_foreground``: the same class-agnostic score on seen instances,
      for a like-for-like comparison with the unseen one;
    * ``unseen_pixels_as_foreground``: share of unseen-instance pixels given some
      (necessarily wrong) seen class;
    * ``pixel_accuracy``: over background and seen-class pixels.
    """
    class_ids = [int(c) for c in model.class_ids]
    output_of = {c: i + 1 for i, c in enumerate(class_ids)}
    pred = predict_classes(model, scenes.images).numpy()
    scene, inst = instance_queries(scenes, min_area)
    scores: dict[str, list[float]] = {
        "miou_seen": [],
        "miou_seen_any_foreground": [],
        "miou_unseen_any_foreground": [],
        "unseen_pixels_as_foreground": [],
    }
    for s, k in zip(scene.tolist(), inst.tolist(), strict=True):
        target = scenes.masks[s, k].cpu().numpy()
        label = int(scenes.labels[s, k])
        foreground = pred[s] > 0
        if label in output_of:
            scores["miou_seen"].append(_best_component_iou(pred[s] == output_of[label], target))
            scores["miou_seen_any_foreground"].append(_best_component_iou(foreground, target))
        else:
            scores["miou_unseen_any_foreground"].append(_best_component_iou(foreground, target))
            scores["unseen_pixels_as_foreground"].append(float(foreground[target].mean()))
    out = {name: float(np.mean(v)) for name, v in scores.items() if v}
    semantic = semantic_targets(scenes, class_ids).cpu().numpy()
    known = semantic != IGNORE
    out["pixel_accuracy"] = float((pred[known] == semantic[known]).mean())
    out["queries"] = float(len(scene))
    return out
