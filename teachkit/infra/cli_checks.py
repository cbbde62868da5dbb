"""Checks a training command runs on its flags before the first step.

Every command of ``python -m teachkit.train`` (``dino``, ``sam``, ``unet`` and the
baselines ``autoencoder``, ``contrastive``, ``supervised``) checks its output folder and
device before it trains, so that no run dies at its first save or first transfer, and
reports a bad value as a usage error: the message and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from teachkit.infra.hardware import pick_device

__all__ = ["check_device", "check_output_folder", "usage_errors"]


def check_output_folder(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Raise a ValueError unless a folder can be made (or exists) at ``path``.

    Checked before training so that no run dies at its first save: ``path`` must not be
    a file, nor lie under one, and its nearest existing folder must be writable.
    """
    out = Path(path).expanduser()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        where = "is an existing file" if existing == out else f"lies under the file {existing}"
        raise ValueError(f"{flag} {str(out)!r} {where}; it must name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(out)!r}: the folder {existing} is not writable")


@contextmanager
def usage_errors(args: argparse.Namespace, *errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` (default ValueError) raised inside into a usage error of the
    command's parser (``args._parser``: message and exit status 2, no traceback); without
    a parser (called from Python) they propagate unchanged."""
    caught = errors or (ValueError,)
    try:
        yield
    except caught as err:
        parser = getattr(args, "_parser", None)
        if parser is None:
            raise
        parser.error(str(err))


def check_device(name: str | None, flag: str = "--device") -> None:
    """Raise a ValueError unless ``name`` (None: pick the best) is a device of this machine
    (:func:`teachkit.infra.hardware.pick_device`, the one resolver, names the flag)."""
    if name is not None:
        pick_device(name, what=flag)