"""The DINO projection head and the multi-crop wrapper (DINO paper, Sec. 3.1, Fig. 2).

"The projection head consists of a 3-layer multi-layer perceptron (MLP) with hidden
dimension 2048 followed by l2 normalization and a weight normalized fully connected
layer with K dimensions":

    g(x) = W_K · normalize(MLP(x)),   W_K row k = g_k · v_k / ||v_k||

The K outputs are the logits of a K-way "pseudo-class" distribution; student and
teacher are trained so that those distributions agree across views
(:mod:`teachkit.dino.loss`). With ``norm_last_layer`` the scales ``g_k`` stay 1, so
every logit is a cosine similarity with a prototype ``v_k``, bounded in [-1, 1].

:class:`MultiCropWrapper` joins a backbone and a head and runs one backbone forward
per *resolution* rather than per crop (two global crops of 32 px in one batch, the
local crops of 16 px in another), then the head once on everything.

Loading official checkpoints: the MLP keys (``mlp.0.weight`` ...) are the official
ones; the last layer uses the ``torch.nn.utils.parametrizations.weight_norm`` API,
whose parameters are named differently, see :data:`OFFICIAL_HEAD_KEYS` and
:func:`convert_official_state_dict`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "DINOHead",
    "MultiCropWrapper",
    "cancel_gradients_last_layer",
    "OFFICIAL_HEAD_KEYS",
    "convert_official_state_dict",
]

#: Official (``nn.utils.weight_norm``, hook based) name -> name in :class:`DINOHead`.
OFFICIAL_HEAD_KEYS: dict[str, str] = {
    "last_layer.weight_g": "last_layer.parametrizations.weight.original0",
    "last_layer.weight_v": "last_layer.parametrizations.weight.original1",
}


class DINOHead(nn.Module):
    """MLP -> L2 normalisation -> weight-normalised linear layer with K outputs.

    Args:
        in_dim: backbone feature size D (``backbone.embed_dim``).
        out_dim: K, the number of prototypes: 65536 in the paper; 1024-4096 is
            plenty for 10-class toy data and much cheaper.
        use_bn: BatchNorm after each hidden linear layer (official: off for ViTs).
        norm_last_layer: fix the weight-norm scales to 1 (official default True;
            False trains slightly better for ViT-S but can be unstable).
        nlayers: MLP depth (3 in the paper).
        hidden_dim: MLP width (2048 in the paper; 512 for a tiny model).
        bottleneck_dim: size of the L2-normalised embedding (256 in the paper).

    Shapes:
        ``forward``: (N, in_dim) -> (N, out_dim) logits.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("nlayers", nlayers),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
        ):
            if value < 1:
                raise ValueError(f"DINOHead {name} must be >= 1, got {value}")
        self.mlp = self._build_mlp(in_dim, hidden_dim, bottleneck_dim, nlayers, use_bn)
        self.apply(self._init_weights)
        # Weight-normalised prototypes: weight = g * v / ||v|| row-wise, g starts at 1.
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        scale = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            scale.fill_(1.0)
        scale.requires_grad_(not norm_last_layer)
        self.out_dim = out_dim

    @staticmethod
    def _build_mlp(
        in_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int, use_bn: bool
    ) -> nn.Module:
        if nlayers == 1:
            return nn.Linear(in_dim, bottleneck_dim)
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (nlayers - 1)
        for d_in, d_out in itertools.pairwise(dims):
            layers.append(nn.Linear(d_in, d_out))
            if use_bn:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        return nn.Sequential(*layers)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def embed(self, x: Tensor) -> Tensor:
        """(N, in_dim) -> (N, bottleneck_dim), L2-normalised (before the prototypes)."""
        return nn.functional.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(self.embed(x))


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops of several resolutions.

    Consecutive crops of the same size are concatenated and go through the backbone in
    one call (2 calls for global + local crops, not 2 + N); the head then runs once on
    all features.

    Args:
        backbone: maps (B, 3, H, W) to (B, D) features (a tuple output keeps item 0).
        head: maps (N, D) to (N, K), e.g. :class:`DINOHead`.

    Shapes:
        ``forward``: crops ``[(B, 3, G, G)] * 2 + [(B, 3, L, L)] * n`` (or one tensor)
        -> (len(crops) * B, K), views stacked in the order given.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(crops, Tensor):
            crops = [crops]
        if len(crops) == 0:
            raise ValueError("MultiCropWrapper got an empty list of crops")
        features = []
        for _, group in itertools.groupby(crops, key=lambda c: tuple(c.shape[-2:])):
            out = self.backbone(torch.cat(list(group)))
            features.append(out[0] if isinstance(out, tuple) else out)
        return self.head(torch.cat(features))


def cancel_gradients_last_layer(model: nn.Module, epoch: int, freeze_last_layer: int) -> None:
    """Drop the gradients of the head's last layer during the first epochs.

    "Freezing the last layer during the first epoch helps training" (official
    ``--freeze_last_layer 1``): early on the prototypes would chase a random backbone.
    Setting ``grad = None`` (not zero) also makes AdamW skip the update and the
    weight decay of those parameters. Call between ``backward()`` and ``step()``.

    Args:
        model: the student (parameters named ``...last_layer...``), DDP-wrapped or not.
        epoch: current epoch, counted from 0.
        freeze_last_layer: number of epochs to keep the last layer fixed (0: never).
    """
    if epoch >= freeze_last_layer:
        return
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official DINO student/teacher state dict to this package's names.

    Strips the DDP prefix ``module.`` and renames ``head.last_layer.weight_g/_v``
    (:data:`OFFICIAL_HEAD_KEYS`); the result loads into a
    :class:`MultiCropWrapper` whose backbone uses the official ViT names
    (``backbone.blocks.0.attn.qkv.weight`` ...), with ``strict=True``.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        for old, new in OFFICIAL_HEAD_KEYS.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out
