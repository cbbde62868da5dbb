"""DINOLoss against the paper's Algorithm 1, the centre update, diagnostics, schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from teachkit.dino.loss import DINOLoss
from teachkit.dino.schedules import teacher_temp_schedule

K, B = 64, 8


def H(t, s, center, tpt, tps=0.1):
    """Algorithm 1 of the paper, verbatim (with the centre C and temperatures)."""
    t = t.detach()
    s = F.log_softmax(s / tps, dim=1)
    t = F.softmax((t - center) / tpt, dim=1)
    return -(t * s).sum(dim=1).mean()


def reference_loss(student, teacher, center, tpt):
    """Multi-crop generalisation: mean over (teacher global i, student view v != i)."""
    terms = [
        H(t, s, center, tpt) for i, t in enumerate(teacher) for v, s in enumerate(student) if v != i
    ]
    return torch.stack(terms).mean()


def _outputs(n_student: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(B, K, generator=g) for _ in range(n_student)]
    teacher = [torch.randn(B, K, generator=g) for _ in range(2)]
    return student, teacher


def test_two_views_is_algorithm_1():
    student, teacher = _outputs(2)
    loss_fn = DINOLoss(K)
    loss_fn.center = 0.3 * torch.randn(1, K, generator=torch.Generator().manual_seed(9))
    c = loss_fn.center.clone()
    out = loss_fn(student, teacher, teacher_temp=0.04)
    expected = H(teacher[0], student[1], c, 0.04) / 2 + H(teacher[1], student[0], c, 0.04) / 2
    assert abs(out.loss.item() - expected.item()) < 1e-6


@pytest.mark.parametrize("n_local", [0, 4])
def test_multi_crop_loss_and_centre_update_match_the_reference(n_local):
    student, teacher = _outputs(2 + n_local, seed=n_local)
    loss_fn = DINOLoss(K, center_momentum=0.9)
    center = torch.zeros(1, K)
    for step in range(3):  # the centre evolves: C <- 0.9 C + 0.1 mean(teacher)
        student = [s + step for s in student]
        out = loss_fn(student, teacher, teacher_temp=0.07)
        expected = reference_loss(student, teacher, center, 0.07)
        assert abs(out.loss.item() - expected.item()) < 1e-5
        center = 0.9 * center + 0.1 * torch.cat(teacher).mean(0, keepdim=True)
        torch.testing.assert_close(loss_fn.center, center)
        teacher = [t * 1.5 for t in teacher]


def test_without_centering_the_teacher_is_only_sharpened():
    """The "sharpening only" ablation: Algorithm 1 with C = 0, while C is still tracked."""
    student, teacher = _outputs(4, seed=3)
    loss_fn = DINOLoss(K, centering=False)
    loss_fn.center = 5.0 * torch.randn(1, K, generator=torch.Generator().manual_seed(1))
    c = loss_fn.center.clone()
    out = loss_fn(student, teacher, teacher_temp=0.04)
    expected = reference_loss(student, teacher, torch.zeros(1, K), 0.04)
    assert abs(out.loss.item() - expected.item()) < 1e-5
    assert abs(out.loss.item() - reference_loss(student, teacher, c, 0.04).item()) > 1e-2
    expected_center = 0.9 * c + 0.1 * torch.cat(teacher).mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected_center)


def test_stacked_tensors_and_lists_give_the_same_loss():
    student, teacher = _outputs(4)
    a = DINOLoss(K)(student, teacher, teacher_temp=0.04).loss
    b = DINOLoss(K)(torch.stack(student), torch.stack(teacher), teacher_temp=0.04).loss
    assert torch.equal(a, b)


def test_gradients_reach_the_student_only():
    student, teacher = _outputs(3)
    student = [s.requires_grad_() for s in student]
    teacher = [t.requires_grad_() for t in teacher]
    DINOLoss(K)(student, teacher, teacher_temp=0.04).loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_diagnostics_match_their_definitions():
    student, teacher = _outputs(4)
    loss_fn = DINOLoss(K)
    out = loss_fn(student, teacher, teacher_temp=0.04)
    logp = F.log_softmax(torch.stack(teacher) / 0.04, dim=-1)  # centre was 0
    p = logp.exp()
    entropy = -(p * logp).sum(-1).mean()
    mean_p = p.reshape(-1, K).mean(0)
    assert abs(out.teacher_entropy.item() - entropy.item()) < 1e-5
    assert abs(out.batch_entropy.item() - (-(mean_p * mean_p.log()).sum()).item()) < 1e-5
    assert abs(out.kl.item() - (out.loss.item() - entropy.item())) < 1e-5
    assert out.kl.item() >= 0
    assert out.center_norm.item() == 0.0  # norm of the centre used (before the update)
    assert not out.teacher_entropy.requires_grad


def test_a_collapsed_uniform_model_scores_log_k():
    """All outputs equal: the centred teacher is uniform, loss = H = ln K, KL = 0."""
    same = [torch.ones(B, K)] * 4
    out = DINOLoss(K)(same, same[:2], teacher_temp=0.04)
    assert out.loss.item() == pytest.approx(math.log(K), abs=1e-5)
    assert out.teacher_entropy.item() == pytest.approx(math.log(K), abs=1e-5)
    assert abs(out.kl.item()) < 1e-5


def test_sharpening_lowers_the_teacher_entropy():
    student, teacher = _outputs(2)
    cold = DINOLoss(K)(student, teacher, teacher_temp=0.02).teacher_entropy
    warm = DINOLoss(K)(student, teacher, teacher_temp=0.2).teacher_entropy
    assert cold < warm


def test_matches_lightly_dino_loss():
    import lightly.loss as lightly_loss  # a test requirement: a missing reference fails
    student, teacher = _outputs(5, seed=3)
    ours = DINOLoss(K, student_temp=0.1, center_momentum=0.9)
    theirs = lightly_loss.DINOLoss(
        output_dim=K,
        warmup_teacher_temp=0.04,
        teacher_temp=0.04,
        warmup_teacher_temp_epochs=0,
        student_temp=0.1,
        center_momentum=0.9,
    )
    for step in range(3):
        s = [x * (step + 1) for x in student]
        a = ours(s, teacher, teacher_temp=0.04).loss
        b = theirs(teacher_out=teacher, student_out=s, teacher_temp=0.04)
        assert abs(a.item() - b.item()) < 1e-5
        torch.testing.assert_close(ours.center, theirs.center.view(1, K))


def test_bad_inputs_raise_clear_errors():
    student, teacher = _outputs(3)
    loss_fn = DINOLoss(K)
    with pytest.raises(ValueError, match=r"must match, with K = out_dim = 64"):
        loss_fn(student, [t[:, :10] for t in teacher], teacher_temp=0.04)
    with pytest.raises(ValueError, match=r"use \.chunk\(V\)"):
        loss_fn(torch.cat(student), torch.stack(teacher), teacher_temp=0.04)
    with pytest.raises(ValueError, match="teacher_temp must be > 0"):
        loss_fn(student, teacher, teacher_temp=0.0)
    with pytest.raises(ValueError, match="no more teacher views"):
        loss_fn(student[:1], teacher, teacher_temp=0.04)
    with pytest.raises(ValueError, match="center_momentum must lie in"):
        DINOLoss(K, center_momentum=1.5)


def test_teacher_temperature_warms_up_linearly_then_stays():
    sched = teacher_temp_schedule(0.04, 0.07, warmup_epochs=30, epochs=100)
    assert len(sched) == 100
    assert sched[0] == pytest.approx(0.04) and sched[29] == pytest.approx(0.07)
    assert np.all(np.diff(sched[:30]) > 0) and np.all(sched[30:] == 0.07)
    assert np.all(teacher_temp_schedule(0.04, 0.04, 0, 5) == 0.04)
    with pytest.raises(ValueError, match=r"warmup_teacher_temp_epochs \(30\) must lie in"):
        teacher_temp_schedule(0.04, 0.07, warmup_epochs=30, epochs=10)


def test_a_non_finite_teacher_batch_is_refused_and_never_enters_the_centre():
    student, teacher = _outputs(4)
    loss_fn = DINOLoss(K)
    loss_fn(student, teacher, teacher_temp=0.04)
    center = loss_fn.center.clone()
    bad = [teacher[0].clone(), teacher[1]]
    bad[0][3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_output has 1 non-finite value\(s\) \(NaN"):
        loss_fn(student, bad, teacher_temp=0.04)
    assert torch.equal(loss_fn.center, center)
    # the trainer's setting: no check (no sync), the loss shows it, the centre skips it
    quiet = DINOLoss(K, check_finite=False)
    quiet.center = center.clone()
    bad[1] = torch.full_like(teacher[1], float("inf"))
    assert not torch.isfinite(quiet(student, bad, teacher_temp=0.04).loss)
    assert torch.equal(quiet.center, center)
    out = quiet(student, teacher, teacher_temp=0.04)  # the next good batch: as if none failed
    torch.testing.assert_close(out.loss, loss_fn(student, teacher, teacher_temp=0.04).loss)
    torch.testing.assert_close(quiet.center, loss_fn.center)
    assert torch.isfinite(quiet.center).all()
