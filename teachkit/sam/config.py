"""The settings of a SAM training run: :class:`SamTrainConfig`, and which classes it trains on.

Chapter 6: SAM, encoder to decoder -- section "Training a tiny SAM". Every field documents
what it does and what value to try; that text is also the help of the command line
(``python -m teachkit.train sam --help``, :mod:`teachkit.sam.cli`). The trainer,
:func:`teachkit.sam.train.train_sam`, takes one of these.

Held-out classes: a shapes run never shows the ``holdout`` classes (star, heart and arrow
by default), so :mod:`teachkit.sam.evaluate` can measure seen vs unseen classes;
:func:`seen_class_ids` turns a holdout into the class indices left for training (the U-Net
baseline, :mod:`teachkit.sam.unet`, uses it too) and refuses a holdout that the scenes
cannot honour. Critters scenes draw every class, so a critters run holds out nothing.

    >>> cfg = SamTrainConfig(steps=5000, out_dir="runs/sam")
    >>> cfg.seen_classes        # ('circle', 'square', 'triangle', ...) without the holdout
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from teachkit.data.datasets import SCENE_DATASETS
from teachkit.data.shapes import CLASSES
from teachkit.infra.config_checks import check_field_types, check_range, check_seed
from teachkit.infra.config_fields import config_field
from teachkit.sam.sizes import SAM_CONFIGS

__all__ = [
    "FREE_TO_CHANGE",
    "NESTING_PARENT_CLASSES",
    "PromptingRecipe",
    "SamTrainConfig",
    "seen_class_ids",
]

#: Settings that may differ between the sessions of one run without a warning (the resume
#: policy of :func:`teachkit.infra.run.resume_run`): where the run is written and runs, when it
#: stops or saves, and how often and on how many scenes the mIoU monitor measures; none
#: changes the maths of a step. Every other change is named in a warning when the run
#: resumes.
FREE_TO_CHANGE: tuple[str, ...] = (
    "max_steps",
    "out_dir",
    "device",
    "eval_every",
    "eval_monitor_scenes",
    "checkpoint_every",
)

#: ``make_scenes`` draws every nesting parent as one of these, whatever ``classes`` says.
NESTING_PARENT_CLASSES: tuple[str, ...] = ("circle", "square")


@dataclass(frozen=True)
class PromptingRecipe:
    """How one training step prompts SAM and scores its answers: the 12 settings of a
    run that :mod:`teachkit.sam.interactive_loss` reads (``SamTrainConfig.recipe``).

    The fields and their defaults are :class:`SamTrainConfig`'s of the same names, whose
    help says what each does (the run config takes its defaults from here). Checked when
    made: a value out of range is a ValueError naming the field.
    """

    min_area: int = 16
    prompts_per_image: int = 4
    rounds: int = 3
    box_probability: float = 0.5
    box_noise: float = 0.1
    box_noise_max: float = 4.0
    whole_target_probability: float = 0.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        for name in ("prompts_per_image", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("box_probability", "whole_target_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in (
            "min_area",
            "box_noise",
            "box_noise_max",
            "focal_weight",
            "dice_weight",
            "iou_weight",
            "focal_gamma",
        ):
            check_range(name, getattr(self, name), low=0)
        if self.focal_alpha != -1 and not 0 <= self.focal_alpha <= 1:
            raise ValueError(
                f"focal_alpha must be -1 (no weighting) or lie in [0, 1], got {self.focal_alpha}"
            )


_RECIPE = PromptingRecipe()


@dataclass
class SamTrainConfig:
    """Every setting of a SAM training run; ``metadata["help"]`` says what each does and
    what to try, and is the help text of ``python -m teachkit.train sam``.

    Every field is checked when the config is made (:mod:`teachkit.infra.config_checks`): a
    wrong type is a TypeError, a value out of range or NaN a ValueError naming the field.
    """

    # ---- data ---------------------------------------------------------------------
    resolution: int = config_field(
        128,
        "Image side in pixels, also the model's img_size (a multiple of the 8-pixel "
        "patch). 128 gives a 16 x 16 embedding grid; 64 trains 4x faster but coarser.",
    )
    dataset: str = config_field(
        "shapes",
        "Scenes to train on: 'shapes' (make_scenes: shapes that may nest) or 'critters' "
        "(make_critter_scenes: 2-4 overlapping critters on their contexts; Chapter 7).",
    )
    holdout: tuple[str, ...] | None = config_field(
        None,
        "Shape classes never shown in training, measured apart as 'unseen'. Any of "
        f"{', '.join(CLASSES)} except circle/square (nesting parents); () for none. "
        "None: star, heart, arrow for shapes, none for critters (critters cannot hold out).",
    )
    nest_probability: float = config_field(
        0.3, "Share of scenes with a small shape drawn inside a big one (ambiguous clicks)."
    )
    chunk_size: int = config_field(
        512,
        "Scenes drawn at once (each used once). Drawing costs ~15 ms per 128-px scene; "
        "bigger chunks only mean longer pauses.",
    )
    min_area: int = config_field(
        _RECIPE.min_area,
        "Instances with fewer visible pixels are never prompted (slivers left by occlusion).",
    )
    # ---- prompts ------------------------------------------------------------------
    prompts_per_image: int = config_field(
        _RECIPE.prompts_per_image,
        "Instances prompted per image and step, sharing one image embedding (SAM: up to "
        "64). Cheap: at 128 px the decoder costs a fraction of the encoder.",
    )
    rounds: int = config_field(
        _RECIPE.rounds,
        "Prompting rounds per instance: the first prompt plus rounds-1 corrective clicks "
        "(SAM: 11). 1 trains single-prompt only; 3-4 is enough at this scale.",
    )
    box_probability: float = config_field(
        _RECIPE.box_probability,
        "Share of first prompts that are boxes (SAM: 0.5); the rest are one point.",
    )
    box_noise: float = config_field(
        _RECIPE.box_noise, "Std of the box-corner jitter as a fraction of the box side (SAM: 0.1)."
    )
    box_noise_max: float = config_field(
        _RECIPE.box_noise_max, "Cap of the box jitter in pixels (SAM: 20 at 1024 px)."
    )
    whole_target_probability: float = config_field(
        _RECIPE.whole_target_probability,
        "Share of clicks on a nested pair supervised with the whole (part + big shape) "
        "instead of the clicked visible part. 0 optimises the visible-mask mIoU; try 0.3-0.5 "
        "to teach the 3 outputs part/whole ambiguity.",
    )
    # ---- loss ---------------------------------------------------------------------
    focal_weight: float = config_field(
        _RECIPE.focal_weight, "Weight of the focal loss (SAM: 20, with dice 1)."
    )
    dice_weight: float = config_field(_RECIPE.dice_weight, "Weight of the dice loss (SAM: 1).")
    iou_weight: float = config_field(
        _RECIPE.iou_weight, "Weight of the IoU-prediction MSE (SAM: 1)."
    )
    focal_alpha: float = config_field(
        _RECIPE.focal_alpha,
        "Focal loss weight of object pixels, 1 - alpha for the others; -1: no weighting. "
        "RetinaNet's 0.25 (also SAM 2's code) learned 2x slower here: 1-point mIoU 0.14 vs "
        "0.26 after 300 steps at 64 px.",
    )
    focal_gamma: float = config_field(
        _RECIPE.focal_gamma, "Focal loss focusing exponent (2): 0 is plain BCE."
    )
    # ---- optimisation ---------------------------------------------------------------
    steps: int = config_field(5000, "Optimisation steps; the learning-rate schedule spans them.")
    batch_size: int = config_field(
        4,
        "Images per step (each embedded once per step). 4 images x 4 prompts x 3 rounds "
        "cost about 0.5 s of one CPU core at 128 px.",
    )
    lr: float = config_field(
        3e-3,
        "Peak AdamW learning rate (SAM: 8e-4 at batch 256). 3e-3 learned faster than "
        "1e-3 here (1-point mIoU 0.32 vs 0.26 after 300 steps); lower it if the loss spikes.",
    )
    min_lr: float = config_field(1e-5, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = config_field(100, "Linear learning-rate warm-up steps (SAM: 250).")
    weight_decay: float = config_field(0.01, "AdamW weight decay (SAM: 0.1).")
    clip_grad: float = config_field(1.0, "Max global gradient norm; 0 disables.")
    # ---- run ------------------------------------------------------------------------
    model: str = config_field(
        "vit_tiny_shapes",
        "SAM configuration (teachkit.sam.sizes.SAM_CONFIGS); its img_size is set to resolution.",
    )
    init: str | None = config_field(
        None,
        "Start from this shipped SAM (a teachkit.pretrained name, e.g. sam_tiny_shapes) "
        "instead of random weights: fine-tuning. Its model and resolution must match.",
    )
    seed: int = config_field(0, "Seed of the initial weights, the scenes and the prompts.")
    device: str | None = config_field(None, "'cpu', 'cuda', 'mps'; None picks the best one.")
    out_dir: str | None = config_field(
        None,
        "Directory of checkpoint.pt and metrics.json; a restarted run with the same "
        "directory resumes. None: nothing is written.",
    )
    checkpoint_every: int = config_field(
        200, "Save a checkpoint every this many steps (and at the end)."
    )
    eval_every: int = config_field(
        250,
        "Measure mIoU on eval_monitor_scenes held-out scenes every this many steps "
        "(0: never); it costs a few seconds.",
    )
    eval_monitor_scenes: int = config_field(64, "Held-out scenes of the periodic mIoU monitor.")
    max_steps: int | None = config_field(
        None,
        "Stop (with a checkpoint) after this global step, schedules unchanged: split "
        "a long run into sessions.",
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.dataset not in SCENE_DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; expected one of {list(SCENE_DATASETS)}"
            )
        scenes = SCENE_DATASETS[self.dataset]
        if self.holdout is None:
            self.holdout = scenes.scene_holdout
        self.holdout = tuple(self.holdout)
        if self.holdout and not scenes.class_subsets:
            raise ValueError(
                f"holdout {list(self.holdout)}: {self.dataset} scenes draw every class, so "
                f"nothing can be held out; use holdout=() (--holdout none) with "
                f"dataset={self.dataset!r}"
            )
        for name in (
            "steps",
            "batch_size",
            "chunk_size",
            "checkpoint_every",
            "eval_monitor_scenes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.chunk_size < self.batch_size:
            raise ValueError(
                f"chunk_size ({self.chunk_size}) must be >= batch_size ({self.batch_size})"
            )
        if self.model not in SAM_CONFIGS:
            raise ValueError(
                f"unknown SAM model {self.model!r}; expected one of {sorted(SAM_CONFIGS)}"
            )
        patch = SAM_CONFIGS[self.model].patch_size
        if self.resolution % patch or not 2 * patch <= self.resolution <= 224:
            raise ValueError(
                f"resolution must be a multiple of the {patch}-pixel patch in "
                f"[{2 * patch}, 224], got {self.resolution}"
            )
        _ = self.recipe  # made, hence checked: the prompting and loss settings
        if not 0.0 <= self.nest_probability <= 1.0:
            raise ValueError(f"nest_probability must lie in [0, 1], got {self.nest_probability}")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError(
                f"need lr > 0, min_lr >= 0, warmup_steps >= 0, eval_every >= 0; got "
                f"{self.lr}, {self.min_lr}, {self.warmup_steps}, {self.eval_every}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        for name in ("weight_decay", "clip_grad"):
            check_range(name, getattr(self, name), low=0)
        check_seed("seed", self.seed)
        if self.init is not None:
            from teachkit.pretrained import available

            if self.init not in available():
                raise ValueError(
                    f"unknown shipped model {self.init!r} for init; expected one of "
                    f"{[n for n in available() if n.startswith('sam_')]}"
                )
        if scenes.class_subsets:  # the shapes' hold-out and nesting rules
            seen_class_ids(self.holdout, nest_probability=self.nest_probability)

    @property
    def recipe(self) -> PromptingRecipe:
        """The prompting and loss settings, the only ones the step's loss reads."""
        return PromptingRecipe(**{f.name: getattr(self, f.name) for f in fields(PromptingRecipe)})

    @property
    def class_names(self) -> tuple[str, ...]:
        """The dataset's class names (the indices of its labels)."""
        return SCENE_DATASETS[self.dataset].classes

    @property
    def scene_classes(self) -> tuple[str, ...] | None:
        """The classes the training scenes are drawn from (``None``: every class, for a
        dataset whose scenes cannot leave classes out)."""
        return self.seen_classes if SCENE_DATASETS[self.dataset].class_subsets else None

    @property
    def seen_classes(self) -> tuple[str, ...]:
        """The class names training uses."""
        return tuple(c for c in self.class_names if c not in self.holdout)

    @property
    def seen_class_ids(self) -> tuple[int, ...]:
        """Indices (into :attr:`class_names`) of the classes training uses."""
        return tuple(i for i, c in enumerate(self.class_names) if c not in self.holdout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seen_class_ids(holdout: Sequence[str], *, nest_probability: float = 0.3) -> tuple[int, ...]:
    """Indices (into ``CLASSES``) of the classes left for training after ``holdout``.

    Raises:
        ValueError: an unknown class name (the message lists the valid ones), all classes
            held out, or a nesting-parent class (circle, square) held out while scenes
            nest shapes -- ``make_scenes`` draws every parent as one of them.
    """
    unknown = [c for c in holdout if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown holdout classes {unknown}; expected names from {list(CLASSES)}")
    seen = tuple(i for i, c in enumerate(CLASSES) if c not in holdout)
    if not seen:
        raise ValueError(
            f"holdout {list(holdout)} leaves no class to train on; hold out fewer of "
            f"{list(CLASSES)}"
        )
    parents = sorted(set(holdout) & set(NESTING_PARENT_CLASSES))
    if parents and nest_probability > 0:
        raise ValueError(
            f"cannot hold out {parents}: make_scenes draws every nesting parent as one of "
            f"{list(NESTING_PARENT_CLASSES)}; hold out other classes or set nest_probability=0"
        )
    return seen
