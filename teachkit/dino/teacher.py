"""The momentum teacher (DINO paper, Sec. 3.1, Eq. 1; Algorithm 1 line ``gt.params = ...``).

The teacher has the student's architecture but is never trained by gradient descent:
its weights are an exponential moving average (EMA) of the student's,

    theta_t <- lambda theta_t + (1 - lambda) theta_s,

with lambda following a cosine schedule from 0.996 to 1 during training
(:func:`teachkit.dino.schedules.cosine_schedule`). The paper reads this as Polyak-
Ruppert averaging, a model ensemble: the teacher is better than the student
throughout training and guides it.

Buffers (BatchNorm running statistics) are not averaged, as in the official code:
the teacher's own forward passes update them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from teachkit.infra.distributed import unwrap_model

__all__ = ["build_teacher", "update_teacher", "disable_stochastic_layers"]


def disable_stochastic_layers(model: nn.Module) -> nn.Module:
    """Set dropout and stochastic-depth (DropPath) probabilities to 0, in place.

    The official teacher is built with ``drop_path_rate=0``; a deep copy of the
    student would inherit its stochastic depth. Handles ``nn.Dropout*`` (``p``) and
    any module with a ``drop_prob`` attribute (the DropPath of the official ViT and timm).
    """
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
        if isinstance(getattr(m, "drop_prob", None), float):
            m.drop_prob = 0.0
    return model


def build_teacher(student: nn.Module, *, fresh: nn.Module | None = None) -> nn.Module:
    """A teacher starting from the student's weights, with no gradients.

    Args:
        student: the student, DDP-wrapped / compiled or not.
        fresh: optionally a second instance of the same architecture built without
            stochastic depth (the official way); its weights are overwritten. When
            ``None`` the student is deep-copied and :func:`disable_stochastic_layers`.

    Returns:
        The teacher, ``requires_grad=False`` everywhere, in training mode (as the
        official teacher: BatchNorm layers, if any, use batch statistics).
    """
    student = unwrap_model(student)
    if fresh is None:
        teacher = disable_stochastic_layers(copy.deepcopy(student))
    else:
        teacher = fresh
        try:
            teacher.load_state_dict(student.state_dict(), strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"the fresh teacher does not have the student's architecture: {err}"
            ) from None
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.train(student.training)


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA step ``theta_t <- m theta_t + (1 - m) theta_s`` over matching parameters.

    Args:
        teacher: the teacher (plain module).
        student: the student, DDP-wrapped / compiled or not (unwrapped here).
        momentum: lambda in [0, 1]; 1 leaves the teacher unchanged, 0 copies the student.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"teacher momentum must lie in [0, 1], got {momentum}")
    s_params = dict(unwrap_model(student).named_parameters())
    t_params = dict(teacher.named_parameters())
    if s_params.keys() != t_params.keys():
        raise ValueError(
            "teacher and student parameters differ: "
            f"{sorted(s_params.keys() ^ t_params.keys())[:5]}"
        )
    names = list(t_params)
    t_list = [t_params[n] for n in names]
    s_list = [s_params[n].detach().to(t_params[n].dtype) for n in names]
    torch._foreach_lerp_(t_list, s_list, 1.0 - momentum)
