"""Tests of teachkit.models.vit: equivalence with timm / official DINO, and behaviour."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from teachkit.models import VisionTransformer, build_vit, vit_nano
from teachkit.models.vit import VIT_SIZES, DropPath

timm_vit = pytest.importorskip("timm.models.vision_transformer")

TOL = 1e-5


def _timm_twin(
    *, img_size: int | tuple[int, int], patch_size: int, embed_dim: int, depth: int, num_heads: int
) -> nn.Module:
    """timm's ViT configured as the official DINO backbone (no head, [CLS] pooling, eps 1e-6)."""
    return timm_vit.VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=0,
        class_token=True,
        global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )


def _randomize(model: nn.Module, seed: int) -> None:
    """Weights far from the default init, so wrong eps, head split or scale would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.empty_like(p).uniform_(-(3**0.5), 3**0.5, generator=gen)  # var 1
            if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
                p.copy_(1.0 + 0.2 * noise)
            elif name in ("cls_token", "pos_embed"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / math.sqrt(max(p[0].numel(), 1)))  # ~unit-variance activations


def _run_timm(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One timm forward: its [CLS] output, its normed tokens and its last attention.

    The last block takes timm's explicit-softmax path (``fused_attn = False``), whose
    probabilities go through the (identity) attention dropout, where a hook catches them.
    """
    caught: dict[str, torch.Tensor] = {}
    last = model.blocks[-1].attn
    last.fused_attn = False
    hooks = [
        last.attn_drop.register_forward_hook(
            lambda _m, inp, _out: caught.__setitem__("attention", inp[0])
        ),
        model.norm.register_forward_hook(lambda _m, _inp, out: caught.__setitem__("tokens", out)),
    ]
    try:
        caught["cls"] = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return caught


def _compare_with_timm(config: dict, input_hw: tuple[int, int], seed: int) -> dict[str, float]:
    # Both models are built on the meta device (no memory, no init: the CPUs are slow)
    # and get their weights from _randomize / load_state_dict.
    with torch.device("meta"):
        ref = _timm_twin(**config)
        ours = VisionTransformer(**config)
    ref = ref.to_empty(device="cpu").eval()
    _randomize(ref, seed)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # the names match as they are
    ours.eval()
    x = torch.randn(2, 3, *input_hw, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = _run_timm(ref, x)
        out = ours.forward_features(x, return_attention=True)
        cls = ours(x)
    assert expected["cls"].abs().max() > 0.5, "the reference output is degenerate"
    assert torch.equal(expected["cls"], expected["tokens"][:, 0])
    return {
        "cls": (cls - expected["cls"]).abs().max().item(),
        "cls (attention path)": (out["cls"] - expected["cls"]).abs().max().item(),
        "patch": (out["patch"] - expected["tokens"][:, 1:]).abs().max().item(),
        "attention": (out["attention"] - expected["attention"]).abs().max().item(),
    }


@pytest.mark.parametrize(
    ("config", "input_hw"),
    [
        (dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6), (224, 224)),
        (dict(img_size=48, patch_size=8, embed_dim=768, depth=12, num_heads=12), (48, 48)),
    ],
    ids=["vit_small16@224", "vit_base8@48"],
)
def test_matches_timm(config: dict, input_hw: tuple[int, int]) -> None:
    errors = _compare_with_timm(config, input_hw, seed=0)
    assert max(errors.values()) < TOL, errors


def test_official_dino_layout() -> None:
    """Key names and shapes of the official checkpoints, and their LayerNorm eps (1e-6: the
    timm comparison alone cannot see 1e-5 instead, it moves outputs by only ~3e-6)."""
    model = build_vit("vit_small", depth=2)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 5 and all(m.eps == 1e-6 for m in norms)
    keys = set(model.state_dict())
    expected_block = {
        f"blocks.{i}.{name}.{kind}"
        for i in range(2)
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for kind in ("weight", "bias")
    }
    top = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    assert keys == top | expected_block | {"norm.weight", "norm.bias"}
    assert model.pos_embed.shape == (1, 197, 384)
    assert model.patch_embed.proj.weight.shape == (384, 3, 16, 16)


# --------------------------------------------------------- position embedding
def _official_dino_interpolation(pos_embed: torch.Tensor, hw: tuple[int, int], patch_size: int):
    """``interpolate_pos_encoding`` of facebookresearch/dino, vision_transformer.py (verbatim
    logic, with its naming: ``w`` is the image height, ``h`` its width)."""
    w, h = hw[0] * patch_size, hw[1] * patch_size
    npatch, n = hw[0] * hw[1], pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch_size + 0.1, h // patch_size + 0.1
    patch_pos_embed = nn.functional.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def test_pos_embed_is_identity_at_native_grid() -> None:
    model = vit_nano(img_size=32, patch_size=4)
    assert model.pos_embed_for_grid(8, 8) is model.pos_embed


