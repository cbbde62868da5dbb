"""DINO's optimisation recipe: per-step schedules, parameter groups, gradient clipping.

(DINO paper, Sec. 3.2 and Appendix; official ``utils.cosine_scheduler``.)

* learning rate: ``lr = 0.0005 x batch_size / 256`` (linear scaling rule), reached by a
  linear warm-up over the first 10 epochs, then a cosine decay to ``min_lr = 1e-6``;
* weight decay: cosine from 0.04 to 0.4 (more regularisation late in training);
* teacher momentum: cosine from 0.996 to 1 (the teacher freezes at the end);
* teacher temperature: 0.04, or a linear warm-up 0.04 -> 0.07 over 30 epochs;
* no weight decay on biases and normalisation parameters;
* gradient clipping at 3.0, per parameter tensor (see :func:`clip_gradients`).

Schedules are NumPy arrays indexed by the global step (or epoch), computed once:
reading ``schedule[step]`` in the training loop costs nothing and needs no GPU sync.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "cosine_schedule",
    "teacher_temp_schedule",
    "scaled_lr",
    "get_params_groups",
    "clip_gradients",
]


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """Per-step values: linear warm-up ``start_warmup -> base``, then cosine ``base -> final``.

    ``v[i] = final + (base - final) (1 + cos(pi i / n)) / 2`` for the n post-warm-up
    steps, as the official ``cosine_scheduler`` (whose arguments are epochs x steps).

    Args:
        base: value at the end of the warm-up (peak learning rate, initial momentum ...).
        final: value approached at the last step.
        total_steps: length of the schedule (epochs x steps per epoch).
        warmup_steps: steps of linear warm-up (0: none).
        start_warmup: value at step 0 of the warm-up.

    Returns:
        float64 array of shape (total_steps,).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    warmup = np.linspace(start_warmup, base, warmup_steps)
    i = np.arange(total_steps - warmup_steps)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / max(len(i), 1)))
    return np.concatenate([warmup, cosine])


def teacher_temp_schedule(
    warmup_teacher_temp: float, teacher_temp: float, warmup_epochs: int, epochs: int
) -> np.ndarray:
    """Per-epoch teacher temperature: linear ``warmup_teacher_temp -> teacher_temp`` over
    ``warmup_epochs``, then constant (official DINOLoss). Paper: 0.04 -> 0.07 in 30 epochs.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(
            f"warmup_teacher_temp_epochs ({warmup_epochs}) must lie in [0, epochs={epochs}]"
        )
    if min(warmup_teacher_temp, teacher_temp) <= 0:
        raise ValueError(
            f"teacher temperatures must be > 0, got {warmup_teacher_temp}, {teacher_temp}"
        )
    return np.concatenate(
        [
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs),
            np.full(epochs - warmup_epochs, teacher_temp),
        ]
    )


def scaled_lr(base_lr: float, batch_size: int, reference: int = 256) -> float:
    """Linear scaling rule: ``base_lr x batch_size / 256`` (batch over all processes)."""
    return base_lr * batch_size / reference


def get_params_groups(model: nn.Module) -> list[dict]:
    """Two optimiser groups: weights (decayed) and biases / norm parameters (not).

    A parameter is not decayed when its name ends in ``.bias`` or it is 1-D (LayerNorm
    and BatchNorm scales, the weight-norm scales of the head). Frozen parameters
    (``requires_grad=False``) are left out. Group 0 is the decayed one: the trainer
    sets its weight decay from the schedule each step; group 1 keeps 0.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def clip_gradients(model: nn.Module, max_norm: float) -> Tensor:
    """Clip each parameter's gradient to L2 norm ``max_norm`` on its own.

    This is the official DINO ``clip_gradients``: per parameter tensor, *not* the global
    norm of ``torch.nn.utils.clip_grad_norm_`` (which rescales all gradients together).
    Runs as fused ``torch._foreach`` ops without reading norms back to the host.

    Returns:
        (n_params,) the gradient norms before clipping.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0 (use clip_grad=0 to disable), got {max_norm}")
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack(torch._foreach_norm(grads))
    coef = (max_norm / (norms + 1e-6)).clamp_(max=1.0)
    torch._foreach_mul_(grads, list(coef.unbind()))
    return norms
