"""The two small blocks that SAM's image encoder, prompt encoder, two-way transformer and
mask decoder share (the official ``segment_anything/modeling/common.py``).

Chapter 6: SAM, encoder to decoder -- section "The image encoder", where the chapter first
meets them:

* :class:`LayerNorm2d` -- LayerNorm over the channels of a ``B x C x H x W`` feature map
  (the encoder's neck, the prompt encoder's mask downscaler, the decoder's upscaler);
* :class:`MLPBlock` -- ``dim -> mlp_dim -> dim`` with an activation between (GELU in the
  encoder's blocks, ReLU in the two-way transformer).

Parameter names (``weight``, ``bias``, ``lin1``, ``lin2``) follow the official release, so
its checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerNorm2d", "MLPBlock"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``B x C x H x W`` feature map.

    Each pixel's C-vector is normalised to zero mean and unit (biased) variance, then
    scaled by ``weight`` and shifted by ``bias`` (both of shape ``C``).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between: ``dim -> mlp_dim -> dim``.

    Works on any ``... x dim`` tensor. The encoder uses GELU, the two-way transformer ReLU.
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))