@pytest.mark.parametrize("hw", [(4, 4), (3, 5), (12, 7), (8, 8), (1, 1)])
def test_pos_embed_interpolation_matches_official_dino(hw: tuple[int, int]) -> None:
    model = vit_nano(img_size=40, patch_size=4)  # native grid 10 x 10
    with torch.no_grad():
        model.pos_embed.normal_()
        ours = model.pos_embed_for_grid(*hw)
        ref = _official_dino_interpolation(model.pos_embed, hw, patch_size=4)
    assert ours.shape == (1, 1 + hw[0] * hw[1], 128)
    assert torch.equal(ours[:, 0], model.pos_embed[:, 0])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_pos_embed_interpolation_is_row_major() -> None:
    """A position embedding that varies only along the height must stay so (no h/w swap)."""
    model = vit_nano(img_size=32, patch_size=4)
    with torch.no_grad():
        rows = torch.arange(8.0).repeat_interleave(8)  # value = row index of the 8 x 8 grid
        model.pos_embed[0, 1:] = rows[:, None]
        out = model.pos_embed_for_grid(4, 12)[0, 1:, 0].reshape(4, 12)
    assert torch.allclose(out, out[:, :1].expand(4, 12), atol=1e-5)  # constant along rows
    assert (out[1:, 0] > out[:-1, 0]).all()  # increasing down the columns


def test_matches_timm_at_another_input_size() -> None:
    """Off the native grid (non-square, smaller than img_size) the whole network still
    matches timm once timm gets our interpolated position embedding (timm's own resizing,
    antialiased and by output size, differs slightly from DINO's)."""
    config = dict(patch_size=8, embed_dim=64, depth=2, num_heads=4)
    ours = VisionTransformer(img_size=64, **config).eval()
    _randomize(ours, seed=1)
    ref = _timm_twin(img_size=(24, 40), **config).eval()
    state = ours.state_dict()
    state["pos_embed"] = ours.pos_embed_for_grid(3, 5).detach()
    ref.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        out = ours.forward_features(x)
        tokens = ref.forward_features(x)
    assert out["grid"] == (3, 5)
    torch.testing.assert_close(out["cls"], tokens[:, 0], rtol=0, atol=TOL)
    torch.testing.assert_close(out["patch"], tokens[:, 1:], rtol=0, atol=TOL)


# ------------------------------------------------------------------ attention
@pytest.fixture(scope="module")
def nano() -> VisionTransformer:
    torch.manual_seed(0)
    model = vit_nano(img_size=32, patch_size=4).eval()
    _randomize(model, seed=2)
    return model


def test_attention_path_agrees_with_sdpa_path(nano: VisionTransformer) -> None:
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = nano.forward_features(x)
        with_attn = nano.forward_features(x, return_attention=True)
        cls = nano(x)
    assert "attention" not in plain
    torch.testing.assert_close(with_attn["cls"], cls, rtol=0, atol=TOL)
    torch.testing.assert_close(with_attn["patch"], plain["patch"], rtol=0, atol=TOL)
    assert torch.equal(plain["cls"], cls)


def test_attention_probabilities(nano: VisionTransformer) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        attn = nano.get_last_selfattention(x)
        from_features = nano.forward_features(x, return_attention=True)["attention"]
    assert attn.shape == (2, 4, 65, 65)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 65))
    torch.testing.assert_close(attn, from_features, rtol=0, atol=1e-6)
    assert attn.std(-1).mean() > 1e-3, "attention is uniform: the test would not see bugs"


def test_intermediate_layers(nano: VisionTransformer) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        layers = nano.get_intermediate_layers(x, n=3)
        out = nano.forward_features(x)
    assert len(layers) == 3 and all(t.shape == (2, 65, 128) for t in layers)
    torch.testing.assert_close(layers[-1][:, 0], out["cls"])
    torch.testing.assert_close(layers[-1][:, 1:], out["patch"])
    assert not torch.allclose(layers[0], layers[-1])
    with pytest.raises(ValueError, match=r"n must be between 1 and depth=4, got n=5"):
        nano.get_intermediate_layers(x, n=5)


def test_attention_matrix_only_when_asked(
    nano: VisionTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused kernel runs in every block unless the probabilities are asked for."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or sdpa(*a, **k),
    )
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        nano(x)
        assert len(calls) == 4
        nano.forward_features(x, return_attention=True)
        assert len(calls) == 4 + 3  # the last block computed softmax(q k^T * scale) itself


