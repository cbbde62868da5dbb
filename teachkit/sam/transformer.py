"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Chapter 6: SAM, encoder to decoder -- section "The two-way transformer".

Two sets of tokens flow through ``depth`` (= 2) blocks:

* *queries*: the ``B x T x C`` output and prompt tokens (IoU token, mask tokens,
  point/box tokens), with their positional part ``query_pe`` (the initial tokens);
* *keys*: the ``B x HW x C`` image tokens (the ``B x C x H x W`` embedding flattened
  row-major), with the dense positional encoding ``key_pe``.

Each block does four things, each followed by a residual add and a LayerNorm:

1. self-attention among the queries,
2. cross-attention queries -> image ("token to image"),
3. an MLP on the queries,
4. cross-attention image -> queries ("image to token"): the image embedding is updated
   too, which is what makes the transformer *two-way*.

Positional encodings are re-added to queries and keys before every attention (except
the first self-attention, whose queries are the prompt tokens themselves). A final
token-to-image attention and LayerNorm close the stack. The cross-attentions work at
``C / attention_downsample_rate`` channels (128 of 256) to save compute.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from teachkit.sam.common import MLPBlock

__all__ = ["Attention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v inputs and an optional narrower inner width.

    Args:
        embedding_dim: channels C of the inputs and of the output.
        num_heads: heads; must divide ``embedding_dim // downsample_rate``.
        downsample_rate: inner width is ``embedding_dim // downsample_rate``.
    """

    def __init__(self, *, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide the inner width "
                f"{embedding_dim} // {downsample_rate} = {self.internal_dim}"
            )
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``B x N x C'`` -> ``B x heads x N x C'/heads``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries ``B x Nq x C``, keys and values ``B x Nk x C`` -> ``B x Nq x C``."""
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    """One block: self-attn, token->image attn, MLP, image->token attn (see module doc).

    Args:
        embedding_dim: token width C.
        num_heads: attention heads.
        mlp_dim: hidden width of the query MLP.
        activation: MLP activation (ReLU in SAM).
        attention_downsample_rate: inner-width divisor of the two cross-attentions.
        skip_first_layer_pe: in the first block, self-attention uses the raw queries
            without adding ``query_pe`` and replaces (not adds to) the queries.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        rate = attention_downsample_rate
        self.self_attn = Attention(embedding_dim=embedding_dim, num_heads=num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim=embedding_dim, num_heads=num_heads, downsample_rate=rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim=embedding_dim, num_heads=num_heads, downsample_rate=rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries ``B x T x C``, keys ``B x HW x C`` (and their PEs) -> updated both."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """A stack of :class:`TwoWayAttentionBlock` plus a final token-to-image attention.

    Args:
        depth: number of blocks (2 in SAM).
        embedding_dim: token width C (256 in SAM).
        num_heads: attention heads (8 in SAM).
        mlp_dim: hidden width of the query MLPs (2048 in SAM).
        activation: MLP activation (ReLU).
        attention_downsample_rate: inner-width divisor of the cross-attentions (2).
    """

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the two-way transformer.

        Args:
            image_embedding: ``B x C x H x W`` image tokens.
            image_pe: ``B x C x H x W`` positional encoding of the image tokens.
            point_embedding: ``B x T x C`` output + prompt tokens (also their PE).

        Returns:
            The processed tokens ``B x T x C`` and image tokens ``B x HW x C``.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(
                queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe
            )
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
