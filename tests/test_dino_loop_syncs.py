"""Issue 14: what feeds a DINO step on a GPU never makes the host wait for the GPU.

On any machine: the sync-free code paths compute what the others compute (the crops of
all views of a size in one pass and per view; the colour-jitter masks made on the host
and on the device; the draws' byte block and the tensors it came from; the shapes'
masks with and without finding each class's rows).

On a GPU (skipped without one): ``BatchedMultiCrop``, ``ImageBatches``,
``ShapesStream``, ``CrittersStream`` and ``train_dino``'s steps run under
``torch.cuda.set_sync_debug_mode("error")`` after a warm-up; the trainer may only wait
to read its metrics back (``log_every``). ``tests/test_dino_loop_exact.py`` checks that
the CPU results did not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from test_dino_trainer import backbone, tiny_config  # the trainer tests' tiny run
from torch.utils._python_dispatch import TorchDispatchMode

from teachkit.data.critters import CrittersStream, make_critter_scenes
from teachkit.data.shapes import ShapesStream, _shape_masks
from teachkit.data.stream import ImageBatches
from teachkit.dino import device_draws, trainer
from teachkit.dino.augment import MultiCropConfig, ViewParams
from teachkit.dino.batched_augment import BatchedMultiCrop, resized_crop

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SMALL = MultiCropConfig(global_size=16, local_size=8, local_crops_number=3)


def draws(config: MultiCropConfig, shape: tuple[int, ...], seed: int) -> list[ViewParams]:
    g = torch.Generator().manual_seed(seed)
    return BatchedMultiCrop(config).sample_params(shape[0], generator=g, image_size=shape[-2:])


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (5, 3, 13, 17), (32, 3, 32, 32)])
def test_the_views_of_a_size_are_cropped_in_one_pass_as_one_by_one(shape, mode):
    config = SMALL if shape[-1] < 32 else MultiCropConfig()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    params = draws(config, shape, seed=2)
    for size, views in ((config.global_size, params[:2]), (config.local_size, params[2:])):
        one_by_one = torch.cat([resized_crop(x, p.crop, p.flip, size, mode) for p in views])
        p = ViewParams.cat(views)
        batched = resized_crop(x.repeat(len(views), 1, 1, 1), p.crop, p.flip, size, mode)
        assert torch.equal(batched, one_by_one)


def test_the_jitter_masks_say_which_op_each_image_gets_at_each_position():
    params = draws(SMALL, (8, 3, 16, 16), seed=0)
    p, slots = device_draws.draws_on(params, torch.device("cpu"))
    assert slots.shape == (len(params) * 8, 4, 4) and slots.dtype == torch.bool
    for position in range(4):
        for op in range(4):
            expected = p.jitter & (p.jitter_order[:, position] == op)
            assert torch.equal(slots[:, position, op], expected)


def test_the_draws_travel_as_one_block_of_bytes_and_come_back_bit_for_bit():
    p = ViewParams.cat(draws(SMALL, (6, 3, 16, 16), seed=3))
    tensors = {name: getattr(p, name) for name in vars(p)}
    tensors["slots"] = torch.rand(30, 4, 4) < 0.5
    block = device_draws._as_bytes(tensors)
    assert block.dtype == torch.uint8 and block.ndim == 1
    back = device_draws._from_bytes(block.clone(), tensors)
    assert back.keys() == tensors.keys()
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_shape_masks_are_the_same_with_and_without_finding_each_class_rows():
    g = torch.Generator().manual_seed(0)
    n = 40
    labels = torch.randint(10, (n,), generator=g)
    centres, radii = torch.rand(n, 2, generator=g), 0.2 + 0.2 * torch.rand(n, generator=g)
    angles = 6.3 * torch.rand(n, generator=g)
    args = (labels, centres, radii, angles, 24)
    assert torch.equal(_shape_masks(*args, sync_free=True), _shape_masks(*args, sync_free=False))


class WouldWait(TorchDispatchMode):
    """Records the ops that make the host wait for a GPU whatever the device: reading a
    value back (``.item()``, ``bool(t)``), ``nonzero`` and boolean-mask indexing."""

    READS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        indices = args[1] if name in ("aten::index", "aten::index_put_") else ()
        if name in self.READS or any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices
        ):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_critters_and_every_class_masks_never_read_the_device_back():
    g = torch.Generator().manual_seed(0)
    labels, centres = torch.randint(10, (12,), generator=g), torch.rand(12, 2, generator=g)
    stream = iter(CrittersStream(12, seed=1))
    with WouldWait() as mode:
        _shape_masks(labels, centres, torch.full((12,), 0.3), torch.zeros(12), 16, sync_free=True)
        next(stream), next(stream)
        make_critter_scenes(4, resolution=32)
    assert mode.seen == []


# ------------------------------------------------------------------------ on a GPU
@contextmanager
def host_syncs_refused() -> Iterator[None]:
    """Any synchronising CUDA call inside raises (``set_sync_debug_mode("error")``)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_gpu
def test_on_a_gpu_the_batches_and_crops_are_made_without_waiting_for_it():
    device = torch.device("cuda", torch.cuda.current_device())
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device=device)
    augment = BatchedMultiCrop(MultiCropConfig())
    sources = [
        iter(ImageBatches(images, 16, seed=0, rank=0, world_size=1)),
        iter(ShapesStream(16, device=device)),
        iter(CrittersStream(16, device=device)),
    ]
    for step in range(3):  # step 0 copies the constant tables to the GPU once

        def one_step(step: int = step) -> None:
            for source in sources:
                batch = next(source)
                batch = batch if isinstance(batch, torch.Tensor) else batch.images
                g = torch.Generator().manual_seed(step)
                augment(batch, params=augment.sample_params(16, generator=g, image_size=(32, 32)))

        if step == 0:
            one_step()
        else:
            with host_syncs_refused():
                one_step()


@needs_gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_on_a_gpu_a_training_step_waits_for_it_only_to_read_the_metrics(monkeypatch, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    device = torch.device("cuda", torch.cuda.current_device())
    flush = trainer._Run._flush

    def flush_then_refuse_syncs(self, *args):  # the warm-up ends at the first read-back
        torch.cuda.set_sync_debug_mode("default")
        try:
            return flush(self, *args)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(trainer._Run, "_flush", flush_then_refuse_syncs)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, device=device)
    cfg = tiny_config(device="cuda", precision=precision, log_every=2)
    try:
        history = trainer.train_dino(
            cfg, ImageBatches(images, 8), backbone=backbone(), progress=False
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(history.steps) == 6
