"""The critters dataset: determinism, exact masks, the cue design, the stream and scenes,
the fitness bar on raw pixels, and clear errors."""

import itertools
from dataclasses import replace

import pytest
import torch

from teachkit.data.critters import (
    CRITTER_CLASSES,
    CUES,
    CrittersConfig,
    CrittersStream,
    critter_cues,
    critters_splits,
    make_critter_scenes,
    make_critters,
    single_cue_config,
)
from teachkit.data.datasets import make_procedural, procedural_splits, procedural_stream
from teachkit.knn import knn_accuracy, pixel_features

# No lighting, cast, clutter or noise, every cue typical: what is left is the critter.
CLEAN = CrittersConfig(
    colour_p=1.0,
    texture_p=1.0,
    context_p=1.0,
    lighting=(1.0, 1.0),
    cast=0.0,
    clutter=(0, 0),
    noise_std=0.0,
)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b, c = make_critters(40, seed=3), make_critters(40, seed=3), make_critters(40, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_shapes_dtypes_and_balance():
    batch = make_critters(100, resolution=48, seed=1)
    assert batch.images.shape == (100, 3, 48, 48) and batch.images.dtype == torch.uint8
    assert batch.labels.dtype == torch.int64 and batch.masks.dtype == torch.bool
    assert torch.equal(torch.bincount(batch.labels, minlength=10), torch.full((10,), 10))
    assert (batch.masks.flatten(1).sum(1) > 20).all(), "every critter is clearly visible"


def test_every_cue_value_is_shared_by_two_classes_and_two_cues_name_the_class():
    table = [critter_cues(i) for i in range(10)]
    for cue, values in CUES.items():
        counts = [sum(row[cue] == v for row in table) for v in values]
        assert counts == [2] * 5, f"{cue}: each value belongs to exactly two classes"
    for a, b in itertools.combinations(CUES, 2):
        pairs = {(row[a], row[b]) for row in table}
        assert len(pairs) == 10, f"{a} and {b} together identify every class"
    assert critter_cues("bee") == {
        "outline": "long",
        "colour": "yellow",
        "texture": "stripes",
        "context": "sand",
    }


def test_mask_is_exactly_the_painted_critter():
    # Plain-textured classes are painted in one flat colour: inside the mask every pixel
    # has it, outside none does (the background is a smooth gradient of other colours).
    batch = make_critters(40, resolution=32, seed=5, config=CLEAN, classes=("apple", "thistle"))
    for image, mask in zip(batch.images, batch.masks, strict=True):
        pixels = image.permute(1, 2, 0)
        colours = pixels[mask].unique(dim=0)
        assert len(colours) == 1
        assert torch.equal((pixels == colours[0]).all(-1), mask)


def _inside_mean(batch) -> torch.Tensor:
    m = batch.masks.unsqueeze(1).float()
    return (batch.images.float() * m).sum((2, 3)) / m.sum((2, 3))


def test_colour_cue_is_in_the_pixels():
    batch = make_critters(200, seed=6, config=CLEAN)
    rgb = _inside_mean(batch)
    for cls, colour in ((0, "red"), (3, "blue"), (6, "green")):
        assert critter_cues(cls)["colour"] == colour
        mean = rgb[batch.labels == cls].mean(0)
        channel = {"red": 0, "green": 1, "blue": 2}[colour]
        assert mean.argmax() == channel, f"{CRITTER_CLASSES[cls]}: {mean.tolist()}"


def test_texture_cue_is_in_the_pixels():
    # Stripes and checkers vary inside the critter; plain bodies do not.
    batch = make_critters(200, seed=7, config=CLEAN)
    grey = batch.images.float().mean(1)
    spread = torch.stack([grey[i][batch.masks[i]].std() for i in range(len(batch))])
    plain = spread[(batch.labels == 0) | (batch.labels == 8)]
    patterned = spread[(batch.labels == 1) | (batch.labels == 4)]  # stripes, checker
    assert plain.max() < 1.0 < 10 < patterned.min()


@pytest.mark.parametrize("strength", [1.0, 0.2])
def test_context_cue_is_in_the_background(strength):
    """At full strength the palettes are plain to see; at the default 0.2 they are faint
    but still in the same order (grass green, night the darkest, sky the bluest)."""
    batch = make_critters(200, seed=8, config=replace(CLEAN, context_strength=strength))
    m = (~batch.masks).unsqueeze(1).float()
    background = (batch.images.float() * m).sum((2, 3)) / m.sum((2, 3))
    grass = background[batch.labels == 0].mean(0)  # apple: grass
    night = background[batch.labels == 4].mean(0)  # crate: night
    sky = background[batch.labels == 2].mean(0)  # clover: sky
    assert grass.argmax() == 1 and sky.argmax() == 2
    assert night.sum() < grass.sum() < sky.sum()
    if strength == 1.0:
        assert night.max() < 60


def test_context_strength_shrinks_the_backgrounds_towards_one_palette():
    def background_means(strength: float) -> torch.Tensor:
        cfg = replace(CLEAN, context_strength=strength)
        batch = make_critters(200, seed=8, config=cfg)
        m = (~batch.masks).unsqueeze(1).float()
        means = (batch.images.float() * m).sum((2, 3)) / m.sum((2, 3))
        return torch.stack([means[batch.labels == c].mean(0) for c in (0, 2, 4)])  # grass, sky, night

    spread = {s: background_means(s).std(dim=0).mean().item() for s in (1.0, 0.35, 0.0)}
    assert spread[1.0] > 2 * spread[0.35] > 0 and spread[0.0] < 3, spread
    # the default is the weak context, 0.2
    assert torch.equal(make_critters(20, seed=4).images,
                       make_critters(20, seed=4, config=CrittersConfig(context_strength=0.2)).images)


def test_untypical_cues_happen_at_the_configured_rate():
    cfg = CrittersConfig(colour_p=0.0, texture_p=1.0, context_p=1.0)
    batch = make_critters(300, seed=9, config=cfg)
    rgb = _inside_mean(batch)
    # With colour_p = 0 a class's colour is random: red classes are no longer red.
    red = rgb[(batch.labels == 0) | (batch.labels == 9)]
    assert (red.argmax(1) == 0).float().mean() < 0.6


def test_raw_pixels_stay_weak():
    # The fitness bar of the dataset (README): raw-pixel k-NN at most 45 % on the split
    # every chapter uses. The measured 41.6 % also pins the generator's output.
    train, test = critters_splits(5000, 1000, seed=0)
    acc = knn_accuracy(
        pixel_features(train.images), train.labels, pixel_features(test.images), test.labels
    )["top1"]
    assert acc <= 45
    assert abs(acc - 41.6) <= 0.3


def test_stream_is_deterministic_and_resumes():
    stream = CrittersStream(8, seed=2)
    it = iter(stream)
    first, second = next(it), next(it)
    assert torch.equal(first.images, stream.batch(0).images)
    assert torch.equal(next(iter(stream.at_step(1))).images, second.images)
    assert not torch.equal(first.images, second.images)


def test_scenes_have_disjoint_masks_and_consistent_counts():
    scenes = make_critter_scenes(30, resolution=64, seed=1)
    assert scenes.images.shape == (30, 3, 64, 64)
    active = scenes.labels >= 0
    assert torch.equal(active.sum(1), scenes.counts)
    assert (scenes.masks.sum(1) <= 1).all(), "visible masks do not overlap"
    assert not scenes.masks[~active].any(), "missing instances have empty masks"
    assert (scenes.parents == -1).all()


def test_procedural_datasets_by_name():
    a = make_procedural("critters", 10, seed=1)
    assert torch.equal(a.images, make_critters(10, seed=1).images)
    tr, te = procedural_splits("critters", 20, 10)
    ref_tr, ref_te = critters_splits(20, 10)
    assert torch.equal(tr.images, ref_tr.images) and torch.equal(te.images, ref_te.images)
    assert isinstance(procedural_stream("critters", 4), CrittersStream)
    with pytest.raises(ValueError, match="shortcuts=True exists for 'shapes' only"):
        procedural_stream("critters", 4, shortcuts=True)
    with pytest.raises(ValueError, match="unknown procedural dataset 'cifar10'"):
        make_procedural("cifar10", 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(classes=()), "at least one class"),
        (dict(classes=("apple", "dragon")), r"unknown critter class\(es\) \['dragon'\]"),
        (dict(resolution=4), "resolution must be an integer in"),
        (dict(config=None, n=0), "n must be a positive integer"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    args = {"n": kwargs.pop("n", 4), **kwargs}
    with pytest.raises(ValueError, match=message):
        make_critters(args.pop("n"), **args)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="context_p must be a probability"):
        CrittersConfig(context_p=1.5)
    with pytest.raises(ValueError, match=r"context_strength must lie in \[0, 1\], got -0.5"):
        CrittersConfig(context_strength=-0.5)
    with pytest.raises(ValueError, match="radius must be"):
        CrittersConfig(radius=(0.3, 0.7))
    with pytest.raises(ValueError, match="unknown critter class"):
        critter_cues(12)


def test_single_cue_configs_keep_one_cue_and_randomise_the_rest():
    cfg = single_cue_config("texture")
    assert (cfg.outline_p, cfg.colour_p, cfg.texture_p, cfg.context_p) == (0, 0, 1, 0)
    assert cfg.lighting == CrittersConfig().lighting
    # colour only: the red classes are red again, while with texture only they are not
    red = {}
    for cue in ("colour", "texture"):
        batch = make_critters(300, seed=10, config=single_cue_config(cue))
        rgb = _inside_mean(batch)[(batch.labels == 0) | (batch.labels == 9)]
        red[cue] = (rgb.argmax(1) == 0).float().mean()
    assert red["colour"] > 0.9 > 0.6 > red["texture"]
    with pytest.raises(ValueError, match="unknown cue 'smell'"):
        single_cue_config("smell")


def test_config_fields_given_as_json_lists_become_tuples():
    """A data variant read back from metrics.json or a card (lists) is the same config."""
    from_json = CrittersConfig(radius=[0.2, 0.3], clutter=[4, 8], context_strength=0.5)
    assert from_json == CrittersConfig(radius=(0.2, 0.3), clutter=(4, 8), context_strength=0.5)
    assert isinstance(from_json.radius, tuple) and hash(from_json) == hash(replace(from_json))
