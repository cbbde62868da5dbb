"""SAM's image encoder: a plain ViT with windowed attention and a convolutional neck.

Chapter 6: SAM, encoder to decoder -- section "The image encoder".

The encoder is the ViTDet backbone of the SAM paper. An image, resized so its longest
side is ``img_size`` (1024 for the official models) and zero-padded to a square, is cut
into ``patch_size`` x ``patch_size`` patches (16 -> a 64x64 grid of tokens). Tokens stay
on their 2-D grid, channels last (``B x H x W x C``), so that:

* most blocks attend only inside non-overlapping ``window_size`` x ``window_size``
  windows (14 x 14; the 64x64 grid is zero-padded to 70x70 = 5x5 windows);
* four evenly spaced blocks (``global_attn_indexes``, e.g. 2, 5, 8, 11 for ViT-B)
  attend over the whole grid, which carries information between windows;
* every attention adds *decomposed relative position* terms (MViTv2): one learned
  vector per vertical offset and one per horizontal offset, so the bias for query
  ``(y, x)`` and key ``(y', x')`` is ``q . R_h[y - y'] + q . R_w[x - x']``.

A neck of two convolutions (1x1 then 3x3, each followed by a channel LayerNorm) maps the
``embed_dim`` channels to the ``out_chans`` = 256 channels the mask decoder works in:
a ``1 x 3 x 1024 x 1024`` image becomes a ``1 x 256 x 64 x 64`` image embedding.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` in the
windowed and the global blocks alike; the relative-position bias is its additive
``attn_mask``, built in the dtype of the queries (bf16 under bf16 autocast), so the same
code uses the fused kernels that take a bias. The table offsets are precomputed once per
block (non-persistent buffers), so a forward pass does no index arithmetic, and the
tokens' ``B x H x W x C`` layout means the neck's convolutions receive a channels-last
tensor without a copy. The encoder compiles with :func:`torch.compile` (tested on the
CPU against eager). Parameter names follow the official release
(``blocks.0.attn.rel_pos_h``, ``neck.1.weight``, ...) so its checkpoints load strictly.

The channel LayerNorm of the neck and the blocks' MLP, :class:`~teachkit.sam.common.LayerNorm2d`
and :class:`~teachkit.sam.common.MLPBlock`, live in :mod:`teachkit.sam.common`: the prompt
encoder, the two-way transformer and the mask decoder use them too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from teachkit.sam.common import LayerNorm2d, MLPBlock

__all__ = [
    "PatchEmbed",
    "Attention",
    "Block",
    "ImageEncoderViT",
    "window_partition",
    "window_unpartition",
    "get_rel_pos",
    "rel_pos_index",
    "decomposed_rel_pos_bias",
]


class PatchEmbed(nn.Module):
    """Cut the image into patches and project each to ``embed_dim`` (one strided conv).

    ``B x in_chans x H x W`` -> ``B x H/p x W/p x embed_dim`` (channels last).
    """

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a token grid into non-overlapping square windows, zero-padding bottom/right.

    Args:
        x: ``B x H x W x C`` tokens.
        window_size: side ``w`` of a window.

    Returns:
        ``(B * nWin) x w x w x C`` windows (row-major over the padded grid) and the padded
        size ``(Hp, Wp)``. Padded tokens are zeros and are *not* masked out in attention,
        exactly as in the official model.
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nWin) x w x w x C`` -> ``B x H x W x C``."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :]  # a view: the residual add that follows makes the copy


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Look up one relative-position vector per (query, key) pair along one axis.

    Args:
        q_size: number of query positions along the axis.
        k_size: number of key positions along the axis.
        rel_pos: ``L x C`` table, one row per offset; ``L = 2 * max(q_size, k_size) - 1``
            normally. A table of another length (a model used at a new resolution) is
            linearly interpolated to that length first.

    Returns:
        ``q_size x k_size x C``: row ``(i, j)`` is the vector for offset ``i - j``.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        table = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos = table.reshape(-1, max_rel_dist).permute(1, 0)
    return rel_pos[rel_pos_index(q_size, k_size, rel_pos.device)]


def rel_pos_index(
    q_size: int, k_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``q_size x k_size`` int64: the table row of each (query, key) offset along one axis.

    Row ``(i, j)`` is ``i - j + k_size - 1`` when ``q_size == k_size``. When they differ,
    offsets are measured on the longer axis' scale, as in the official model.
    """
    q_coords = torch.arange(q_size, device=device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=device)[None, :] * max(q_size / k_size, 1.0)
    return ((q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)).long()


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
    *,
    r_h: torch.Tensor | None = None,
    r_w: torch.Tensor | None = None,
) -> torch.Tensor:
    """The additive attention bias of decomposed relative positions (MViTv2).

    ``bias[(y, x), (y', x')] = q(y, x) . R_h[y - y'] + q(y, x) . R_w[x - x']``, computed
    with the *unscaled* query, as in the official model.

    Args:
        q: ``B x heads x (qh * qw) x C`` queries.
        rel_pos_h: ``Lh x C`` table for vertical offsets.
        rel_pos_w: ``Lw x C`` table for horizontal offsets.
        q_size: query grid ``(qh, qw)``.
        k_size: key grid ``(kh, kw)``.
        r_h: the looked-up ``qh x kh x C`` vectors, when the caller has them already
            (:class:`Attention` gathers them with a precomputed index); else
            :func:`get_rel_pos` looks them up. ``r_w`` likewise (``qw x kw x C``).

    Returns:
        ``B x heads x (qh * qw) x (kh * kw)`` in the dtype of ``q`` (bf16 under bf16
        autocast), ready to pass as ``attn_mask``.
    """
    qh, qw = q_size
    kh, kw = k_size
    r_h = (get_rel_pos(qh, kh, rel_pos_h) if r_h is None else r_h).to(q.dtype)  # qh x kh x C
    r_w = (get_rel_pos(qw, kw, rel_pos_w) if r_w is None else r_w).to(q.dtype)  # qw x kw x C
    b, n, _, c = q.shape
    grid_q = q.reshape(b, n, qh, qw, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, r_h)  # B x n x qh x qw x kh
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, r_w)  # B x n x qh x qw x kw
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # B x n x qh x qw x kh x kw
    return bias.reshape(b, n, qh * qw, kh * kw)


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D token grid, with decomposed relative positions.

    Args:
        dim: channels C of the tokens.
        num_heads: heads; must divide ``dim``.
        qkv_bias: learn a bias for the query/key/value projection.
        use_rel_pos: add the decomposed relative-position bias.
        input_size: the grid ``(H, W)`` the relative tables are sized for (the window for
            windowed blocks, the whole grid for global blocks).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("use_rel_pos=True needs input_size=(H, W) to size its tables")
            # Zero init, as in the official model: training starts with no positional bias.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            # The offsets of the grid the tables are sized for, computed once (not part of
            # the state dict): a forward pass then gathers each table with one kernel.
            self.register_buffer(
                "rel_pos_index_h", rel_pos_index(input_size[0], input_size[0]), persistent=False
            )
            self.register_buffer(
                "rel_pos_index_w", rel_pos_index(input_size[1], input_size[1]), persistent=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x H x W x C`` -> ``B x H x W x C``."""
        b, h, w, _ = x.shape
        # B x HW x 3 x heads x Ch -> 3 x B x heads x HW x Ch
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = None
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(
                q,
                self.rel_pos_h,
                self.rel_pos_w,
                (h, w),
                (h, w),
                r_h=self._lookup(self.rel_pos_h, self.rel_pos_index_h, h),
                r_w=self._lookup(self.rel_pos_w, self.rel_pos_index_w, w),
            )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale = Ch ** -0.5
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)

    @staticmethod
    def _lookup(table: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor | None:
        """``size x size x C`` vectors by the precomputed index, or ``None`` (another grid
        size than the tables were made for: :func:`get_rel_pos` interpolates then)."""
        if index.shape[0] == size and table.shape[0] == 2 * size - 1:
            return table[index]
        return None


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when ``window_size > 0``, else global.

    Args:
        dim: token channels.
        num_heads: attention heads.
        mlp_ratio: MLP hidden size as a multiple of ``dim``.
        qkv_bias: bias in the qkv projection.
        use_rel_pos: decomposed relative positions in attention.
        window_size: side of the attention window; 0 means global attention.
        input_size: the token grid ``(H, W)``; sizes the relative tables of global blocks.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x H x W x C`` -> ``B x H x W x C``."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            windows, padded_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(windows), self.window_size, padded_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """ViT image encoder with windowed + global attention and a conv neck.

    ``B x 3 x img_size x img_size`` (normalised, padded) -> ``B x out_chans x g x g`` with
    ``g = img_size / patch_size`` (1024 / 16 = 64 for the official models).

    Args:
        img_size: side of the square input; the longest image side is resized to it.
        patch_size: side of a patch (16 official).
        in_chans: input channels (3, RGB).
        embed_dim: token width (768 / 1024 / 1280 for ViT-B / L / H).
        depth: number of blocks (12 / 24 / 32).
        num_heads: attention heads (12 / 16 / 16).
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        out_chans: channels of the embedding after the neck (256 official).
        qkv_bias: bias in the qkv projections.
        use_abs_pos: learn an absolute position embedding ``1 x g x g x embed_dim``.
        use_rel_pos: decomposed relative positions in every attention.
        window_size: window side of the windowed blocks (14 official).
        global_attn_indexes: indexes of the blocks that attend globally.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
        bad = [i for i in global_attn_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_attn_indexes {bad} are outside the blocks 0..{depth - 1}")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x img_size x img_size`` -> ``B x out_chans x g x g``."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"expected a B x 3 x {self.img_size} x {self.img_size} batch (resized and "
                f"padded by Sam.preprocess), got shape {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
