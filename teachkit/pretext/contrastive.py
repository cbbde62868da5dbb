r"""Two-view contrastive learning (SimCLR): the self-supervised baseline of Chapter 1.

Pretext task: given a batch of B images, make two random views of each; the network
must recognise which of the other 2B - 1 views comes from the same image. With
L2-normalised projections :math:`z` and temperature :math:`\tau`, the NT-Xent loss
of view :math:`i` whose partner is :math:`j` is (Chen et al., 2020, Eq. 1)

.. math::

    \ell_{i} = -\log \frac{\exp(z_i^\top z_j / \tau)}
                          {\sum_{k \ne i} \exp(z_i^\top z_k / \tau)} .

Whatever the augmentations destroy (position, scale, colour), the representation
cannot rely on; what survives them (here, the shape) is what it learns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from teachkit.infra.loop import StepLosses, run_steps
from teachkit.pretext.autoencoder import _images

__all__ = ["ContrastiveModel", "nt_xent_loss", "train_contrastive"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent over the 2B views: z1, z2 (B, D) projections of two views of B images."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (B, D) tensors of one shape, got {z1.shape} and {z2.shape}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own partner
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, partner)


class ContrastiveModel(nn.Module):
    """A backbone (B, 3, H, W) -> (B, D) with a 2-layer projection head for the loss.

    The representation we evaluate is the backbone's output, not the projection
    (SimCLR's finding: the layer before the head transfers better).
    """

    def __init__(self, backbone: nn.Module, *, proj_dim: int = 64) -> None:
        super().__init__()
        self.backbone = backbone
        d = backbone.embed_dim
        self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
        self.embed_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> backbone features (B, D)."""
        return self.backbone(x)


def train_contrastive(
    model: ContrastiveModel,
    batches: Iterable,
    augment: Callable[..., list[torch.Tensor]],
    *,
    steps: int,
    lr: float = 2e-3,
    temperature: float = 0.2,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    out_dir: str | Path | None = None,
    checkpoint_every: int = 200,
) -> StepLosses:
    """Train with NT-Xent on two augmented views per image.

    Args:
        batches: yields uint8 image batches (B, 3, H, W) (or tuples / ``.images``).
        augment: ``augment(images, generator=g)`` returns a list whose first two entries
            are the two views (e.g. ``BatchedMultiCrop`` with no local crops).

    The loop, its checkpoints in ``out_dir`` (resumed by a re-run), the losses it returns
    (with ``.wall_time_s``) and the errors it raises are :func:`teachkit.infra.loop.run_steps`'s.
    """
    model.to(device)
    g = torch.Generator().manual_seed(seed)

    def loss_fn(batch) -> torch.Tensor:
        views = augment(_images(batch).to(device), generator=g)
        z1 = model.projector(model.backbone(views[0]))
        z2 = model.projector(model.backbone(views[1]))
        return nt_xent_loss(z1, z2, temperature)

    return run_steps(model, loss_fn, batches, steps=steps, lr=lr, weight_decay=1e-4,
                     trainer="contrastive", generator=g, out_dir=out_dir,
                     checkpoint_every=checkpoint_every, progress=progress)
