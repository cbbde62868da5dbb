"""``torch.compile`` with a way back: if compiling fails, warn once and run eagerly.

Compiling is an optimisation, never a requirement: a compiler that cannot handle a
model on some machine (an old GPU, a missing C compiler, a graph break it refuses) must
not end a training run. Used by :func:`teachkit.dino.trainer.train_dino` for
``DINOConfig.compile``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["CompiledOrEager"]


class CompiledOrEager:
    """Call ``torch.compile(module)``; on the first failure warn and use ``module``.

    Args:
        module: the module to run.
        enabled: compile at all (``False``: always eager, no warning).
    """

    def __init__(self, module: nn.Module, enabled: bool) -> None:
        self.module = module
        self.compiled = torch.compile(module) if enabled else None

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # noqa: BLE001 - any compiler failure: run eagerly
                warnings.warn(
                    f"torch.compile failed ({type(err).__name__}: {err}); "
                    "continuing without compiling",
                    stacklevel=2,
                )
                self.compiled = None
        return self.module(*args)
