"""The multi-crop draws, made on the host, on the training device in one transfer.

:class:`~teachkit.dino.batched_augment.BatchedMultiCrop` draws every random number on the
CPU (a seed gives the same crops on any device; one process of a multi-GPU run draws the
global batch and keeps its slice). Moving those draws field by field would be 11 small
host-to-device copies per view, 88 per step for 2 + 6 views, each a driver call. Here
they travel as one block of bytes, pinned and asynchronous (no host sync), and come out
on the device as views of that block: no kernel unpacks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import Tensor

from teachkit.dino.augment import ViewParams

__all__ = ["draws_on"]


def draws_on(params: Sequence[ViewParams], device: torch.device) -> tuple[ViewParams, Tensor]:
    """The V views' draws concatenated (V * B rows) on ``device``, and the colour-jitter
    masks ``slots`` (V * B, 4, 4) bool: ``slots[i, position, op]`` when row i is jittered
    and its ``jitter_order`` puts ``op`` at ``position``.

    Both are made where the draws are (the host) and copied as one block of bytes: one
    host-to-device transfer (pinned, asynchronous) instead of 11 per view, and nothing
    to unpack on the device but views of the block.
    """
    p = ViewParams.cat(params)
    slots = p.jitter.view(-1, 1, 1) & (
        p.jitter_order.unsqueeze(-1) == torch.arange(4, device=p.crop.device)
    )
    if p.crop.device == device:
        return p, slots
    tensors = {f.name: getattr(p, f.name) for f in fields(ViewParams)} | {"slots": slots}
    block = _as_bytes(tensors)
    if device.type == "cuda":
        block = block.pin_memory()
    moved = _from_bytes(block.to(device, non_blocking=True), tensors)
    slots = moved.pop("slots")
    return ViewParams(**moved), slots


def _byte_order(like: dict[str, Tensor]) -> list[str]:
    """Widest dtype first: then every tensor starts at an offset its element size divides."""
    return sorted(like, key=lambda name: -like[name].element_size())


def _as_bytes(tensors: dict[str, Tensor]) -> Tensor:
    """The tensors' bytes, one after the other (:func:`_byte_order`), as one uint8 tensor."""
    return torch.cat(
        [tensors[n].contiguous().view(-1).view(torch.uint8) for n in _byte_order(tensors)]
    )


def _from_bytes(block: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """Undo :func:`_as_bytes`: views of ``block`` with the dtypes and shapes of ``like``."""
    out, offset = {}, 0
    for n in _byte_order(like):
        t = like[n]
        size = t.numel() * t.element_size()
        out[n] = block[offset : offset + size].view(t.dtype).view(t.shape)
        offset += size
    return out
