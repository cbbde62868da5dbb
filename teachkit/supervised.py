"""Training with labels: the supervised reference models the course compares against.

Chapter 1 checks that the shapes dataset is learnable (a small CNN trained with labels
reaches high test accuracy where raw pixels do not); Chapter 4 compares the attention
maps of a DINO ViT with those of the same ViT trained with labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from teachkit.infra.loop import StepLosses, run_steps
from teachkit.preprocess import imagenet_preprocess

__all__ = ["Classifier", "train_supervised", "accuracy"]


class Classifier(nn.Module):
    """A backbone (B, 3, H, W) -> (B, D) followed by a linear layer to class logits."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, num_classes) logits."""
        return self.fc(self.backbone(x))


def train_supervised(
    model: Classifier,
    batches: Iterable,
    *,
    steps: int,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    preprocess: Callable[[torch.Tensor], torch.Tensor] = imagenet_preprocess,
    device: torch.device | str = "cpu",
    progress: bool = True,
    out_dir: str | Path | None = None,
    checkpoint_every: int = 200,
) -> StepLosses:
    """Cross-entropy training with AdamW and a one-cycle schedule.

    Args:
        batches: yields objects with ``.images`` (B, 3, H, W) uint8 and ``.labels`` (B,).
        steps: number of optimisation steps.

    The loop, its checkpoints in ``out_dir`` (resumed by a re-run), the losses it returns
    (with ``.wall_time_s``) and the errors it raises are :func:`teachkit.infra.loop.run_steps`'s.
    """
    model.to(device)

    def loss_fn(batch) -> torch.Tensor:
        x = preprocess(batch.images.to(device))
        return F.cross_entropy(model(x), batch.labels.to(device))

    return run_steps(model, loss_fn, batches, steps=steps, lr=lr, weight_decay=weight_decay,
                     trainer="supervised", out_dir=out_dir,
                     checkpoint_every=checkpoint_every, progress=progress)


@torch.inference_mode()
def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] = imagenet_preprocess,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy in percent of ``model`` on uint8 ``images`` (N, 3, H, W)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(preprocess(images[i : i + batch_size].to(device)))
        correct += (logits.argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    model.train(was_training)
    return 100.0 * correct / len(images)
