"""The image encoder's attention path (issue 14, SAM batch-1 latency): every block, windowed
or global, runs through ``F.scaled_dot_product_attention`` with the decomposed
relative-position bias as its ``attn_mask`` in the queries' dtype; the table offsets are
precomputed buffers (no index arithmetic per forward) that stay out of the state dict;
and the results equal the official ``segment_anything`` encoder, in fp32 and under bf16
autocast, on the CPU with random weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sam_reference import SMALL, official_sam

import teachkit.sam.image_encoder as image_encoder
from teachkit.sam import build_sam, build_sam_from_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def pair():
    """Official and teachkit encoders with the same random weights (tables non-zero)."""
    torch.manual_seed(0)
    ref = official_sam(SMALL)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    ours = build_sam_from_config(SMALL)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.image_encoder.eval(), ours.image_encoder.eval()


def image(seed: int = 2) -> torch.Tensor:
    return 50 * torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(seed))


def test_forward_gathers_precomputed_offsets_without_index_arithmetic(pair, monkeypatch):
    ref, ours = pair
    x = image()
    with torch.no_grad():
        expected = ref(x)

    def forbidden(*args, **kwargs):
        raise AssertionError("offsets recomputed in forward")

    monkeypatch.setattr(image_encoder, "get_rel_pos", forbidden)
    monkeypatch.setattr(image_encoder, "rel_pos_index", forbidden)
    with torch.no_grad():
        got = ours(x)
    assert (got - expected).abs().max().item() < 1e-4


def test_precomputed_offsets_are_buffers_outside_the_state_dict(pair):
    ref, ours = pair
    assert set(ours.state_dict()) == set(ref.state_dict())  # official checkpoints load strictly
    for block in ours.blocks:
        attn = block.attn
        n = (attn.rel_pos_h.shape[0] + 1) // 2
        assert attn.rel_pos_index_h.dtype == torch.int64
        assert torch.equal(attn.rel_pos_index_h, image_encoder.rel_pos_index(n, n))
        # row (i, j) is the offset i - j, shifted to start at 0
        assert attn.rel_pos_index_h[0, n - 1].item() == 0
        assert attn.rel_pos_index_h[n - 1, 0].item() == 2 * n - 2
    assert ours.double().blocks[0].attn.rel_pos_index_w.dtype == torch.int64
    ours.float()


def test_every_block_uses_sdpa_with_the_bias_in_the_query_dtype(pair, monkeypatch):
    _, ours = pair
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), q.dtype, None if attn_mask is None else attn_mask.dtype))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(image_encoder.F, "scaled_dot_product_attention", spy)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours(image())
    # windowed blocks: 9 windows of 4 x 4 tokens; global blocks: one 10 x 10 grid
    assert [c[0] for c in calls] == [(9, 4, 16, 16), (1, 4, 100, 16)] * 2
    assert all(c[1] == c[2] == torch.bfloat16 for c in calls), calls


def test_bf16_autocast_is_as_close_to_fp32_as_the_official_encoder(pair):
    ref, ours = pair
    x = image(3)
    with torch.no_grad():
        fp32 = ref(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_bf16, ours_bf16 = ref(x).float(), ours(x).float()
    ours_err = (ours_bf16 - fp32).abs().max().item()
    ref_err = (ref_bf16 - fp32).abs().max().item()
    assert ours_err <= 1.5 * ref_err + 1e-3, (ours_err, ref_err)


def test_another_grid_size_interpolates_the_tables_as_before():
    """A tiny encoder run on a 12 x 12 grid (tables sized for 16 x 16 / windows of 8):
    the precomputed offsets do not apply and get_rel_pos interpolates, as the official
    model does."""
    torch.manual_seed(4)
    enc = build_sam("vit_tiny_shapes").image_encoder
    block = enc.blocks[1]  # global, tables for a 16 x 16 grid
    with torch.no_grad():
        block.attn.rel_pos_h.normal_(0, 0.5)
        block.attn.rel_pos_w.normal_(0, 0.5)
        tokens = torch.randn(1, 12, 12, 96)
        got = block.attn(tokens)
        q = block.attn.qkv(tokens).reshape(1, 144, 3, 3, -1).permute(2, 0, 3, 1, 4)[0]
        bias = image_encoder.decomposed_rel_pos_bias(
            q, block.attn.rel_pos_h, block.attn.rel_pos_w, (12, 12), (12, 12)
        )
    assert block.attn._lookup(block.attn.rel_pos_h, block.attn.rel_pos_index_h, 12) is None
    assert bias.shape == (1, 3, 144, 144)
    assert got.shape == (1, 12, 12, 96) and torch.isfinite(got).all()
