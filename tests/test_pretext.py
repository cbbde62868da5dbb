import itertools

import pytest
import torch
import torch.nn.functional as F

from teachkit.data.shapes import ShapesStream
from teachkit.pretext.autoencoder import ConvAutoencoder, train_autoencoder
from teachkit.pretext.contrastive import ContrastiveModel, nt_xent_loss, train_contrastive


def _reference_nt_xent(z1, z2, t):
    """NT-Xent written out view by view, as in SimCLR's Algorithm 1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z)
    b = n // 2
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        num = torch.exp(z[i] @ z[j] / t)
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n) if k != i)
        total += -torch.log(num / den)
    return total / n


def test_nt_xent_matches_the_written_out_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert torch.allclose(nt_xent_loss(z1, z2, 0.3), _reference_nt_xent(z1, z2, 0.3), atol=1e-5)


def test_nt_xent_is_low_when_views_agree_and_rejects_bad_shapes():
    z = torch.eye(8)
    assert nt_xent_loss(z, z, 0.1) < 0.01
    assert nt_xent_loss(z, torch.roll(z, 1, 0), 0.1) > 5
    with pytest.raises(ValueError, match="two \\(B, D\\) tensors"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3))


def test_autoencoder_shapes_and_training_reduces_error():
    torch.manual_seed(0)
    ae = ConvAutoencoder(resolution=32, code_dim=16, width=8)
    x = torch.rand(4, 3, 32, 32)
    assert ae.encode(x).shape == (4, 16) and ae(x).shape == x.shape
    batch = next(iter(ShapesStream(16, seed=0)))
    losses = train_autoencoder(ae, itertools.repeat(batch), steps=150, lr=1e-2, progress=False)
    assert losses[-1] < 0.7 * losses[0], "an autoencoder can fit one batch"
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        ae.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by 8"):
        ConvAutoencoder(resolution=30)


def test_contrastive_training_runs_and_loss_drops():
    from teachkit.dino.augment import MultiCropConfig
    from teachkit.dino.batched_augment import BatchedMultiCrop
    from teachkit.models.resnet import small_cnn

    torch.manual_seed(0)
    model = ContrastiveModel(small_cnn(width=8, embed_dim=32), proj_dim=16)
    aug = BatchedMultiCrop(MultiCropConfig(local_crops_number=0))
    losses = train_contrastive(model, ShapesStream(32, seed=0), aug, steps=25, lr=3e-3,
                               progress=False)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 32)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