# -------------------------------------------------------- shapes and training
@pytest.mark.parametrize("hw", [(32, 32), (16, 16), (16, 28), (48, 20)])
def test_any_divisible_input_size(nano: VisionTransformer, hw: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = nano.forward_features(x, return_attention=True)
    h, w = hw[0] // 4, hw[1] // 4
    assert out["grid"] == (h, w)
    assert out["cls"].shape == (2, 128)
    assert out["patch"].shape == (2, h * w, 128)
    assert out["attention"].shape == (2, 4, 1 + h * w, 1 + h * w)
    assert torch.isfinite(out["patch"]).all()


def test_sizes() -> None:
    for name, numbers in VIT_SIZES.items():
        model = build_vit(name, patch_size=8, img_size=32, depth=1)
        assert (model.embed_dim, model.num_heads) == (numbers["embed_dim"], numbers["num_heads"])
        assert model.patch_size == 8 and model.depth == 1
    assert VIT_SIZES["vit_small"] == {"embed_dim": 384, "depth": 12, "num_heads": 6}
    assert VIT_SIZES["vit_base"] == {"embed_dim": 768, "depth": 12, "num_heads": 12}
    assert VIT_SIZES["vit_tiny"] == {"embed_dim": 192, "depth": 12, "num_heads": 3}


def test_drop_path_drops_whole_samples_and_rescales() -> None:
    drop = DropPath(drop_prob=0.25).train()
    torch.manual_seed(0)
    out = drop(torch.ones(4000, 5, 3))
    per_sample = out.flatten(1)
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped as a whole
    assert abs(out.mean().item() - 1.0) < 0.05  # expectation unchanged
    assert torch.equal(drop.eval()(out), out)


def test_drop_path_eval_identity_train_stochastic() -> None:
    torch.manual_seed(0)
    model = vit_nano(img_size=32, patch_size=4, drop_path_rate=0.5)
    rates = [blk.drop_path.drop_prob for blk in model.blocks[1:]]
    assert rates == pytest.approx([0.5 / 3, 1.0 / 3, 0.5])  # linear in depth, 0 first
    plain = vit_nano(img_size=32, patch_size=4)
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=0, atol=0)
        model.train()
        a, b = model(x), model(x)
        assert not torch.allclose(a, b)
        plain.train()
        torch.testing.assert_close(plain(x), plain(x), rtol=0, atol=0)  # no other randomness


@pytest.mark.parametrize("conv_stem", [False, True])
def test_gradients_reach_every_parameter(conv_stem: bool) -> None:
    model = vit_nano(img_size=32, patch_size=4, conv_stem=conv_stem)
    x = torch.randn(2, 3, 24, 32, requires_grad=True)
    out = model.forward_features(x, return_attention=True)
    (out["cls"].square().sum() + out["attention"].sum() + out["patch"].mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_conv_stem() -> None:
    model = vit_nano(img_size=64, patch_size=8, conv_stem=True).eval()
    names = [n for n, _ in model.named_parameters() if n.startswith("patch_embed.")]
    assert names and all(n.startswith("patch_embed.stem.") for n in names)
    strided = [m for m in model.patch_embed.stem if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3  # 2**3 == patch_size
    assert model.patch_embed.stem[-1].out_channels == 128
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, 40, 24))
    assert out["grid"] == (5, 3) and out["patch"].shape == (2, 15, 128)


# -------------------------------------------------------------------- errors
def test_bad_inputs_raise(nano: VisionTransformer) -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got a 3-D"):
        nano(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"expected 3 input channels .* got 1 channels"):
        nano(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"divisible by the patch size 4, got H=30, W=32"):
        nano(torch.randn(2, 3, 30, 32))
    with pytest.raises(ValueError, match=r"floating-point images, got dtype torch.uint8"):
        nano(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    stem = vit_nano(img_size=32, patch_size=4, conv_stem=True)
    with pytest.raises(ValueError, match=r"conv stem's total stride\) 4, got H=32, W=18"):
        stem(torch.randn(1, 3, 32, 18))


def test_bad_configs_raise() -> None:
    with pytest.raises(ValueError, match=r"unknown ViT size 'vit_huge'.*'vit_nano'.*'vit_base'"):
        build_vit("vit_huge")
    with pytest.raises(ValueError, match=r"power of 2.*got patch_size=6"):
        vit_nano(img_size=36, patch_size=6, conv_stem=True)
    with pytest.raises(ValueError, match=r"embed_dim=100, num_heads=3"):
        VisionTransformer(embed_dim=100, num_heads=3, depth=1)
    with pytest.raises(ValueError, match=r"patch_size must be at most img_size"):
        VisionTransformer(img_size=8, patch_size=16, depth=1)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 1.0"):
        VisionTransformer(drop_path_rate=1.0, depth=1)
    with pytest.raises(ValueError, match=r"depth must be a positive int, got 0"):
        VisionTransformer(depth=0)
    with pytest.raises(TypeError):
        VisionTransformer(224)  # keyword-only
