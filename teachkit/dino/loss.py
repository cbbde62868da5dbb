"""The DINO loss: self-distillation with no labels (DINO paper, Eq. 2-4, Algorithm 1).

For a teacher output ``t`` and a student output ``s`` (logits over K prototypes):

    P_t = softmax((t - C) / tau_t)          centred and sharpened teacher
    P_s = softmax(s / tau_s)                student, tau_s = 0.1
    H(P_t, P_s) = - sum_k P_t[k] log P_s[k]  cross-entropy

and over the views of an image (teacher: the 2 global views, student: all views),

    loss = mean over pairs (i in global views, v in all views, v != i) of H(P_t^i, P_s^v)

averaged over the batch. With two views this is Algorithm 1's
``H(t1, s2) / 2 + H(t2, s1) / 2``. Gradients flow into the student only.

**Avoiding collapse.** Two opposite forces keep the teacher from outputting the same
thing for every image: *centring* subtracts ``C``, an exponential moving average of
the teacher's batch-mean logits, so no single prototype can dominate (pushes toward
uniform), and *sharpening* (a low teacher temperature, 0.04) pushes toward one-hot.
``C <- m C + (1 - m) mean(t)``, m = 0.9 (Eq. 4), the mean all-reduced over processes.

Diagnostics returned with the loss (all detached, no host sync):

* ``teacher_entropy``: mean over images of H(P_t), low = confident teacher;
  ln K = uniform (collapse onto the uniform distribution).
* ``batch_entropy``: H(mean over the batch of P_t), ln K when the batch spreads over
  all prototypes; near 0 = every image gets the same prototype (collapse onto one).
* ``kl``: KL(P_t || P_s) = loss - H(P_t) over the same pairs; 0 when the student
  matches the teacher. A fully collapsed model has loss = teacher entropy = ln K and
  KL = 0: the loss alone cannot tell learning from collapse, these numbers can.
* ``center_norm``: ||C|| of the centre used in this step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from teachkit.infra.distributed import all_reduce_mean

__all__ = ["DINOLoss", "DINOLossOutput"]


@dataclass
class DINOLossOutput:
    """The loss (with gradient) and detached diagnostics, all 0-d tensors."""

    loss: Tensor
    teacher_entropy: Tensor
    batch_entropy: Tensor
    kl: Tensor
    center_norm: Tensor


def _as_views(x: Tensor | Sequence[Tensor], name: str) -> Tensor:
    """(V, B, K) from a list of V tensors (B, K) or a stacked tensor."""
    if not isinstance(x, Tensor):
        if len(x) == 0:
            raise ValueError(f"{name} is an empty list of views")
        x = torch.stack(list(x))
    if x.ndim != 3:
        raise ValueError(
            f"{name} must be V views of shape (B, K) (a list, or a tensor (V, B, K)); got "
            f"shape {tuple(x.shape)}. For a concatenated (V*B, K) output use .chunk(V)."
        )
    return x.float()


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student.

    Args:
        out_dim: K, the number of prototypes (size of the centre).
        student_temp: tau_s, 0.1 in the paper.
        center_momentum: m of the centre EMA, 0.9 in the paper.
        centering: subtract the centre from the teacher logits (True). False is the
            "sharpening only" ablation; the centre is still tracked, for diagnostics.
        check_finite: raise a ValueError for teacher outputs that hold NaN or inf,
            before anything is computed (True). It reads a flag back from the device
            every call; the trainer turns it off and stops on a non-finite loss instead
            (it reads the loss every ``log_every`` steps). Either way a non-finite
            teacher batch never enters the centre: its update is skipped, so one bad
            batch cannot poison every later step.

    Example::

        loss_fn = DINOLoss(out_dim=K)
        out = loss_fn(student_out.chunk(n_views), teacher_out.chunk(2), teacher_temp=0.04)
        out.loss.backward()

    The teacher views must be the first views of the student list (global crops
    first): pair (i, i) is the same view and is skipped.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        *,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = centering
        self.check_finite = check_finite
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_output: Tensor | Sequence[Tensor],
        teacher_output: Tensor | Sequence[Tensor],
        teacher_temp: float,
    ) -> DINOLossOutput:
        """Loss over all (teacher view i, student view v != i) pairs; updates the centre.

        Args:
            student_output: V_s views of (B, K) logits, or a tensor (V_s, B, K).
            teacher_output: V_t views (the global ones, V_t <= V_s) of (B, K) logits.
            teacher_temp: tau_t for this step (0.04; see ``teacher_temp_schedule``).
        """
        s, t = _as_views(student_output, "student_output"), _as_views(teacher_output, "teacher")
        if s.shape[1:] != t.shape[1:] or t.shape[2] != self.center.shape[1]:
            raise ValueError(
                f"student views (B, K) = {tuple(s.shape[1:])} and teacher views "
                f"{tuple(t.shape[1:])} must match, with K = out_dim = {self.center.shape[1]}"
            )
        if t.shape[0] > s.shape[0] or s.shape[0] < 2:
            raise ValueError(
                f"need at least 2 student views and no more teacher views "
                f"({t.shape[0]}) than student views ({s.shape[0]})"
            )
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        if self.check_finite and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(
                f"teacher_output has {bad} non-finite value(s) (NaN or inf); the centre was "
                "not updated. Check the teacher's input images and weights (a diverged "
                "run: lower the learning rate)"
            )
        n_t, batch = t.shape[0], t.shape[1]
        center_norm = self.center.norm()
        t = t.detach()
        centred = t - self.center if self.centering else t
        teacher_logp = F.log_softmax(centred / teacher_temp, dim=-1)
        teacher_p = teacher_logp.exp()
        student_logp = F.log_softmax(s / self.student_temp, dim=-1)
        # cross[i, v] = mean over the batch of H(P_t^i, P_s^v)
        cross = -torch.einsum("tbk,vbk->tv", teacher_p, student_logp) / batch
        # skip the same-view pairs (i, i); a mask, not indexing: no GPU -> host sync
        pairs = 1.0 - torch.eye(n_t, s.shape[0], device=s.device)
        loss = (cross * pairs).sum() / pairs.sum()
        with torch.no_grad():
            entropy = -(teacher_p * teacher_logp).sum(-1).mean(-1)  # (V_t,)
            # each teacher view enters the same number of pairs: KL = CE - mean H(P_t)
            kl = loss.detach() - entropy.mean()
            batch_p, new_center = self._update_center(t, teacher_p)
            batch_entropy = -(batch_p * batch_p.clamp_min(1e-30).log()).sum()
        self.center = new_center
        return DINOLossOutput(loss, entropy.mean(), batch_entropy, kl, center_norm)

    @torch.no_grad()
    def _update_center(self, teacher_logits: Tensor, teacher_p: Tensor) -> tuple[Tensor, Tensor]:
        """EMA of the batch-mean teacher logits (all processes); also the mean P_t.

        A batch whose mean logits are not finite leaves the centre as it was (chosen on
        the device, without a sync): NaN would otherwise stay in the EMA for good."""
        k = teacher_logits.shape[-1]
        means = torch.cat([teacher_logits.reshape(-1, k).mean(0), teacher_p.reshape(-1, k).mean(0)])
        means = all_reduce_mean(means)  # equal per-process batches: mean of means
        batch_center, batch_p = means[:k], means[k:]
        m = self.center_momentum
        updated = self.center * m + batch_center.unsqueeze(0) * (1 - m)
        return batch_p, torch.where(torch.isfinite(batch_center).all(), updated, self.center)
