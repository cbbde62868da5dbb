"""DINO head, multi-crop wrapper, last-layer freezing, and the momentum teacher."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as tdist
from torch import nn

from teachkit.dino.head import (
    OFFICIAL_HEAD_KEYS,
    DINOHead,
    MultiCropWrapper,
    cancel_gradients_last_layer,
    convert_official_state_dict,
)
from teachkit.dino.teacher import build_teacher, disable_stochastic_layers, update_teacher


class CountingBackbone(nn.Module):
    """Mean-pool + linear; counts its calls and the batch sizes it saw."""

    def __init__(self, embed_dim: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.proj = nn.Linear(3, embed_dim)
        self.drop = nn.Dropout(0.5)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.drop(self.proj(x.mean(dim=(2, 3))))


def _head(**kw) -> DINOHead:
    torch.manual_seed(0)
    return DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, **kw)


def test_head_shapes_and_cosine_logits_with_a_normalised_last_layer():
    head = _head()
    out = head(torch.randn(5, 16) * 100)
    assert out.shape == (5, 32)
    # unit-norm embedding times unit-norm prototypes: every logit is a cosine
    assert out.abs().max() <= 1 + 1e-5
    scale = head.last_layer.parametrizations.weight.original0
    assert not scale.requires_grad and torch.all(scale == 1)
    assert _head(norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad
    assert isinstance(_head(use_bn=True).mlp[1], nn.BatchNorm1d)
    assert sum(isinstance(m, nn.Linear) for m in _head(nlayers=3).mlp) == 3
    with pytest.raises(ValueError, match="DINOHead out_dim must be >= 1"):
        DINOHead(16, 0)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")
def test_head_deepcopies_and_matches_lightly_projection_head():
    head = _head()
    x = torch.randn(4, 16)
    clone = copy.deepcopy(head)  # works with the parametrizations API
    torch.testing.assert_close(clone(x), head(x))
    import lightly.models.modules.heads as heads  # a test requirement, never skipped
    # lightly's head uses the hook-based weight_norm (not deep-copyable on torch 2.14):
    # build it, then copy our weights into it.
    theirs = heads.DINOProjectionHead(16, 24, 8, 32, batch_norm=False)
    ours_linear = [m for m in head.mlp if isinstance(m, nn.Linear)]
    their_linear = [m for m in theirs.layers if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for a, b in zip(ours_linear, their_linear, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        theirs.last_layer.weight_g.copy_(head.last_layer.parametrizations.weight.original0)
        theirs.last_layer.weight_v.copy_(head.last_layer.parametrizations.weight.original1)
    torch.testing.assert_close(head(x), theirs(x))


def test_official_checkpoint_names_convert_to_ours():
    model = MultiCropWrapper(CountingBackbone(), _head())
    inverse = {v: k for k, v in OFFICIAL_HEAD_KEYS.items()}
    official = {}
    for key, value in model.state_dict().items():
        for ours, theirs in inverse.items():
            key = key.replace(ours, theirs)
        official["module." + key] = value.clone() + 1
    assert "module.head.last_layer.weight_g" in official
    fresh = MultiCropWrapper(CountingBackbone(), _head())
    fresh.load_state_dict(convert_official_state_dict(official), strict=True)
    torch.testing.assert_close(
        fresh.head.last_layer.parametrizations.weight.original1,
        model.head.last_layer.parametrizations.weight.original1 + 1,
    )


def test_wrapper_runs_one_backbone_pass_per_resolution():
    backbone = CountingBackbone().eval()
    model = MultiCropWrapper(backbone, _head())
    crops = [torch.randn(3, 3, 16, 16) for _ in range(2)] + [
        torch.randn(3, 3, 8, 8) for _ in range(4)
    ]
    out = model(crops)
    assert out.shape == (6 * 3, 32)
    assert backbone.calls == [(6, 3, 16, 16), (12, 3, 8, 8)]
    one_by_one = torch.cat([model(c) for c in crops])
    torch.testing.assert_close(out, one_by_one)
    with pytest.raises(ValueError, match="empty list of crops"):
        model([])


def test_last_layer_gradients_are_dropped_during_the_frozen_epochs():
    model = MultiCropWrapper(CountingBackbone(), _head(norm_last_layer=False))

    def grads(epoch: int) -> dict[str, bool]:
        model.zero_grad(set_to_none=True)
        model(torch.randn(4, 3, 8, 8)).sum().backward()
        cancel_gradients_last_layer(model, epoch=epoch, freeze_last_layer=1)
        return {n: p.grad is not None for n, p in model.named_parameters()}

    frozen, free = grads(0), grads(1)
    assert not any(v for n, v in frozen.items() if "last_layer" in n)
    assert all(v for n, v in frozen.items() if "last_layer" not in n)
    assert all(free.values())


def test_teacher_starts_as_the_student_without_gradients_or_dropout():
    student = MultiCropWrapper(CountingBackbone(), _head())
    teacher = build_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.backbone.drop.p == 0.0 and student.backbone.drop.p == 0.5
    for (n, a), (_, b) in zip(
        student.state_dict().items(), teacher.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), n
    x = torch.randn(4, 3, 8, 8)
    teacher(x).sum()  # no graph: nothing to backprop into the teacher
    assert not teacher(x).requires_grad
    # the official way: a second instance built without stochastic layers
    fresh = MultiCropWrapper(CountingBackbone(), _head())
    assert build_teacher(student, fresh=fresh) is fresh
    with pytest.raises(ValueError, match="does not have the student's architecture"):
        build_teacher(student, fresh=MultiCropWrapper(CountingBackbone(8), _head()))


def test_drop_path_modules_are_disabled_in_a_copy():
    class DropPath(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop_prob = 0.1

    model = disable_stochastic_layers(nn.Sequential(DropPath(), nn.Dropout(0.2)))
    assert model[0].drop_prob == 0.0 and model[1].p == 0.0


def test_ema_update_follows_the_formula():
    student = MultiCropWrapper(CountingBackbone(), _head())
    teacher = build_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    update_teacher(teacher, student, momentum=0.9)
    for n, p in teacher.named_parameters():
        s = dict(student.named_parameters())[n]
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * s)
    update_teacher(teacher, student, momentum=1.0)  # momentum 1: frozen
    update_teacher(teacher, student, momentum=0.0)  # momentum 0: a copy of the student
    for (_, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters(), strict=True):
        torch.testing.assert_close(t, s)
    with pytest.raises(ValueError, match=r"teacher momentum must lie in \[0, 1\]"):
        update_teacher(teacher, student, momentum=1.5)
    with pytest.raises(ValueError, match="teacher and student parameters differ"):
        update_teacher(teacher, nn.Linear(2, 2), momentum=0.5)


def test_ema_update_unwraps_a_ddp_student(tmp_path):
    tdist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        student = MultiCropWrapper(CountingBackbone(), _head())
        teacher = build_teacher(student)
        ddp = nn.parallel.DistributedDataParallel(student)
        with torch.no_grad():
            for p in student.parameters():
                p.mul_(2.0)
        update_teacher(teacher, ddp, momentum=0.0)
        for (_, t), (_, s) in zip(
            teacher.named_parameters(), student.named_parameters(), strict=True
        ):
            torch.testing.assert_close(t, s)
        assert all(not p.requires_grad for p in build_teacher(ddp).parameters())
    finally:
        tdist.destroy_process_group()
