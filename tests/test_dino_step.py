"""``dino_step``: the paper's Algorithm 1 written out is the step the trainer takes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from teachkit.dino.head import DINOHead, MultiCropWrapper
from teachkit.dino.loss import DINOLoss
from teachkit.dino.schedules import clip_gradients
from teachkit.dino.step import dino_step
from teachkit.dino.teacher import build_teacher, update_teacher

K = 64


class PoolBackbone(nn.Module):
    """Mean colour -> linear: a backbone small enough for an exact comparison."""

    embed_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, self.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def _state():
    torch.manual_seed(0)
    student = MultiCropWrapper(PoolBackbone(), DINOHead(8, K, hidden_dim=16, bottleneck_dim=8))
    teacher = build_teacher(student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=0.04)
    return student, teacher, DINOLoss(K), optimizer


def _crops(batch: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(batch, 3, 8, 8, generator=g) for _ in range(2)] + [
        torch.rand(batch, 3, 4, 4, generator=g) for _ in range(2)
    ]


def _by_hand(student, teacher, loss_fn, optimizer, crops, *, clip: float = 0.0) -> float:
    """Algorithm 1, line by line, with the official per-parameter clipping."""
    with torch.no_grad():
        t = teacher(crops[:2])
    out = loss_fn(student(crops).chunk(len(crops)), t.chunk(2), teacher_temp=0.04)
    optimizer.zero_grad()
    out.loss.backward()
    if clip:
        clip_gradients(student, clip)
    optimizer.step()
    update_teacher(teacher, student, momentum=0.9)
    return out.loss.item()


@pytest.mark.parametrize("clip", [0.0, 0.01])
def test_dino_step_is_algorithm_1(clip):
    hand, step = _state(), _state()
    crops = _crops()
    for _ in range(3):
        loss_hand = _by_hand(*hand, crops, clip=clip)
        out = dino_step(*step, crops, teacher_temp=0.04, momentum=0.9, clip_grad=clip)
        assert out.loss.item() == loss_hand
    for net_hand, net_step in [(hand[0], step[0]), (hand[1], step[1])]:
        for a, b in zip(
            net_hand.state_dict().values(), net_step.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b)
    assert torch.equal(hand[2].center, step[2].center)
    # and the step moved the student: a comparison of two frozen states would prove nothing
    assert not torch.equal(step[0].head.last_layer.weight, _state()[0].head.last_layer.weight)


def test_dino_step_freezes_the_last_layer_in_the_first_epochs():
    state = _state()
    student = state[0]
    before = student.head.last_layer.weight.detach().clone()
    first = student.backbone.proj.weight.detach().clone()
    kw = dict(teacher_temp=0.04, momentum=0.9, freeze_last_layer=1)
    dino_step(*state, _crops(), epoch=0, **kw)
    assert torch.equal(student.head.last_layer.weight, before)
    assert not torch.equal(student.backbone.proj.weight, first)
    dino_step(*state, _crops(), epoch=1, **kw)
    assert not torch.equal(student.head.last_layer.weight, before)


def test_dino_step_needs_the_two_global_views():
    student, teacher, loss_fn, optimizer = _state()
    with pytest.raises(ValueError, match="2 global views first"):
        dino_step(
            student, teacher, loss_fn, optimizer, _crops()[:1], teacher_temp=0.04, momentum=0.9
        )
