"""The Vision Transformer (ViT) backbone of DINO, compatible with the official checkpoints.

Course: Chapter 2, "Vision Transformers".

An image of ``H x W`` pixels is cut into ``h x w = (H / p) x (W / p)`` patches of ``p x p``
pixels; each patch becomes one token of width ``D``. A learned ``[CLS]`` token is put in
front, a learned position embedding is added, and ``depth`` pre-norm transformer blocks mix
the ``1 + N`` tokens (``N = h * w``)::

    x = x + DropPath(Attention(LayerNorm(x)))
    x = x + DropPath(MLP(LayerNorm(x)))

The output of the ``[CLS]`` token after a final LayerNorm is the image feature that DINO
trains (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Parameter names and shapes are those of the official DINO ViT
(github.com/facebookresearch/dino, ``vision_transformer.py``) and of timm, so an official
backbone checkpoint loads with ``load_state_dict(state_dict, strict=True)``::

    model = vit_small(patch_size=16)
    model.load_state_dict(torch.load("dino_deitsmall16_pretrain.pth"), strict=True)

Shapes: ``B`` batch, ``D`` embed_dim, ``(h, w)`` patch grid, ``N = h * w`` patch tokens.
Token 0 is ``[CLS]``; patch tokens follow in row-major order (row by row, top to bottom).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VIT_SIZES",
    "VisionTransformer",
    "build_vit",
    "vit_base",
    "vit_nano",
    "vit_small",
    "vit_tiny",
]

LAYER_NORM_EPS = 1e-6  # the official DINO ViT: partial(nn.LayerNorm, eps=1e-6)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability ``drop_prob``.

    In training, each sample's branch output is zeroed with probability ``p`` and the kept
    ones are scaled by ``1 / (1 - p)`` so the expectation is unchanged. In eval mode it is
    the identity. (Huang et al. 2016, "Deep Networks with Stochastic Depth".)
    """

    def __init__(self, *, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...), the same shape."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = x.new_empty(shape).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class PatchEmbed(nn.Module):
    """Images to patch tokens: (B, C, H, W) -> (B, D, H / p, W / p).

    Two stems, both with total stride ``patch_size``:

    * ``conv_stem=False`` (the original ViT and DINO): ``proj``, one ``p x p`` convolution
      with stride ``p``, i.e. a linear map of each flattened patch.
    * ``conv_stem=True``: ``stem``, ``log2(p)`` stride-2 ``3 x 3`` convolutions with
      BatchNorm and ReLU whose widths double up to ``D``, then a ``1 x 1`` convolution to
      ``D``. This is the convolutional stem of Xiao et al. 2021, "Early Convolutions Help
      Transformers See Better"; in their experiments it makes ViTs train faster and more
      stably, which matters most for small ViTs on small data. (They also drop one
      transformer block to keep the compute equal; we do not.)
    """

    def __init__(
        self, *, patch_size: int, in_chans: int, embed_dim: int, conv_stem: bool = False
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.conv_stem = conv_stem
        if conv_stem:
            if patch_size & (patch_size - 1) != 0:
                raise ValueError(
                    f"conv_stem=True needs patch_size to be a power of 2 (it is the total "
                    f"stride of stride-2 convolutions), got patch_size={patch_size}"
                )
            self.stem = _conv_stem(
                n_down=patch_size.bit_length() - 1, in_chans=in_chans, embed_dim=embed_dim
            )
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D, H / p, W / p)."""
        return self.stem(x) if self.conv_stem else self.proj(x)


def _conv_stem(*, n_down: int, in_chans: int, embed_dim: int) -> nn.Sequential:
    """``n_down`` x [3x3 conv stride 2, BN, ReLU], widths doubling up to ``embed_dim``, then 1x1.

    Widths follow Xiao et al. 2021: for ``embed_dim=384`` and 4 stages, 48-96-192-384.
    """
    layers: list[nn.Module] = []
    c_in = in_chans
    for i in range(n_down):
        c_out = max(embed_dim >> (n_down - 1 - i), 16)
        layers += [
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(q k^T / sqrt(d_head)) v`` for each head.

    The output goes through :func:`torch.nn.functional.scaled_dot_product_attention`
    (a fused kernel that never stores the ``(1+N) x (1+N)`` matrix). Only when the
    attention probabilities are asked for are they computed explicitly, and then the
    output is computed from them.
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, *, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) -> ((B, T, D), attention (B, heads, T, T) or ``None``).

        ``attention[b, h, i, j]`` is how much token ``i`` reads from token ``j`` in head
        ``h``; each row sums to 1.
        """
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, T, d_head)
        attn = None
        if return_attention:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, t, d)
        return self.proj(out), attn


