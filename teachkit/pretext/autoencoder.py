"""A small convolutional autoencoder: the unsupervised baseline of Chapter 1.

The encoder squeezes a (3, 32, 32) image into a ``code_dim`` vector; the decoder
must rebuild every pixel from it. Reconstruction rewards keeping whatever explains
the most pixels (background, colour, position), which is why its code is a weak
representation of *what* the object is (Chapter 1 measures this).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from teachkit.infra.loop import StepLosses, run_steps

__all__ = ["ConvAutoencoder", "train_autoencoder"]


def _images(batch) -> torch.Tensor:
    """Accept a tensor, an ``(images, labels)`` tuple or an object with ``.images``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch.images


class ConvAutoencoder(nn.Module):
    """Conv encoder (3 stride-2 stages) -> code -> transposed-conv decoder.

    Args:
        resolution: input side in pixels, divisible by 8.
        code_dim: size of the bottleneck, the representation we evaluate.
        width: channels of the first stage (doubling at each stage).

    Shapes: ``encode`` (B, 3, H, W) float in [0, 1] -> (B, code_dim);
    ``forward`` (B, 3, H, W) -> reconstruction (B, 3, H, W) in [0, 1].
    """

    def __init__(self, *, resolution: int = 32, code_dim: int = 128, width: int = 32) -> None:
        super().__init__()
        if resolution % 8:
            raise ValueError(f"resolution must be divisible by 8, got {resolution}")
        self.resolution = resolution
        self.embed_dim = code_dim
        w, s = width, resolution // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * w * s * s, code_dim),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(code_dim, 4 * w * s * s), nn.ReLU(),
            nn.Unflatten(1, (4 * w, s, s)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, code_dim)."""
        if x.ndim != 4 or x.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(
                f"expected images of shape (B, 3, {self.resolution}, {self.resolution}), "
                f"got {tuple(x.shape)}"
            )
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


def train_autoencoder(
    model: ConvAutoencoder,
    batches: Iterable,
    *,
    steps: int,
    lr: float = 2e-3,
    device: torch.device | str = "cpu",
    progress: bool = True,
    out_dir: str | Path | None = None,
    checkpoint_every: int = 200,
) -> StepLosses:
    """Minimise the mean squared reconstruction error for ``steps`` batches.

    Args:
        batches: yields uint8 image batches (B, 3, H, W) (or tuples / ``.images``).

    The loop, its checkpoints in ``out_dir`` (resumed by a re-run), the losses it returns
    (with ``.wall_time_s``) and the errors it raises are :func:`teachkit.infra.loop.run_steps`'s.
    """
    model.to(device)

    def loss_fn(batch) -> torch.Tensor:
        x = _images(batch).to(device).float() / 255
        return F.mse_loss(model(x), x)

    return run_steps(model, loss_fn, batches, steps=steps, lr=lr, weight_decay=1e-4,
                     trainer="autoencoder", out_dir=out_dir,
                     checkpoint_every=checkpoint_every, progress=progress)
