"""The dataset registry: every record is whole, and a new dataset is one record."""

from __future__ import annotations

import inspect

import pytest
import torch

from teachkit.data import datasets
from teachkit.data.datasets import (
    DATASETS,
    SCENE_DATASETS,
    Dataset,
    make_procedural,
    procedural_splits,
    procedural_stream,
)
from teachkit.data.scene_chunks import SceneChunks
from teachkit.data.shapes import CLASSES, ShapesStream, make_scenes, make_shapes, shapes_splits
from teachkit.sam.config import SamTrainConfig
from teachkit.sam.evaluate import eval_scenes

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_record_is_whole(name):
    d = DATASETS[name]
    assert d.name == name and len(d.classes) == len(set(d.classes)) >= 2
    if d.procedural:
        assert d.splits is not None and d.stream is not None and d.load is None
        for key, _ in d.variants:  # every variant is a keyword of the drawing functions
            for fn in (d.make, d.splits, d.stream):
                assert key in inspect.signature(fn).parameters, (name, key, fn)
    else:
        assert d.load is not None and d.scenes is None
    assert set(d.scene_holdout) <= set(d.classes)
    assert not d.scene_holdout or d.class_subsets  # only a subset-able dataset holds out
    assert (name in SCENE_DATASETS) == (d.scenes is not None)
    assert (name in datasets.PROCEDURAL) == d.procedural


def test_a_variant_of_another_dataset_is_named_as_such():
    shortcuts = "shortcuts=True exists for 'shapes' only, not for 'critters'"
    with pytest.raises(ValueError, match=shortcuts):
        make_procedural("critters", 2, shortcuts=True)
    config = r"config= \(a CrittersConfig\) exists for 'critters' only, not for 'shapes'"
    with pytest.raises(ValueError, match=config):
        procedural_splits("shapes", 2, 2, config=object())
    unknown = r"unknown procedural dataset 'cifar10'; expected one of \['shapes', 'critters'\]"
    with pytest.raises(ValueError, match=unknown):
        procedural_stream("cifar10", 4)


def test_a_new_dataset_is_one_record(monkeypatch):
    """Registered once, a dataset reaches the splits, the streams, the SAM config, its
    training scenes and its held-out scenes, with no other edit."""
    toy = Dataset(
        "toy",
        CLASSES,
        make=make_shapes,
        splits=shapes_splits,
        stream=ShapesStream,
        scenes=make_scenes,
        class_subsets=True,
        scene_holdout=("star",),
    )
    monkeypatch.setitem(DATASETS, "toy", toy)
    monkeypatch.setitem(SCENE_DATASETS, "toy", toy)
    train, test = procedural_splits("toy", 20, 10)
    assert len(train.labels) == 20 and len(test.labels) == 10
    assert procedural_stream("toy", 4).batch(0).images.shape == (4, 3, 32, 32)
    cfg = SamTrainConfig(dataset="toy", resolution=64)
    assert cfg.holdout == ("star",) and cfg.class_names == CLASSES
    assert "star" not in cfg.scene_classes
    chunks = SceneChunks(2, chunk_size=4, resolution=64, dataset="toy", classes=cfg.scene_classes)
    labels = chunks.batch(0).labels
    assert CLASSES.index("star") not in labels.tolist()
    scenes = eval_scenes(2, resolution=64, dataset="toy")
    assert torch.equal(scenes.images, eval_scenes(2, resolution=64).images)  # shapes' drawing
    unknown = r"unknown dataset 'mnist'; expected one of \['shapes', 'critters', 'toy'\]"
    with pytest.raises(ValueError, match=unknown):
        eval_scenes(2, dataset="mnist")
