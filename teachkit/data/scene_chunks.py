"""Training scenes by step: fresh chunks of shapes or critters scenes, each scene used once.

Chapter 6: SAM, encoder to decoder -- section "Training a tiny SAM" (the data). The SAM
trainer (:mod:`teachkit.sam.train`) and the U-Net baseline (:mod:`teachkit.sam.unet`)
both draw their batches from :class:`SceneChunks`, so the two see the same scenes.

Scenes come from the dataset's ``scenes`` (:data:`teachkit.data.datasets.SCENE_DATASETS`:
:func:`teachkit.data.shapes.make_scenes` or :func:`teachkit.data.critters.make_critter_scenes`),
a chunk at a time, seeded by ``(seed, chunk)``
(:func:`teachkit.data.stream.mix_seed`): the batch of a step is a pure function of
``(seed, step)``, which is what lets a resumed run match an uninterrupted one.

    >>> data = SceneChunks(4, chunk_size=512, resolution=128, seed=0)
    >>> data.batch(step).images.shape     # 4 x 3 x 128 x 128 uint8
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from teachkit.data.datasets import SCENE_DATASETS
from teachkit.data.shapes import SceneBatch
from teachkit.data.stream import mix_seed

__all__ = ["SceneChunks"]


class SceneChunks:
    """Training scenes by step: chunks of fresh scenes, each scene used once.

    Step ``s`` uses slice ``s mod k`` of chunk ``s // k`` (``k = chunk_size //
    batch_size``); chunk ``c`` is ``make_scenes(..., seed=mix(seed, c))``. The batch of a
    step is therefore a pure function of ``(seed, step)``: a resumed run sees exactly
    what an uninterrupted one would. The current chunk is cached.

    Args:
        batch_size: scenes per step.
        chunk_size: scenes drawn at once (rounded down to a multiple of ``batch_size``).
        resolution: image side.
        seed: base seed.
        classes: class names allowed in the scenes (``None``: all; only for a dataset
            with ``class_subsets``, shapes).
        nest_probability: share of scenes with a nested pair (with ``class_subsets``).
        device: where scenes are drawn.
        dataset: a name of :data:`~teachkit.data.datasets.SCENE_DATASETS`: ``"shapes"``
            (:func:`~teachkit.data.shapes.make_scenes`) or ``"critters"``
            (:func:`~teachkit.data.critters.make_critter_scenes`).
    """

    def __init__(
        self,
        batch_size: int,
        *,
        chunk_size: int = 512,
        resolution: int = 128,
        seed: int = 0,
        classes: Sequence[str] | None = None,
        nest_probability: float = 0.3,
        device: torch.device | str = "cpu",
        dataset: str = "shapes",
    ) -> None:
        if not 1 <= batch_size <= chunk_size:
            raise ValueError(f"need 1 <= batch_size <= chunk_size, got {batch_size}, {chunk_size}")
        if dataset not in SCENE_DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(SCENE_DATASETS)}")
        self.record = SCENE_DATASETS[dataset]
        if not self.record.class_subsets and classes is not None:
            raise ValueError(f"{dataset} scenes draw every class; pass classes=None")
        self.dataset = dataset
        self.batch_size = batch_size
        self.steps_per_chunk = chunk_size // batch_size
        self.resolution, self.seed = resolution, seed
        self.classes = tuple(classes) if classes is not None else None
        self.nest_probability = nest_probability
        self.device = torch.device(device)
        self._cached: tuple[int, SceneBatch] | None = None

    def chunk(self, index: int) -> SceneBatch:
        """Chunk ``index`` (drawn, or the cached one)."""
        if self._cached is None or self._cached[0] != index:
            common = dict(
                resolution=self.resolution, seed=mix_seed(self.seed, index), device=self.device
            )
            n = self.steps_per_chunk * self.batch_size
            if self.record.class_subsets:
                common.update(classes=self.classes, nest_probability=self.nest_probability)
            self._cached = (index, self.record.scenes(n, **common))
        return self._cached[1]

    def batch(self, step: int) -> SceneBatch:
        """The ``batch_size`` scenes of step ``step``."""
        chunk, i = divmod(step, self.steps_per_chunk)
        s = self.chunk(chunk)
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return SceneBatch(s.images[sl], s.labels[sl], s.masks[sl], s.counts[sl], s.parents[sl])
