"""The optimiser of the course's small baselines: AdamW under a one-cycle schedule.

Used by the Chapter 1 autoencoder and contrastive model and by the supervised
reference models (:mod:`teachkit.supervised`). DINO has its own schedules
(:mod:`teachkit.dino.schedules`), as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["one_cycle_adamw"]


def one_cycle_adamw(
    model: nn.Module, *, lr: float, steps: int, weight_decay: float = 1e-4
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW and a one-cycle schedule (warm-up to ``lr``, then anneal) over ``steps`` steps.

    Raises:
        ValueError: ``steps`` is not positive.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
