"""One DINO step, as the paper's Algorithm 1 writes it.

Chapter 3: DINO step by step -- section "The whole loop". The trainer
(:func:`teachkit.dino.trainer.train_dino`) calls :func:`dino_step` once per step and adds
what a real run needs around it: the schedules, the augmentation, checkpoints, logging,
the k-NN monitor, ``torchrun``. The paper's pseudocode (Caron et al., 2021, Algorithm 1),
line by line, is in the comments of :func:`dino_step`::

    gs, gt: student and teacher networks        C: center (K)
    tps, tpt: student and teacher temperatures  l, m: network and center momentum rates
    gt.params = gs.params
    for x in loader:
        x1, x2 = augment(x), augment(x)          # random views
        s1, s2 = gs(x1), gs(x2)                  # student output n-by-K
        t1, t2 = gt(x1), gt(x2)                  # teacher output n-by-K
        loss = H(t1, s2)/2 + H(t2, s1)/2
        loss.backward()                          # back-propagate
        update(gs)                               # student, teacher and center updates
        gt.params = l*gt.params + (1-l)*gs.params
        C = m*C + (1-m)*cat([t1, t2]).mean(dim=0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from teachkit.dino.head import cancel_gradients_last_layer
from teachkit.dino.loss import DINOLoss, DINOLossOutput
from teachkit.dino.schedules import clip_gradients
from teachkit.dino.teacher import update_teacher

__all__ = ["dino_step"]


def _region(name: str) -> contextlib.AbstractContextManager:
    """The profiler label ``dino/<name>`` while a torch profiler records (the regions of
    ``benchmarks/profile_dino_loop.py``); otherwise nothing, at no cost."""
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(f"dino/{name}")
    return contextlib.nullcontext()


def dino_step(
    student: nn.Module,
    teacher: nn.Module,
    loss_fn: DINOLoss,
    optimizer: torch.optim.Optimizer,
    crops: Sequence[Tensor],
    *,
    teacher_temp: float,
    momentum: float,
    clip_grad: float = 0.0,
    epoch: int = 0,
    freeze_last_layer: int = 0,
    scaler: torch.amp.GradScaler | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    student_forward: Callable[[list[Tensor]], Tensor] | None = None,
    teacher_forward: Callable[[list[Tensor]], Tensor] | None = None,
) -> DINOLossOutput:
    """One step of DINO: forward both networks, the loss, the student's update, the EMA.

    Args:
        student: the student, a :class:`~teachkit.dino.head.MultiCropWrapper` (backbone
            and projection head); its forward takes a list of views and returns the
            ``(sum_v B_v, K)`` outputs of all of them, in order.
        teacher: the teacher, the same architecture, without gradients
            (:func:`~teachkit.dino.teacher.build_teacher`).
        loss_fn: the loss with its running centre (updated in place by the call).
        optimizer: the student's optimiser, learning rate and weight decay already set
            for this step.
        crops: the views of one batch, ``(B, 3, H_v, W_v)`` each, the two global views
            first (:class:`~teachkit.dino.batched_augment.BatchedMultiCrop`).
        teacher_temp: the teacher's temperature $\\tau_t$ this step (the sharpening).
        momentum: the teacher's EMA rate $\\lambda$ this step.
        clip_grad: per-parameter gradient-norm clip (the official ``clip_gradients``);
            0 turns it off.
        epoch, freeze_last_layer: the head's last layer gets no gradient while
            ``epoch < freeze_last_layer`` (the official recipe freezes it in epoch 0).
        scaler: the fp16 loss scaler (``None``: no scaling, fp32 or bf16).
        autocast: a factory of the mixed-precision context for the forward passes.
        student_forward, teacher_forward: what to call instead of the modules (a
            compiled or ``DistributedDataParallel``-wrapped student); the weights the EMA
            reads and writes are still ``student``'s and ``teacher``'s.

    Returns:
        The loss's output: ``loss`` (with its graph freed) and the diagnostics
        ``teacher_entropy``, ``batch_entropy``, ``kl``, ``center_norm``.
    """
    if len(crops) < 2:
        raise ValueError(
            f"crops: expected the 2 global views first, then any local views; got {len(crops)}"
        )
    crops = list(crops)
    with autocast():
        with torch.no_grad(), _region("teacher_forward"):
            t = (teacher_forward or teacher)(crops[:2])  # t1, t2 = gt(x1), gt(x2): global only
        with _region("student_forward"):
            s = (student_forward or student)(crops)  # s1, s2 = gs(x1), gs(x2), and every local view
    with _region("loss"):  # loss = H(t1, s2)/2 + H(t2, s1)/2 (all pairs); C = m*C + (1-m)*mean(t)
        out = loss_fn(s.float().chunk(len(crops)), t.float().chunk(2), teacher_temp=teacher_temp)
    with _region("backward"):  # loss.backward()
        optimizer.zero_grad(set_to_none=True)
        (out.loss if scaler is None else scaler.scale(out.loss)).backward()
    with _region("clip"):
        if clip_grad > 0:
            if scaler is not None:
                scaler.unscale_(optimizer)
            clip_gradients(student, clip_grad)
        cancel_gradients_last_layer(student, epoch, freeze_last_layer)
    with _region("optimizer"):  # update(gs)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
    with _region("ema"):  # gt.params = l*gt.params + (1-l)*gs.params
        update_teacher(teacher, student, momentum)
    return out
