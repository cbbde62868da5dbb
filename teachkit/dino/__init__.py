"""DINO: self-distillation with no labels (Caron et al., 2021).

One module per idea of the paper, in the order the course meets them:

* :mod:`~teachkit.dino.augment`: the multi-crop recipe, one image at a time;
* :mod:`~teachkit.dino.batched_augment`: the same recipe on a batch, on the device;
* :mod:`~teachkit.dino.head`: the projection head and the multi-crop wrapper;
* :mod:`~teachkit.dino.loss`: centring, sharpening and the cross-view cross-entropy;
* :mod:`~teachkit.dino.teacher`: the momentum (EMA) teacher;
* :mod:`~teachkit.dino.schedules`: learning-rate, weight-decay, momentum, temperature;
* :mod:`~teachkit.dino.step`: one step of Algorithm 1 (:func:`dino_step`), the pieces above
  put together;
* :mod:`~teachkit.dino.trainer`: the training loop (:func:`train_dino`), with
  :mod:`~teachkit.dino.config` (its settings), :mod:`~teachkit.dino.inputs` (what it
  accepts) and :mod:`~teachkit.dino.monitor` (the k-NN monitor and collapse guard);
* :mod:`~teachkit.dino.presets`: the named recipes of ``--preset``;
* :mod:`~teachkit.dino.export`: a finished (or stopped) run shipped as a checkpoint with
  its model card; :mod:`~teachkit.dino.shipped`: a shipped backbone loaded back, with the
  random initialisation it started from;
* :mod:`~teachkit.dino.cli`: the ``dino`` command of
  ``python -m teachkit.train``.
"""

from teachkit.data.stream import ImageBatches
from teachkit.dino.augment import MultiCropAugmentation, MultiCropConfig, ViewParams
from teachkit.dino.batched_augment import BatchedMultiCrop
from teachkit.dino.config import DINOConfig
from teachkit.dino.head import DINOHead, MultiCropWrapper, cancel_gradients_last_layer
from teachkit.dino.loss import DINOLoss, DINOLossOutput
from teachkit.dino.schedules import (
    clip_gradients,
    cosine_schedule,
    get_params_groups,
    scaled_lr,
    teacher_temp_schedule,
)
from teachkit.dino.step import dino_step
from teachkit.dino.teacher import build_teacher, update_teacher
from teachkit.dino.trainer import History, train_dino
from teachkit.infra.run import NonFiniteLossError

__all__ = [
    "BatchedMultiCrop",
    "DINOConfig",
    "DINOHead",
    "DINOLoss",
    "DINOLossOutput",
    "History",
    "ImageBatches",
    "MultiCropAugmentation",
    "MultiCropConfig",
    "MultiCropWrapper",
    "NonFiniteLossError",
    "ViewParams",
    "build_teacher",
    "cancel_gradients_last_layer",
    "clip_gradients",
    "cosine_schedule",
    "dino_step",
    "get_params_groups",
    "scaled_lr",
    "teacher_temp_schedule",
    "train_dino",
    "update_teacher",
]