class Mlp(nn.Module):
    """The token-wise feed-forward network: Linear(D, r*D), GELU, Linear(r*D, D)."""

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """One pre-norm transformer block: attention then MLP, each inside a residual."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_prob=drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.forward_with_attention(x, return_attention=False)[0]

    def forward_with_attention(
        self, x: torch.Tensor, *, return_attention: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) -> ((B, T, D), attention probabilities (B, heads, T, T) or ``None``)."""
        y, attn = self.attn(self.norm1(x), return_attention=return_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn


class VisionTransformer(nn.Module):
    """A ViT backbone without classification head: images in, ``[CLS]`` feature out.

    Args:
        img_size: training resolution (square). It fixes the native position-embedding
            grid ``(img_size // patch_size)^2``; other input sizes get an interpolated
            position embedding (see :meth:`pos_embed_for_grid`).
        patch_size: side ``p`` of the square patches (DINO uses 16 or 8; 4 suits 32 px).
        in_chans: input channels.
        embed_dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_ratio: MLP hidden width as a multiple of ``D``.
        qkv_bias: bias in the query/key/value projection (True in DINO).
        drop_path_rate: stochastic depth of the last block; it rises linearly from 0 at the
            first block (DINO uses 0.1 for ViT-S/16).
        conv_stem: replace the patchify convolution by a small convolutional stem (see
            :class:`PatchEmbed`); then ``patch_size`` must be a power of 2 and official
            checkpoints no longer fit.

    Example::

        model = VisionTransformer(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4)
        feats = model(torch.randn(8, 3, 32, 32))            # (8, 128)
        out = model.forward_features(torch.randn(8, 3, 16, 24), return_attention=True)
        out["patch"].shape, out["grid"]                     # (8, 24, 128), (4, 6)
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        conv_stem: bool = False,
    ) -> None:
        super().__init__()
        _check_config(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            drop_path_rate=drop_path_rate,
        )
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.drop_path_rate = drop_path_rate
        self.num_patches = (img_size // patch_size) ** 2

        self.patch_embed = PatchEmbed(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, conv_stem=conv_stem
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, embed_dim))
        # DINO's rule: 0 at the first block, rising linearly to drop_path_rate at the last.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=rate,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.head = nn.Identity()  # no parameters; DINO puts its projection head outside
        self._init_weights()

    def _init_weights(self) -> None:
        """DINO's initialisation: truncated normal (std 0.02) for tokens and linear layers."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- tokens
    def pos_embed_for_grid(self, h: int, w: int) -> torch.Tensor:
        """The position embedding for an ``h x w`` patch grid: (1, 1 + h*w, D).

        At the native grid it is ``pos_embed`` itself. Otherwise the patch part is resized
        by bicubic interpolation exactly as the official DINO ``interpolate_pos_encoding``
        (a ``scale_factor`` of ``(h + 0.1) / g`` and ``(w + 0.1) / g``, ``g`` the native
        side; the 0.1 avoids rounding the output size down, see facebookresearch/dino#8),
        so official checkpoints give the same features as in the DINO code at any size.
        The ``[CLS]`` entry is kept as is.
        """
        g = self.img_size // self.patch_size
        if (h, w) == (g, g):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        grid = patch_pos.reshape(1, g, g, dim).permute(0, 3, 1, 2)  # (1, D, g, g)
        grid = F.interpolate(
            grid.float(), scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic"
        ).to(patch_pos.dtype)
        if grid.shape[-2:] != (h, w):  # cannot happen with the +0.1; a guard, not a branch
            raise RuntimeError(f"interpolated grid {tuple(grid.shape[-2:])} != {(h, w)}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, 1 + N, D): ``[CLS]`` first, positions added.

        As the official DINO ``prepare_tokens``; the grid is ``(H // p, W // p)``.
        """
        self._check_input(x)
        patches = self.patch_embed(x)  # (B, D, h, w)
        h, w = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)  # (B, N, D), row-major
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1)
        return tokens + self.pos_embed_for_grid(h, w)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, H, W), got a {x.ndim}-D "
                f"tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels (B, {self.in_chans}, H, W), got "
                f"{x.shape[1]} channels in shape {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise ValueError(f"expected floating-point images, got dtype {x.dtype}")
        p = self.patch_size
        if x.shape[2] % p or x.shape[3] % p:
            what = "the patch size"
            if self.patch_embed.conv_stem:
                what += " (the conv stem's total stride)"
            raise ValueError(
                f"image height and width must be divisible by {what} {p}, got "
                f"H={x.shape[2]}, W={x.shape[3]}"
            )

    # ---------------------------------------------------------------- outputs
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> ``[CLS]`` features (B, D) after the final LayerNorm."""
        tokens = self.prepare_tokens(x)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)[:, 0]

    def forward_features(
        self, x: torch.Tensor, *, return_attention: bool = False
    ) -> dict[str, torch.Tensor | tuple[int, int]]:
        """Images (B, C, H, W) -> a dict of features.

        Returns:
            ``"cls"``: (B, D) the ``[CLS]`` feature (what :meth:`forward` returns);
            ``"patch"``: (B, N, D) the patch tokens, row-major over the grid;
            ``"grid"``: ``(h, w)``, the patch grid, ``N = h * w``;
            ``"attention"`` (only with ``return_attention=True``): (B, heads, 1+N, 1+N)
            the last block's attention probabilities; ``attention[:, :, 0, 1:]`` is the
            ``[CLS]`` attention map of Chapter 4.
        """
        tokens = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            tokens = blk(tokens)
        tokens, attn = self.blocks[-1].forward_with_attention(
            tokens, return_attention=return_attention
        )
        tokens = self.norm(tokens)
        out: dict[str, torch.Tensor | tuple[int, int]] = {
            "cls": tokens[:, 0],
            "patch": tokens[:, 1:],
            "grid": (x.shape[2] // self.patch_size, x.shape[3] // self.patch_size),
        }
        if attn is not None:
            out["attention"] = attn
        return out

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> last block's attention probabilities (B, heads, 1+N, 1+N).

        The official DINO hook; it stops after the last block's attention.
        """
        tokens = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            tokens = blk(tokens)
        last = self.blocks[-1]
        _, attn = last.attn(last.norm1(tokens), return_attention=True)
        assert attn is not None
        return attn

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> the last ``n`` blocks' outputs, each (B, 1+N, D).

        Each output goes through the final LayerNorm, as in the official DINO (its linear
        evaluation concatenates the ``[CLS]`` tokens of the last 4 blocks for ViT-S).
        """
        if not 1 <= n <= self.depth:
            raise ValueError(f"n must be between 1 and depth={self.depth}, got n={n}")
        tokens = self.prepare_tokens(x)
        outputs = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i >= self.depth - n:
                outputs.append(self.norm(tokens))
        return outputs


def _check_config(*, drop_path_rate: float, **sizes: int) -> None:
    """Raise ValueError for an impossible :class:`VisionTransformer` configuration."""
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if sizes["patch_size"] > sizes["img_size"]:
        raise ValueError(
            f"patch_size must be at most img_size, got patch_size={sizes['patch_size']}, "
            f"img_size={sizes['img_size']}"
        )
    if sizes["embed_dim"] % sizes["num_heads"]:
        raise ValueError(
            f"embed_dim must be divisible by num_heads, got embed_dim={sizes['embed_dim']}, "
            f"num_heads={sizes['num_heads']}"
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")


# -------------------------------------------------------------------- sizes
#: The four numbers that differ between sizes. tiny/small/base are DINO's (and DeiT's);
#: nano is ours, small enough to train on two CPU cores (use it at 32 px with patch 4).
VIT_SIZES: dict[str, dict[str, int]] = {
    "vit_nano": {"embed_dim": 128, "depth": 4, "num_heads": 4},
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


def build_vit(name: str, *, patch_size: int = 16, **kwargs: object) -> VisionTransformer:
    """A ViT of a named size, e.g. ``build_vit("vit_small", patch_size=8)``.

    Args:
        name: one of :data:`VIT_SIZES` (``vit_nano``, ``vit_tiny``, ``vit_small``,
            ``vit_base``).
        patch_size: patch side in pixels.
        **kwargs: other :class:`VisionTransformer` arguments (``img_size``,
            ``drop_path_rate``, ``conv_stem``, ...); they override the size's numbers.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {name!r}; expected one of {list(VIT_SIZES)}")
    config = {**VIT_SIZES[name], "patch_size": patch_size, **kwargs}
    return VisionTransformer(**config)  # type: ignore[arg-type]


def vit_nano(*, patch_size: int = 16, **kwargs: object) -> VisionTransformer:
    """ViT-nano: D=128, depth 4, 4 heads (0.8 M parameters), trainable on two CPU cores.

    Made for 32 px images: ``vit_nano(img_size=32, patch_size=4)`` (an 8 x 8 grid).
    """
    return build_vit("vit_nano", patch_size=patch_size, **kwargs)


def vit_tiny(*, patch_size: int = 16, **kwargs: object) -> VisionTransformer:
    """ViT-Ti: D=192, depth 12, 3 heads (5.5 M parameters)."""
    return build_vit("vit_tiny", patch_size=patch_size, **kwargs)


def vit_small(*, patch_size: int = 16, **kwargs: object) -> VisionTransformer:
    """ViT-S: D=384, depth 12, 6 heads (21 M parameters), DINO's main model."""
    return build_vit("vit_small", patch_size=patch_size, **kwargs)


def vit_base(*, patch_size: int = 16, **kwargs: object) -> VisionTransformer:
    """ViT-B: D=768, depth 12, 12 heads (86 M parameters)."""
    return build_vit("vit_base", patch_size=patch_size, **kwargs)
