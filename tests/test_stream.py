import pytest
import torch

from teachkit.data.stream import TensorStream


def test_epochs_cover_the_dataset_and_resume_exactly():
    images = torch.arange(10).view(10, 1, 1, 1).expand(10, 3, 2, 2).to(torch.uint8)
    stream = TensorStream(images, torch.arange(10), batch_size=5, seed=1)
    it = iter(stream)
    first_epoch = torch.cat([next(it).labels for _ in range(2)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    third = next(it)
    assert torch.equal(next(iter(stream.at_step(2))).images, third.images)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 4\]"):
        TensorStream(torch.zeros(4, 3, 2, 2), batch_size=5)
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        TensorStream(torch.zeros(4, 3, 2, 2), torch.zeros(3), batch_size=2)
