"""The one-go trainers' loop (teachkit.infra.loop.run_steps): a run stopped at any
moment resumes from its last checkpoint and ends exactly where an uninterrupted run ends."""

import itertools

import pytest
import torch

from teachkit.data.shapes import ShapesStream
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.batched_augment import BatchedMultiCrop
from teachkit.infra.loop import run_steps
from teachkit.models.resnet import small_cnn
from teachkit.pretext.autoencoder import ConvAutoencoder, train_autoencoder
from teachkit.pretext.contrastive import ContrastiveModel, train_contrastive

pytestmark = pytest.mark.usefixtures("one_thread")


def _contrastive():
    torch.manual_seed(0)
    return ContrastiveModel(small_cnn(width=8, embed_dim=16), proj_dim=8)


class _Killed(Exception):
    pass


def test_a_contrastive_run_killed_midway_resumes_to_the_same_model(tmp_path):
    aug = BatchedMultiCrop(MultiCropConfig(local_crops_number=0))
    kw = dict(steps=6, lr=3e-3, seed=3, progress=False)

    whole = _contrastive()
    expected = train_contrastive(whole, ShapesStream(8, seed=1), aug, **kw)

    calls = itertools.count()

    def dies_at_the_fifth_step(images, generator):
        if next(calls) == 4:
            raise _Killed
        return aug(images, generator=generator)

    with pytest.raises(_Killed):
        train_contrastive(_contrastive(), ShapesStream(8, seed=1), dies_at_the_fifth_step,
                          out_dir=tmp_path, checkpoint_every=2, **kw)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4

    resumed = _contrastive()  # a fresh process: new weights, the stream from step 0
    losses = train_contrastive(resumed, ShapesStream(8, seed=1), aug, out_dir=tmp_path,
                               checkpoint_every=2, **kw)
    assert losses == expected  # the 4 saved losses, then the same 2 new ones
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert losses.wall_time_s > 0

    # A finished run's folder is resumed at its end: nothing more is trained.
    again = _contrastive()
    assert train_contrastive(again, ShapesStream(8, seed=1), aug, out_dir=tmp_path, **kw) == expected
    assert torch.equal(again.projector[0].weight, resumed.projector[0].weight)


def test_a_folder_of_another_run_is_refused(tmp_path):
    model = ConvAutoencoder(resolution=32, code_dim=8, width=4)
    train_autoencoder(model, ShapesStream(4, seed=0), steps=2, progress=False, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"autoencoder run of 2 steps, not of this autoencoder run of 3"):
        train_autoencoder(model, ShapesStream(4, seed=0), steps=3, progress=False, out_dir=tmp_path)


def test_resuming_needs_a_stream_that_can_start_at_a_step(tmp_path):
    model = ConvAutoencoder(resolution=32, code_dim=8, width=4)
    batch = next(iter(ShapesStream(4, seed=0)))
    with pytest.raises(_Killed):
        train_autoencoder(model, _Dies(batch, after=2), steps=4, progress=False,
                          out_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(ValueError, match=r"at step 2 needs a stream that can start there.*repeat"):
        train_autoencoder(model, itertools.repeat(batch), steps=4, progress=False, out_dir=tmp_path)


class _Dies:
    """The same batch ``after`` times, then a kill."""

    def __init__(self, batch, after: int) -> None:
        self.batch, self.after = batch, after

    def __iter__(self):
        yield from itertools.repeat(self.batch, self.after)
        raise _Killed


def test_checkpoint_every_must_be_positive():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive number of steps, got 0"):
        run_steps(model, lambda b: model(b).sum(), itertools.repeat(torch.ones(1, 2)), steps=1,
                  lr=0.1, weight_decay=0.0, trainer="t", checkpoint_every=0)
