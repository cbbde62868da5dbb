"""CIFAR-10 as uint8 tensors, through torchvision's download and archive format.

The full profile trains and evaluates on CIFAR-10 (Chapters 3 and 5). Downloading
uses torchvision's ``download_and_extract_archive`` (the archive's md5 is checked);
reading parses the python pickles of ``cifar-10-batches-py`` (``data_batch_1`` ..
``data_batch_5``, ``test_batch``, ``batches.meta``) exactly as
``torchvision.datasets.CIFAR10`` lays them out, and checks their format, so any
copy of the official archive works offline too. The pickles are read by an unpickler
that builds only what CIFAR-10 holds (dicts, lists, strings, numbers and NumPy
arrays): a file that names anything else, such as ``os.system``, is refused unread.

Example::

    images, labels = load_cifar10("~/data", train=True, download=True)
    images.shape, images.dtype, labels.shape   # (50000, 3, 32, 32), uint8, (50000,)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_and_extract_archive

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_PICKLE_GLOBALS",
    "default_data_dir",
    "load_cifar10",
    "cifar10_classes",
]

CIFAR10_URL: str = CIFAR10.url
CIFAR10_MD5: str = CIFAR10.tgz_md5
FOLDER: str = CIFAR10.base_folder  # "cifar-10-batches-py"
TRAIN_FILES = tuple(name for name, _ in CIFAR10.train_list)
TEST_FILES = tuple(name for name, _ in CIFAR10.test_list)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def default_data_dir() -> Path:
    """``$TEACHKIT_DATA`` or ``~/.cache/teachkit/data``."""
    return Path(os.environ.get("TEACHKIT_DATA", Path.home() / ".cache" / "teachkit" / "data"))


#: The only globals a CIFAR-10 python batch names: a NumPy array (rebuilt by
#: ``_reconstruct`` or ``_frombuffer``, under NumPy 1's and NumPy 2's module names) and
#: ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for bytes. The
#: dicts, lists, strings and numbers around them need no global at all.
CIFAR_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names a global that no CIFAR-10 file holds (``module.name``)."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what CIFAR-10 holds (:data:`CIFAR_PICKLE_GLOBALS`):
    a pickle that names anything else (``os.system``, ``builtins.eval``...) is refused
    before that object is even looked up, so no code of the file's choosing runs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise _ForbiddenGlobal(f"{module}.{name}")
        if module.startswith("numpy.core."):  # NumPy 2 moved it; skip the alias's warning
            try:
                return super().find_class(module.replace("numpy.core.", "numpy._core.", 1), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _unpickle(path: Path) -> object:
    """Unpickle a CIFAR file with :class:`_CifarUnpickler`; a ValueError naming the file
    if it is unreadable or names anything a CIFAR-10 file does not hold."""
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as err:
        raise ValueError(
            f"{path} is not a CIFAR-10 file: its pickle asks for {err}, which CIFAR-10 never "
            "holds (a pickle that names code can run it), so it was not loaded; delete the "
            "cifar-10-batches-py folder and download the official archive again"
        ) from None
    except Exception as err:  # noqa: BLE001 - truncated or foreign pickles fail in many ways
        raise ValueError(
            f"{path} is not a readable CIFAR-10 file ({type(err).__name__}: {err}); it may be "
            "truncated or damaged: delete the cifar-10-batches-py folder and download again"
        ) from err


def _check_integers(path: Path, what: str, values: np.ndarray, high: int) -> None:
    """Raise a ValueError naming ``path`` unless ``values`` are integers in 0..high."""
    in_range = values.size == 0 or 0 <= values.min() <= values.max() <= high
    if values.dtype.kind in "iu" and in_range:
        return
    span = ""
    if values.size and values.dtype.kind in "iuf":
        span = f", values {values.min()}..{values.max()}"
    raise ValueError(f"{path}: {what} must be integers in 0..{high}, got {values.dtype}{span}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images (n, 3, 32, 32) uint8, labels (n,) int64)."""
    entry = _unpickle(path)
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected keys 'data' and 'labels')")
    try:
        data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    except Exception as err:  # noqa: BLE001 - ragged lists and other oddities
        raise ValueError(f"{path}: 'data' and 'labels' must be arrays ({err})") from err
    # Pixels and labels are integers in range: a cast would wrap 300.7 to 44 silently.
    _check_integers(path, "pixels", data, 255)
    _check_integers(path, "labels", labels, len(CIFAR10_CLASSES) - 1)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.ndim != 1:
        raise ValueError(
            f"{path}: expected 'data' of shape (n, 3072) and n labels, "
            f"got {data.shape} and {labels.shape}"
        )
    if len(data) != len(labels):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def cifar10_classes(root: str | Path | None = None) -> list[str]:
    """Class names from ``batches.meta`` (falls back to the standard ten)."""
    meta = Path(root or default_data_dir()).expanduser() / FOLDER / "batches.meta"
    if not meta.exists():
        return list(CIFAR10_CLASSES)
    entry = _unpickle(meta)
    names = entry.get("label_names") if isinstance(entry, dict) else None
    if (
        not isinstance(names, (list, tuple))
        or len(names) != len(CIFAR10_CLASSES)
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(f"{meta} is not CIFAR-10's batches.meta (expected 10 'label_names')")
    return list(names)


def load_cifar10(
    root: str | Path | None = None,
    *,
    train: bool,
    download: bool = False,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the CIFAR-10 train (50,000) or test (10,000) split.

    Args:
        root: folder holding ``cifar-10-batches-py`` (default :func:`default_data_dir`).
        train: the training split if True, else the test split.
        download: fetch and extract the archive first if the folder is missing.
        url, md5: where the archive comes from and its checksum (the official ones by
            default; a mirror or a local server can stand in).

    Returns:
        images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Raises:
        FileNotFoundError: the folder is missing and ``download`` is False.
        ValueError: a file is unreadable (truncated, damaged) or not in CIFAR-10's format:
            pixels that are not integers in 0..255, labels outside 0..9, wrong shapes, or
            a pickle that names code or objects CIFAR-10 never holds (refused unread).
            The message names the file.
    """
    root = Path(root or default_data_dir()).expanduser()
    folder = root / FOLDER
    names = TRAIN_FILES if train else TEST_FILES
    if download and not all((folder / n).exists() for n in names):
        download_and_extract_archive(url, str(root), filename=Path(url).name, md5=md5)
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 files {missing} not found under {folder}; pass download=True "
            "(needs internet) or copy the extracted 'cifar-10-batches-py' folder there"
        )
    parts = [_read_batch(folder / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)
