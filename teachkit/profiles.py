"""Run profiles (``quick`` / ``full``) and seeding. The device and the arithmetic a profile
picks come from :mod:`teachkit.infra.hardware`.

Every notebook of the course starts with::

    from teachkit.profiles import get_profile
    P = get_profile()          # reads TEACHKIT_PROFILE, default "quick"
    print(P.describe(model))   # profile, device, precision, dataset, model size

* ``quick`` (the default on every machine): offline, CPU, the built-in procedural
  shapes dataset and the small checkpoints shipped inside :mod:`teachkit.pretrained`.
  Each notebook runs in three minutes or less on two CPU cores.
* ``full`` (opt-in with ``TEACHKIT_PROFILE=full``): the best available accelerator,
  CIFAR-10, the official DINO / SAM weights and real epoch counts.

Sizes that differ between profiles are written at the call site with
:meth:`Profile.choose`, so a reader sees both values side by side::

    epochs = P.choose(quick=2, full=100)

A long full-profile run keeps its checkpoints in :func:`run_dir`: the student's Google
Drive on Colab, when it is mounted, so the run survives a disconnect and resumes
(``book/colab.md``).
"""

from __future__ import annotations

import importlib.util
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from teachkit.infra.hardware import Precision, pick_device, pick_precision

__all__ = [
    "COLAB_DRIVE",
    "PROFILES",
    "Profile",
    "get_profile",
    "on_colab",
    "run_dir",
    "seed_everything",
    "count_parameters",
]

PROFILES: tuple[str, ...] = ("quick", "full")
ENV_VAR = "TEACHKIT_PROFILE"

T = TypeVar("T")

#: Where Colab shows the student's Google Drive once it is mounted with
#: ``drive.mount("/content/drive")``.
COLAB_DRIVE = Path("/content/drive/MyDrive")
#: The course's folder of runs inside the Drive.
DRIVE_RUNS = Path("teachkit") / "runs"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices) and return a CPU generator.

    A quick-profile run is then repeatable on the CPU: the same seed gives the same
    numbers. (GPU kernels may still differ in the last bits between runs.)
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class Profile:
    """The settings a notebook or a training run works with.

    Attributes:
        name: "quick" or "full".
        device: where tensors and models live.
        precision: arithmetic for training steps (see :func:`pick_precision`).
        dataset: the default dataset name of the profile ("shapes" or "cifar10").
        offline: True when nothing may be downloaded (the quick profile).
    """

    name: str
    device: torch.device
    precision: Precision
    dataset: str
    offline: bool

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"

    def choose(self, *, quick: T, full: T) -> T:
        """The value for this profile: ``P.choose(quick=2, full=100)``."""
        return quick if self.is_quick else full

    def describe(
        self, model: torch.nn.Module | None = None, *, dataset: str | None = None, **more: object
    ) -> str:
        """One line per setting, ready to print at the top of a notebook.

        ``dataset`` names the data a chapter uses when it is not the profile's default
        (Chapters 3 and 5 use critters in the quick profile); ``more`` adds lines.
        """
        lines = [
            f"profile   : {self.name}",
            f"device    : {self.device}",
            f"precision : {self.precision.name}",
            f"dataset   : {dataset or self.dataset}",
        ]
        if model is not None:
            lines.append(f"model size: {count_parameters(model) / 1e6:.2f} M parameters")
        lines += [f"{k:<10}: {v}" for k, v in more.items()]
        return "\n".join(lines)


def get_profile(name: str | None = None, device: str | None = None) -> Profile:
    """Build the run profile.

    Args:
        name: "quick" or "full"; ``None`` reads the ``TEACHKIT_PROFILE`` environment
            variable and falls back to "quick".
        device: force a device; ``None`` means CPU for quick and the best available
            accelerator for full.

    Raises:
        ValueError: for an unknown profile name (the message lists the valid ones).
    """
    if name is None:
        name = os.environ.get(ENV_VAR, "quick")
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {list(PROFILES)}")
    if name == "quick":
        dev = torch.device(device or "cpu")
        return Profile("quick", dev, pick_precision(dev), "shapes", offline=True)
    dev = pick_device(device)
    return Profile("full", dev, pick_precision(dev), "cifar10", offline=False)


def on_colab() -> bool:
    """True inside a Google Colab runtime: ``COLAB_RELEASE_TAG`` is set (Colab sets it in
    every runtime) or ``google.colab`` can be imported."""
    if os.environ.get("COLAB_RELEASE_TAG"):
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no ``google`` package at all, or a stub without a spec
        return False


def run_dir(name: str) -> Path:
    """The folder where the long run ``name`` keeps ``checkpoint.pt`` and ``metrics.json``.

    * On Colab with the Google Drive mounted: ``/content/drive/MyDrive/teachkit/runs/NAME``.
      The runtime's own disk is deleted when it disconnects; the Drive is not, and a
      training command pointed at the same folder again resumes from its checkpoint.
    * Everywhere else: ``runs/NAME``, relative to the working directory.

    Nothing here mounts the Drive: the course touches it only once the student has run,
    in a cell of their own, ::

        from google.colab import drive
        drive.mount("/content/drive")

    On Colab without it the run goes to the runtime's disk, with a warning that says so.
    Used by the full-profile cells of Chapters 3 and 5 (``--out`` of the DINO run on
    CIFAR-10, and the folder Chapter 5 reads it back from); ``book/colab.md`` explains.

    >>> str(run_dir("dino_cifar10"))     # not on Colab
    'runs/dino_cifar10'

    Args:
        name: the run's name, one plain folder name (``"dino_cifar10"``).

    Raises:
        ValueError: ``name`` is empty, ``.`` or ``..``, or holds a path separator.
    """
    if not isinstance(name, str):
        raise TypeError(f"run name must be a str, got {type(name).__name__} {name!r}")
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if name.strip() in ("", ".", "..") or any(sep in name for sep in separators):
        raise ValueError(
            f"run name {name!r} must be one plain folder name: not empty, '.' or '..', and "
            "with no '/' or backslash (the folder is made under runs/), e.g. 'dino_cifar10'"
        )
    if not on_colab():
        return Path("runs") / name
    if COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / DRIVE_RUNS / name
    warnings.warn(
        f"Google Drive is not mounted: run {name!r} goes to runs/{name} on the runtime's disk, "
        "which is deleted when Colab disconnects. To keep it and resume after a disconnect, "
        'run `from google.colab import drive; drive.mount("/content/drive")` first, then '
        "this cell again.",
        stacklevel=2,
    )
    return Path("runs") / name
