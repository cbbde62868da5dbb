"""Multi-process training helpers for ``torchrun``; no-ops in a single process.

``torchrun --nproc_per_node=4 -m teachkit.train dino ...`` starts four processes and
tells each its place through environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_distributed` reads them
and joins the process group: NCCL between GPUs, Gloo on CPUs. Without those variables
(a notebook, ``python -m ...``) nothing happens and every helper below behaves as if
there were one process, so the same training code runs everywhere.

In DINO two things cross processes: the student's gradients (averaged by
``DistributedDataParallel``) and the teacher centre (the batch mean, all-reduced in
:class:`teachkit.dino.loss.DINOLoss`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "init_distributed",
    "is_distributed",
    "rank",
    "local_rank",
    "world_size",
    "is_main_process",
    "all_reduce_mean",
    "barrier",
    "device_for_process",
    "unwrap_model",
    "cleanup",
]


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    Args:
        backend: "nccl" or "gloo"; ``None`` picks NCCL when CUDA is available, else Gloo.

    Returns:
        True when running with more than one process (the group is initialised),
        False for a single process (nothing is done).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's index in [0, world_size); 0 in a single process."""
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """Index of this process on its machine (torchrun's ``LOCAL_RANK``); picks the GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of processes; 1 in a single process."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the process that prints, writes checkpoints and metrics."""
    return rank() == 0


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over processes (a new tensor); ``x`` itself in one process."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x.div_(dist.get_world_size())


def barrier() -> None:
    """Wait for every process; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def device_for_process(prefer: str | None = None) -> torch.device:
    """``cuda:LOCAL_RANK`` under torchrun with GPUs, otherwise ``prefer`` or the best device."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    from teachkit.infra.hardware import pick_device

    return pick_device()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``DistributedDataParallel`` and/or ``torch.compile``."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def cleanup() -> None:
    """Leave the process group (end of a torchrun job); a no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
