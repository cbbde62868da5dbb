"""CIFAR-10 as uint8 tensors, through torchvision's download and archive format.

The full profile trains and evaluates on CIFAR-10 (Chapters 3 and 5). Downloading
uses torchvision's ``download_and_extract_archive`` (the archive's md5 is checked);
reading parses the python pickles of ``cifar-10-batches-py`` (``data_batch_1`` ..
``data_batch_5``, ``test_batch``, ``batches.meta``) exactly as
``torchvision.datasets.CIFAR10`` lays them out, and checks their format, so any
copy of the official archive works offline too.

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

__all__ = ["CIFAR10_CLASSES", "default_data_dir", "load_cifar10", "cifar10_classes"]

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


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images (n, 3, 32, 32) uint8, labels (n,) int64)."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected keys 'data' and 'labels')")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(
            f"{path}: expected 'data' of shape (n, 3072) and n labels, "
            f"got {data.shape} and {labels.shape}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def cifar10_classes(root: str | Path | None = None) -> list[str]:
    """Class names from ``batches.meta`` (falls back to the standard ten)."""
    meta = Path(root or default_data_dir()).expanduser() / FOLDER / "batches.meta"
    if not meta.exists():
        return list(CIFAR10_CLASSES)
    with open(meta, "rb") as f:
        return list(pickle.load(f, encoding="latin1")["label_names"])


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
        ValueError: a file is not in CIFAR-10's format.
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
