"""The machine a run uses: the one device resolver, the arithmetic for that device, and a
readable name of the hardware for model cards.

* :func:`pick_device` -- every function and command that takes a device asks it, so a
  device this machine lacks always gets the same message;
* :class:`Precision` (:data:`FP32`, :data:`FP16`, :data:`BF16`) and :func:`pick_precision`
  -- how a training step runs its arithmetic on that device;
* :func:`hardware_name` -- where training ran, as the model cards record it.

:func:`teachkit.profiles.get_profile` builds a notebook's profile from these.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

__all__ = ["BF16", "FP16", "FP32", "Precision", "hardware_name", "pick_device", "pick_precision"]


def pick_device(
    prefer: str | torch.device | None = None, *, what: str = "device"
) -> torch.device:
    """The device to run on: ``prefer`` checked against this machine, or the best there is.

    The course's one device resolver: every function and command that takes a device
    asks it, so a device this machine lacks always gets the same message.

    Args:
        prefer: a device ("cpu", "cuda", "cuda:1", "mps"); ``None`` picks CUDA, then
            Apple's MPS, then the CPU.
        what: how the message names the setting: a parameter (``"device"``, shown as
            ``device='cuda'``) or a command-line flag (``"--device"``, shown as
            ``--device cuda``).

    Raises:
        ValueError: ``prefer`` is not a device name, or names a GPU (or a GPU index) or
            MPS that this machine does not have.
    """
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    flag = what.startswith("-")
    shown = f"{what} {prefer}" if flag else f"{what}={str(prefer)!r}"
    try:
        device = torch.device(prefer)
    except (RuntimeError, TypeError):
        named = f"{what} {prefer!r}" if flag else f"{what}={prefer!r}"
        raise ValueError(f"{named} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{shown}: no GPU is available to PyTorch here "
                "(torch.cuda.is_available() is False); use cpu"
            )
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"{shown}: there are only {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{shown}: MPS is not available here; use cpu")
    return device


def hardware_name(device: torch.device) -> str:
    """A readable name of where training ran: the GPU's name, or the CPU and its cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    n = torch.get_num_threads()
    return f"{cpu}, {n} thread{'' if n == 1 else 's'} ({os.cpu_count()} cores visible)"


@dataclass(frozen=True)
class Precision:
    """How a training step runs its arithmetic.

    Attributes:
        name: "bf16", "fp16" or "fp32", for printing.
        autocast_dtype: dtype for ``torch.autocast``; ``None`` means no autocast.
        use_grad_scaler: fp16 needs loss scaling (``torch.amp.GradScaler``) to keep
            small gradients from underflowing; bf16 and fp32 do not.
    """

    name: str
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool

    def autocast(self, device: torch.device | str):
        """A context manager: ``torch.autocast`` for bf16/fp16, a no-op for fp32."""
        device = torch.device(device)
        enabled = self.autocast_dtype is not None
        return torch.autocast(
            device_type=device.type, dtype=self.autocast_dtype, enabled=enabled
        )


FP32 = Precision("fp32", None, False)
FP16 = Precision("fp16", torch.float16, True)
BF16 = Precision("bf16", torch.bfloat16, False)


def pick_precision(
    device: torch.device | str, capability: tuple[int, int] | None = None
) -> Precision:
    """Choose the arithmetic for ``device``.

    * CUDA with compute capability >= 8.0 (A100, H100, RTX 30xx+): bf16 autocast.
    * Older CUDA (a Colab T4 is sm_75): fp16 autocast with a gradient scaler.
      ``torch.cuda.is_bf16_supported()`` answers True on a T4, but there bf16 is
      emulated and slower than fp32, so the capability decides, not that call.
    * CPU and MPS: fp32.

    Args:
        device: where the model runs.
        capability: ``(major, minor)``; read from the device when ``None``.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return FP32
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return BF16 if capability >= (8, 0) else FP16
