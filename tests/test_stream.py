import pytest
import torch

from teachkit.data.stream import ImageBatches


def _images(n: int) -> torch.Tensor:
    return torch.arange(n).view(n, 1, 1, 1).expand(n, 3, 2, 2).to(torch.uint8)


def test_an_epoch_covers_the_dataset_and_resuming_repeats_exactly():
    stream = ImageBatches(_images(10), 5, seed=1)
    it = iter(stream)
    first_epoch = torch.cat([next(it)[:, 0, 0, 0] for _ in range(2)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    third = next(it)
    assert torch.equal(next(iter(stream.at_step(2))), third)


def test_two_processes_split_the_global_batch():
    whole = next(iter(ImageBatches(_images(12), 6, seed=3, rank=0, world_size=1)))
    halves = [next(iter(ImageBatches(_images(12), 3, seed=3, rank=r, world_size=2)))
              for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)


def test_a_batch_larger_than_the_dataset_is_refused():
    with pytest.raises(ValueError, match="a global batch of 5 x 1 needs at least that many"):
        ImageBatches(_images(4), 5, rank=0, world_size=1)
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\)"):
        ImageBatches(torch.zeros(4, 3, 2), 2)


def test_one_procedural_stream_with_the_shipped_seed_rule():
    """Shapes and critters share one stream class; batch ``i`` comes from seed
    ``seed * 1_000_000_007 + i`` (the rule every shipped model's data was drawn with)."""
    from teachkit.data.critters import CrittersStream
    from teachkit.data.shapes import ShapesStream
    from teachkit.data.stream import ProceduralStream

    assert issubclass(ShapesStream, ProceduralStream)
    assert issubclass(CrittersStream, ProceduralStream)

    class Seeds(ProceduralStream):
        draw = staticmethod(lambda n, *, resolution, seed, device, **options: (n, seed, options))

    stream = Seeds(4, seed=3, colour="red")
    assert stream.batch(5) == (4, 3 * 1_000_000_007 + 5, {"colour": "red"})
    it = iter(stream.at_step(2))
    assert [next(it)[1] for _ in range(2)] == [3 * 1_000_000_007 + 2, 3 * 1_000_000_007 + 3]
    with pytest.raises(ValueError, match="start_step must be >= 0"):
        Seeds(4, start_step=-1)
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        Seeds(2.5)
