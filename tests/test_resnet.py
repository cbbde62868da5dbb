"""Tests of teachkit.models.resnet: shapes, gradients, widths and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from teachkit.models import ResNet, resnet18_cifar, small_cnn


@pytest.mark.parametrize("hw", [(32, 32), (16, 16), (24, 40)])
def test_resnet18_shapes(hw: tuple[int, int]) -> None:
    model = resnet18_cifar(width=16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *hw))
    assert out.shape == (2, 128) == (2, model.embed_dim)
    assert torch.isfinite(out).all() and (out >= 0).all()  # pooled after a ReLU


def test_resnet18_standard_width_is_resnet18() -> None:
    model = resnet18_cifar()
    assert model.embed_dim == 512
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 11_168_832  # torchvision's resnet18 minus its fc and 7x7 stem
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [len(stage) for stage in stages] == [2, 2, 2, 2]


def test_resnet_cifar_stem_keeps_resolution() -> None:
    """A 32 px image still has a 4 x 4 map after the last stage (no stride in the stem)."""
    model = resnet18_cifar(width=8).eval()
    maps = []
    model.layer4.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert maps[0].shape == (1, 64, 4, 4)


@pytest.mark.parametrize("build", [lambda: resnet18_cifar(width=8), lambda: small_cnn(width=8)])
def test_gradients_reach_every_parameter(build) -> None:
    model = build().train()
    x = torch.randn(4, 3, 20, 28, requires_grad=True)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("hw", [(32, 32), (16, 16), (17, 50)])
def test_small_cnn_shapes(hw: tuple[int, int]) -> None:
    model = small_cnn(width=8, embed_dim=40).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, *hw))
    assert out.shape == (3, 40) == (3, model.embed_dim)
    assert small_cnn().embed_dim == 128


def test_eval_mode_is_deterministic_and_per_sample() -> None:
    """In eval mode BatchNorm uses running statistics: a sample's feature ignores the batch."""
    model = resnet18_cifar(width=8).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]))


@pytest.mark.parametrize("build", [lambda: resnet18_cifar(width=8), lambda: small_cnn(width=8)])
def test_bad_inputs_raise(build) -> None:
    model = build()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got shape"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got shape \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"at least 16 x 16 pixels, got H=32, W=8"):
        model(torch.randn(2, 3, 32, 8))
    with pytest.raises(ValueError, match=r"floating-point images, got dtype torch.uint8"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_bad_configs_raise() -> None:
    with pytest.raises(ValueError, match=r"got width=0"):
        resnet18_cifar(width=0)
    with pytest.raises(ValueError, match=r"four positive block counts.*\(2, 2, 2\)"):
        ResNet(blocks_per_stage=(2, 2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"embed_dim=0"):
        small_cnn(embed_dim=0)
    with pytest.raises(TypeError):
        resnet18_cifar(16)  # keyword-only
