"""Named DINO recipes: the runs the course makes, one ``--preset`` each.

``python -m teachkit.train dino --preset NAME`` starts from the preset's values; every
flag typed after it overrides one (``--preset curve --no-centering`` is the curve recipe
without centering). A preset holds fields of :class:`~teachkit.dino.config.DINOConfig`,
of :class:`~teachkit.dino.augment.MultiCropConfig`, of
:class:`~teachkit.data.critters.CrittersConfig` (the data variant) and the run-level
settings of the command line (``dataset``, ``knn_train``, ``knn_test``), as nanoGPT keeps
its recipes in ``config/*.py`` beside one ``train.py``. Every shipped DINO model's card
names the preset and the flags that made it (``tests/test_shipped_models.py`` checks
that the line rebuilds the card's config).

=====================  ===========================================================
preset                 what it is for
=====================  ===========================================================
``quick``              two CPU cores, a few minutes: the small CNN on critters, the
                       recipe that rises fastest (Chapter 3's live run,
                       ``benchmarks/dino_time_to_gain.py``)
``curve``              the 1,000-step learning curve of the critters design log
                       (small CNN, batch 128; Chapter 3's ablations and shortcut lesson)
``cnn_critters``       the shipped small CNN: 4,500 steps of 512 on one GPU
``vit_nano_critters``  the shipped ViT-nano (conv stem): 4,200 steps of 512 on one GPU
``shapes``             the ViT-nano on the procedural shapes (the shapes models, and
                       the shortcut runs with ``--shortcuts``)
``full``               one GPU, hours: ViT-S/4 on CIFAR-10
=====================  ===========================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["CPU_PRESETS", "PRESETS"]

#: The 1,000-step curve: the small CNN, batch 128, 10 epochs of 100 steps (12.9 min on one
#: CPU thread; +11.8 k-NN points over the random init on the default critters).
_CURVE: dict[str, Any] = {
    "dataset": "critters",
    "arch": "small_cnn",
    "out_dim": 1024,
    "hidden_dim": 512,
    "bottleneck_dim": 128,
    "use_bn_in_head": True,
    "batch_size": 128,
    "epochs": 10,
    "steps_per_epoch": 100,
    "warmup_epochs": 1,
    "lr": 0.001,
    "momentum_teacher": 0.99,
    "teacher_temp": 0.04,
    "warmup_teacher_temp": 0.04,
    "local_crops_number": 4,
    "checkpoint_every": 100,
    "knn_train": 5000,
    "knn_test": 1000,
}

#: The shipped models' GPU recipe: the curve's, at batch 512 and 4 warm-up epochs.
_GPU_LONG: dict[str, Any] = {
    **_CURVE,
    "batch_size": 512,
    "warmup_epochs": 4,
    "checkpoint_every": 200,
}

PRESETS: dict[str, dict[str, Any]] = {
    # the curve's recipe on a 300-step schedule (50 warm-up steps) with the k-NN monitor
    # every 50 steps, twice the learning rate and channels-last weights: the fastest rise
    # we measured on two CPU cores (Chapter 3's live run; benchmarks/dino_time_to_gain.py)
    "quick": {
        **_CURVE,
        "lr": 0.002,
        "channels_last": True,
        "epochs": 6,
        "steps_per_epoch": 50,
        "checkpoint_every": 50,
        "knn_train": 2000,
        "knn_test": 1000,
    },
    "curve": _CURVE,
    "cnn_critters": {**_GPU_LONG, "epochs": 45},
    "vit_nano_critters": {
        **_GPU_LONG,
        "arch": "vit_nano",
        "conv_stem": True,
        "patch_size": 4,
        "drop_path_rate": 0.0,
        "lr": 0.002,
        "epochs": 42,
    },
    "shapes": {
        "dataset": "shapes",
        "arch": "vit_nano",
        "patch_size": 4,
        "drop_path_rate": 0.0,
        "out_dim": 1024,
        "hidden_dim": 512,
        "bottleneck_dim": 128,
        "epochs": 2,
        "steps_per_epoch": 40,
        "batch_size": 64,
        "warmup_epochs": 1,
        "local_crops_number": 4,
        "checkpoint_every": 20,
        "knn_train": 1000,
        "knn_test": 500,
    },
    "full": {
        "dataset": "cifar10",
        "arch": "vit_small",
        "patch_size": 4,
        "drop_path_rate": 0.1,
        "out_dim": 65536,
        "epochs": 100,
        "steps_per_epoch": 200,
        "batch_size": 256,
        "warmup_epochs": 10,
        "local_crops_number": 8,
        "checkpoint_every": 500,
        "knn_train": 0,
        "knn_test": 0,
    },
}

#: Presets that run on the CPU unless ``--device`` says otherwise (the others pick the
#: best device: CUDA, then Apple MPS, then the CPU).
CPU_PRESETS: tuple[str, ...] = ("quick", "curve", "shapes")
