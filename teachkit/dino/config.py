"""The settings of a DINO run: every hyper-parameter, what it does and what value to try.

Each field's ``metadata["help"]`` is the text the command line shows
(``python -m teachkit.train dino --help``), as the official ``main_dino.py`` documents
its arguments. Used by :func:`teachkit.dino.trainer.train_dino`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from teachkit.dino.augment import MultiCropConfig
from teachkit.infra.config_checks import check_field_types, check_range, check_seed
from teachkit.infra.config_fields import config_field
from teachkit.models.registry import ARCHS, check_arch

__all__ = ["DINOConfig", "FREE_TO_CHANGE"]

#: Settings that may differ between the sessions of one run without a warning (the resume
#: policy of :func:`teachkit.infra.run.resume_run`): where the run is written and runs, when it
#: stops, saves, reads metrics back or runs the k-NN monitor, and whether it compiles or
#: guards against collapse; none changes the maths of a step. Every other change is
#: named in a warning when the run resumes.
FREE_TO_CHANGE: tuple[str, ...] = (
    "out_dir",
    "device",
    "compile",
    "channels_last",
    "max_steps",
    "checkpoint_every",
    "log_every",
    "knn_every",
    "knn_k",
    "collapse_guard",
)


@dataclass
class DINOConfig:
    """Every setting of a DINO run. Defaults are the official ones (ViT-S/16 recipe)
    where they make sense at 32 px; ``metadata["help"]`` of each field says what it does
    and what to try, and is the help text of the command line.

    Every field is checked when the config is made (:mod:`teachkit.infra.config_checks`): a
    wrong type is a TypeError (``True`` is not a batch size), a value out of range or
    NaN a ValueError naming the field. ``crops`` may be given as a dict of
    :class:`MultiCropConfig` fields (as :meth:`to_dict` writes it); it becomes one.
    """

    # ---- model --------------------------------------------------------------------
    arch: str = config_field(
        "vit_tiny",
        f"Backbone when none is passed: one of {', '.join(ARCHS)}. vit_nano or small_cnn "
        "train on a CPU; vit_small is DINO's main model.",
        choices=ARCHS,
    )
    patch_size: int = config_field(
        4,
        "ViT patch side in pixels. Smaller is better but costs more: 16 on ImageNet (224 px), "
        "4 at 32 px (an 8 x 8 grid; 4 x 4 for 16 px local crops).",
    )
    conv_stem: bool = config_field(
        False,
        "ViTs only: a few stride-2 3x3 convolutions instead of the one-shot patchify layer "
        "(Xiao et al. 2021); small ViTs learn much faster with it on small images.",
    )
    drop_path_rate: float = config_field(
        0.1, "Stochastic depth of the student ViT (teacher: 0). 0.1 for ViT-S; 0 for tiny ones."
    )
    out_dim: int = config_field(
        65536,
        "K, the number of prototypes of the head. 65536 in the paper for ImageNet; "
        "1024-4096 is enough for CIFAR-10 or shapes and much cheaper.",
    )
    hidden_dim: int = config_field(
        2048, "Width of the head's MLP (2048 in the paper; 512 for tiny models)."
    )
    bottleneck_dim: int = config_field(
        256, "Size of the L2-normalised embedding before the prototypes (256)."
    )
    use_bn_in_head: bool = config_field(
        False,
        "BatchNorm in the head's MLP. Off for ViTs (official); it breaks the exact "
        "equivalence between one process and several.",
    )
    norm_last_layer: bool = config_field(
        True,
        "Fix the weight-norm scales of the last layer to 1. True is stable; False trains "
        "slightly better for ViT-S/16 but can be unstable.",
    )
    # ---- teacher and loss -----------------------------------------------------------
    momentum_teacher: float = config_field(
        0.996,
        "Initial EMA momentum of the teacher, raised to 1 by a cosine schedule. Higher with "
        "small batches: 0.9995 for batch 256.",
    )
    momentum_teacher_end: float = config_field(
        1.0,
        "EMA momentum at the end of the cosine schedule (1). Ablation: momentum_teacher=0 "
        "with momentum_teacher_end=0 makes the teacher a copy of the student (no EMA).",
    )
    centering: bool = config_field(
        True,
        "Subtract the running centre from the teacher logits. Ablation: without it "
        "sharpening alone collapses every image onto one prototype (entropy -> 0).",
    )
    warmup_teacher_temp: float = config_field(
        0.04,
        "Teacher temperature at epoch 0: 0.04 works in most cases; lower it if the loss "
        "does not decrease.",
    )
    teacher_temp: float = config_field(
        0.04,
        "Teacher temperature after the warm-up. Above 0.07 is unstable. The paper warms up "
        "0.04 -> 0.07 over 30 epochs; the official default stays at 0.04.",
    )
    warmup_teacher_temp_epochs: int = config_field(
        0, "Epochs of linear teacher-temperature warm-up (0: none; 30 in the paper)."
    )
    student_temp: float = config_field(0.1, "Student temperature (0.1).")
    center_momentum: float = config_field(0.9, "EMA momentum of the teacher centre (0.9).")
    # ---- optimisation ---------------------------------------------------------------
    batch_size: int = config_field(
        64,
        "Images per step and process (the global batch is this x processes). 64 per GPU "
        "officially; 1024 in the best runs.",
    )
    epochs: int = config_field(
        100, "Length of training in epochs; the schedules span epochs x steps_per_epoch."
    )
    steps_per_epoch: int | None = config_field(
        None,
        "Steps per epoch; required for an endless stream (e.g. ShapesStream), otherwise len(data).",
    )
    lr: float = config_field(
        5e-4,
        "Peak learning rate for a batch of 256, scaled linearly with the global batch (0.0005).",
    )
    min_lr: float = config_field(1e-6, "Learning rate at the end of the cosine decay (1e-6).")
    warmup_epochs: int = config_field(
        10, "Epochs of linear learning-rate warm-up (10; about a tenth of a short run)."
    )
    weight_decay: float = config_field(
        0.04, "Initial weight decay (0.04); a small value early helps ViTs."
    )
    weight_decay_end: float = config_field(0.4, "Final weight decay of the cosine schedule (0.4).")
    clip_grad: float = config_field(
        3.0,
        "Max gradient norm of each parameter tensor (official per-parameter clipping); "
        "0 disables. 0.3-1.0 can help large ViTs.",
    )
    freeze_last_layer: int = config_field(
        1,
        "Epochs during which the head's last layer is not updated (1); raise it if the loss "
        "does not decrease.",
    )
    # ---- multi-crop -----------------------------------------------------------------
    crops: MultiCropConfig = field(
        default_factory=MultiCropConfig,
        metadata={"help": "The multi-crop recipe (teachkit.dino.augment.MultiCropConfig)."},
    )
    # ---- run ------------------------------------------------------------------------
    seed: int = config_field(0, "Seed of initialisation, data order and crops.")
    device: str | None = config_field(
        None, "'cpu', 'cuda', 'cuda:1', 'mps'; None picks (cuda:LOCAL_RANK under torchrun)."
    )
    precision: str = config_field(
        "auto",
        "'auto' (bf16 on Ampere+ GPUs, fp16 + loss scaling on older ones, fp32 on CPU), or "
        "force 'fp32', 'bf16', 'fp16'. Try fp32 if the loss turns NaN.",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    compile: bool = config_field(
        False,
        "torch.compile student and teacher (faster on recent GPUs after a minute of "
        "compiling; falls back to eager with a warning if compiling fails).",
    )
    channels_last: bool = config_field(
        False,
        "Keep student and teacher weights in channels-last memory order: convolutions run "
        "on the CPU's fast path (the small CNN's step about 1.5x faster on 2 cores); the "
        "same maths, rounded differently. No effect on a ViT's linear layers.",
    )
    out_dir: str | None = config_field(
        None,
        "Directory for checkpoint.pt and metrics.json; a run restarted with the same "
        "directory resumes. A Google Drive path on Colab. None: nothing is written.",
    )
    checkpoint_every: int = config_field(
        500, "Save a checkpoint every this many steps (and at the end)."
    )
    log_every: int = config_field(
        10, "Read metrics back from the device every this many steps (each read is a sync)."
    )
    max_steps: int | None = config_field(
        None,
        "Stop (with a checkpoint) after this global step, leaving the schedules as for the "
        "full run: split a long run into sessions.",
    )
    knn_every: int = config_field(
        1, "Run the k-NN monitor every this many epochs (when eval_data is given)."
    )
    knn_k: int = config_field(20, "Neighbours of the k-NN monitor (20).")
    collapse_guard: bool = config_field(
        True,
        "Stop with UniformCollapseError when, after the learning-rate warm-up, the teacher "
        "entropy stays within 0.05 of ln K for a whole epoch (uniform collapse: every "
        "image gets the same flat distribution). Turn off for the centering-only ablation.",
    )

    def __post_init__(self) -> None:
        if isinstance(self.crops, dict):
            self.crops = _crops_from_dict(self.crops)
        if not isinstance(self.crops, MultiCropConfig):
            raise TypeError(
                f"crops must be a MultiCropConfig (or a dict of its fields), got {self.crops!r}"
            )
        check_field_types(self)
        check_arch(self.arch)
        positive = (
            "patch_size",
            "out_dim",
            "hidden_dim",
            "bottleneck_dim",
            "batch_size",
            "epochs",
            "checkpoint_every",
            "log_every",
            "knn_every",
            "knn_k",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must lie in [0, epochs={self.epochs}]"
            )
        if not 0 <= self.warmup_teacher_temp_epochs <= self.epochs:
            raise ValueError(
                f"warmup_teacher_temp_epochs ({self.warmup_teacher_temp_epochs}) "
                f"must lie in [0, epochs={self.epochs}]"
            )
        for name in ("momentum_teacher", "momentum_teacher_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if min(self.teacher_temp, self.warmup_teacher_temp, self.student_temp) <= 0:
            raise ValueError(
                "temperatures must be > 0, got teacher "
                f"{self.warmup_teacher_temp} -> {self.teacher_temp}, "
                f"student {self.student_temp}"
            )
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(
                f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.precision!r}"
            )
        if self.clip_grad < 0 or self.lr <= 0:
            raise ValueError(f"need clip_grad >= 0 and lr > 0, got {self.clip_grad}, {self.lr}")
        check_range("drop_path_rate", self.drop_path_rate, low=0, high=1, high_open=True)
        check_range("center_momentum", self.center_momentum, low=0, high=1)
        for name in ("min_lr", "weight_decay", "weight_decay_end", "freeze_last_layer"):
            check_range(name, getattr(self, name), low=0)
        check_seed("seed", self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the crops config as a nested dict), for JSON and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DINOConfig:
        """The config of :meth:`to_dict`'s plain values (``crops`` a nested dict), e.g.
        read back from a checkpoint, ``metrics.json`` or a model card."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown DINOConfig fields {sorted(unknown)}")
        return cls(**values)


def _crops_from_dict(values: dict[str, Any]) -> MultiCropConfig:
    """``crops`` given as a dict (from JSON): the :class:`MultiCropConfig` of its fields."""
    unknown = sorted(set(values) - {f.name for f in fields(MultiCropConfig)})
    if unknown:
        raise ValueError(
            f"crops has unknown fields {unknown}; expected MultiCropConfig fields "
            f"({', '.join(f.name for f in fields(MultiCropConfig))})"
        )
    return MultiCropConfig(**values)
