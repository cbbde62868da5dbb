"""Checkpoints that survive being killed: atomic saves and automatic resume.

A training run on Colab or a shared cluster can be stopped at any moment. Two rules
make the checkpoint on disk always usable:

1. **Atomic save**: write to a temporary file in the same directory, flush it to disk
   (``fsync``), then ``os.replace`` it onto the final name. A reader sees the old file or
   the new one, never half a file. The previous checkpoint is kept as ``<name>.prev``.
2. **Auto-resume**: :func:`load_latest` returns the newest readable checkpoint of a
   directory (falling back to ``.prev`` when the newest is damaged), and the trainer
   continues from its step with the same random-number states, so the resumed run
   matches an uninterrupted one.

On Colab, point the output directory at Google Drive so checkpoints outlive the
session: ``from google.colab import drive; drive.mount('/content/drive')`` then
``--out /content/drive/MyDrive/dino_run``. The directory is just a path; Drive's FUSE
mount may not support ``fsync`` on directories, which is tolerated.

Checkpoints contain only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)`` (no arbitrary code runs when loading).
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_NAME",
    "save_checkpoint",
    "load_checkpoint",
    "load_latest",
    "load_latest_file",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some network / FUSE file systems refuse
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically; the file it replaces becomes ``path.prev``.

    Args:
        state: a dict of tensors, state dicts, numbers, strings, lists and dicts.
        path: destination file; its directory is created if needed.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load one checkpoint file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(
    directory: str | Path,
    *,
    name: str = CHECKPOINT_NAME,
    map_location: str | torch.device = "cpu",
) -> dict | None:
    """The newest readable checkpoint in ``directory``, or ``None`` if there is none.

    Tries ``name`` then ``name.prev`` (left by :func:`save_checkpoint`); a file that
    cannot be read is reported with a warning and skipped.
    """
    found = load_latest_file(directory, name=name, map_location=map_location, stacklevel=3)
    return None if found is None else found[0]


def load_latest_file(
    directory: str | Path,
    *,
    name: str = CHECKPOINT_NAME,
    map_location: str | torch.device = "cpu",
    stacklevel: int = 2,
) -> tuple[dict, Path] | None:
    """:func:`load_latest`, with the file it read: ``(checkpoint, path)`` or ``None``.

    ``path`` is ``directory/name``, or ``directory/name.prev`` when the newest is
    missing or unreadable (a kill between the two renames of :func:`save_checkpoint`
    leaves only ``.prev``). ``stacklevel`` is that of the warnings, counted from here.
    """
    directory = Path(directory)
    for candidate in (directory / name, directory / f"{name}.prev"):
        if not candidate.is_file():
            continue
        try:
            return load_checkpoint(candidate, map_location), candidate
        except Exception as err:  # noqa: BLE001 - any unreadable file: try the older one
            warnings.warn(
                f"checkpoint {candidate} is unreadable ({type(err).__name__}: {err}); "
                "trying an older one",
                stacklevel=stacklevel,
            )
    return None


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA random states, as weights-only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["kind"],
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda)} devices, this "
                f"machine has {torch.cuda.device_count()}; not restored",
                stacklevel=2,
            )
