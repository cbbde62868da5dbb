"""Convolutional backbones for small images: a CIFAR-style ResNet-18 and a small CNN.

Course: Chapter 2, "Vision Transformers" (the convolutional baseline) and Chapter 3 (DINO
works with any backbone that maps an image to a vector).

Both return a pooled feature vector and no classifier, like the ViT's ``[CLS]`` feature,
and expose its width as ``embed_dim`` so a DINO head can be built on either.

* :func:`resnet18_cifar`: ResNet-18 (He et al. 2016, "Deep Residual Learning for Image
  Recognition") with the CIFAR stem used by the SimCLR/DINO CIFAR experiments: a
  ``3 x 3`` stride-1 convolution and no max-pool, so a 32 px image keeps a 4 x 4 map
  after the last stage instead of 1 x 1. ``width=64`` is the standard network (512-d
  feature); ``width=16`` or ``32`` are slim variants for CPU runs.
* :func:`small_cnn`: four conv-BN-ReLU blocks and a global average pool, the fastest
  backbone for the quick profile.

Shapes: ``B`` batch; any input of at least 16 x 16 pixels, square or not.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet", "SmallCNN", "resnet18_cifar", "small_cnn"]

MIN_INPUT_SIZE = 16


def _check_images(x: torch.Tensor, in_chans: int) -> None:
    """Raise ValueError unless ``x`` is (B, in_chans, H, W) floats with H, W >= 16."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"expected images of shape (B, {in_chans}, H, W), got shape {tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise ValueError(f"expected floating-point images, got dtype {x.dtype}")
    if min(x.shape[2], x.shape[3]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"expected images of at least {MIN_INPUT_SIZE} x {MIN_INPUT_SIZE} pixels, got "
            f"H={x.shape[2]}, W={x.shape[3]}"
        )


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual: (B, C_in, H, W) -> (B, C_out, H/s, W/s).

    The shortcut is the identity, or a strided 1x1 conv + BN where the shape changes.
    """

    def __init__(self, *, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet without classifier: (B, C, H, W) -> (B, embed_dim).

    Args:
        blocks_per_stage: residual blocks in each of the four stages; (2, 2, 2, 2) is
            ResNet-18.
        width: channels of the first stage; the stages have ``width * (1, 2, 4, 8)``
            channels, so ``embed_dim = 8 * width``.
        in_chans: input channels.

    The names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``) follow torchvision.
    """

    def __init__(
        self,
        *,
        blocks_per_stage: tuple[int, int, int, int] = (2, 2, 2, 2),
        width: int = 64,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if width < 1 or len(blocks_per_stage) != 4 or min(blocks_per_stage) < 1:
            raise ValueError(
                f"expected width >= 1 and four positive block counts, got width={width}, "
                f"blocks_per_stage={blocks_per_stage}"
            )
        self.in_chans = in_chans
        self.embed_dim = 8 * width
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        c_in = width
        for i, n_blocks in enumerate(blocks_per_stage):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_channels=c_in, out_channels=c_out, stride=stride)]
            blocks += [
                BasicBlock(in_channels=c_out, out_channels=c_out) for _ in range(n_blocks - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), H and W >= 16 -> pooled features (B, 8 * width)."""
        _check_images(x, self.in_chans)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


def resnet18_cifar(*, width: int = 64, in_chans: int = 3) -> ResNet:
    """ResNet-18 with a CIFAR stem: ``width=64`` gives the standard 11 M-parameter, 512-d
    network; ``width=16`` (0.7 M parameters, 128-d) is a slim variant for CPU runs."""
    return ResNet(blocks_per_stage=(2, 2, 2, 2), width=width, in_chans=in_chans)


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks and a global average pool: (B, C, H, W) -> (B, embed_dim).

    Widths ``width, 2*width, 4*width, embed_dim``; a 2x2 max-pool follows each of the
    first three blocks, so a 32 px image ends as a 4 x 4 map before pooling.

    Args:
        width: channels of the first block.
        embed_dim: channels of the last block, the feature width.
        in_chans: input channels.
    """

    def __init__(self, *, width: int = 32, embed_dim: int = 128, in_chans: int = 3) -> None:
        super().__init__()
        if width < 1 or embed_dim < 1:
            raise ValueError(
                f"expected width >= 1 and embed_dim >= 1, got width={width}, embed_dim={embed_dim}"
            )
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, c_out in enumerate((width, 2 * width, 4 * width, embed_dim)):
            layers += _conv_bn_relu(c_in, c_out)
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), H and W >= 16 -> pooled features (B, embed_dim)."""
        _check_images(x, self.in_chans)
        return self.features(x).flatten(1)


def small_cnn(*, width: int = 32, embed_dim: int = 128, in_chans: int = 3) -> SmallCNN:
    """The fast CPU backbone of the quick profile (0.24 M parameters with the defaults)."""
    return SmallCNN(width=width, embed_dim=embed_dim, in_chans=in_chans)
