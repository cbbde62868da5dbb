"""Sample photographs shipped inside scikit-image's wheel (no download needed).

Used by the visualisation chapters (attention maps in Chapter 4, SAM in Chapters
6-7) in the full profile, and anywhere a real photograph helps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PHOTOS", "load_photo", "photo_tensor"]

PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def load_photo(name: str) -> np.ndarray:
    """A sample photograph as an (H, W, 3) uint8 RGB array.

    Raises:
        ValueError: unknown name (the message lists the available ones).
        ImportError: scikit-image is not installed (``pip install scikit-image``).
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; expected one of {list(PHOTOS)}")
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the sample photos need scikit-image: pip install scikit-image") from exc
    image = getattr(data, name)()
    return np.ascontiguousarray(image[..., :3])


def photo_tensor(name: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A photograph as a (3, H, W) uint8 tensor, optionally resized (bilinear, antialiased)."""
    image = torch.from_numpy(load_photo(name)).permute(2, 0, 1).contiguous()
    if size is None:
        return image
    if isinstance(size, int):
        size = (size, size)
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True)
    return resized[0].round().clamp(0, 255).to(torch.uint8)
