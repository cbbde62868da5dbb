"""Reading a weights file and loading it strictly: every key used, every shape right.

:func:`read_state_dict` is the one reader of weights files (official, shipped, trained).

One loader for every place that fills a model with saved weights: the official
checkpoints (:func:`teachkit.hub.load_into`), the course's shipped float16 checkpoints
(:func:`teachkit.pretrained.load_shipped`) and SAM checkpoint files
(:func:`teachkit.sam.build.load_sam_checkpoint`)::

    load_strict(model, state, source="checkpoint 'sam_tiny_shapes'")

``model.load_state_dict(state, strict=False)`` would silently keep the random
initialisation of a renamed layer; ``strict=True`` stops at the first kind of problem
and may already have copied part of the weights. :func:`load_strict` checks everything
first, names all missing, unexpected and wrongly shaped keys in one ``ValueError``, and
copies nothing unless everything fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from teachkit.infra.download import checkpoint_problem

__all__ = [
    "StateDictMismatchError",
    "load_strict",
    "read_state_dict",
    "strip_prefixes",
    "unwrap_checkpoint",
]

#: Key prefixes of wrapped models: ``DistributedDataParallel`` and DINO's multi-crop wrapper.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "backbone.")

#: Keys shown per kind of mismatch in an error message; the rest are counted.
LISTED_KEYS = 20


class StateDictMismatchError(ValueError):
    """A state dict that does not fit a model; the message lists what is wrong.

    Attributes:
        source: what the weights came from, as given to :func:`load_strict`.
        missing: the model's keys the state dict lacks, sorted.
        unexpected: the state dict's keys the model does not have, sorted.
        mismatched: ``"name: checkpoint (..) vs model (..)"`` for each key whose shape
            differs, sorted.
    """

    def __init__(
        self,
        source: str,
        model: nn.Module,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[str],
    ) -> None:
        self.source = source
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        parts = [
            _listing(title, keys)
            for title, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        super().__init__(
            f"{source} does not fit this model: {'; '.join(parts)} "
            f"(the model is a {type(model).__name__}; nothing was loaded)"
        )


def _listing(title: str, keys: list[str], limit: int = LISTED_KEYS) -> str:
    """``"title (n): a, b, ... (m more)"``: the first ``limit`` keys, then a count."""
    shown = ", ".join(keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def read_state_dict(
    path: str | Path,
    *,
    checkpoint_key: str | None = None,
    prefixes: Iterable[str] = WRAPPER_PREFIXES,
) -> dict[str, Tensor]:
    """The plain ``{name: tensor}`` state dict in a weights file: the course's one reader.

    Read with ``torch.load(map_location="cpu", weights_only=True)`` (tensors and plain
    containers only, no arbitrary pickled code), then unwrapped
    (:func:`unwrap_checkpoint`: ``{"model": ...}``, a DINO ``"teacher"``, ``module.``
    prefixes). Official DINO and SAM files, the course's shipped and trained checkpoints
    all come through here.

    Args:
        path: the file.
        checkpoint_key: see :func:`unwrap_checkpoint`.
        prefixes: wrapper prefixes to strip (:func:`strip_prefixes`); ``()`` for the
            course's own files, whose models may name a part ``backbone``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is empty, truncated or not a PyTorch checkpoint, or one
            that holds no state dict. Every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    problem = checkpoint_problem(path, thorough=False)
    if problem is not None:
        raise ValueError(f"cannot load {path}: the file {problem}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load's errors do not name the file
        first = str(err).splitlines()[0] if str(err) else "no detail"
        raise ValueError(
            f"cannot load {path} as a PyTorch checkpoint ({type(err).__name__}: {first}); "
            "is it truncated, or not a weights file? Download or save it again"
        ) from err
    try:
        return unwrap_checkpoint(checkpoint, checkpoint_key=checkpoint_key, prefixes=prefixes)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def strip_prefixes(
    state_dict: Mapping[str, Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES
) -> dict[str, Tensor]:
    """Remove wrapper prefixes from the start of every key.

    ``module.`` comes from ``DistributedDataParallel`` and ``backbone.`` from DINO's
    multi-crop wrapper. Unlike the official ``k.replace("module.", "")``, only *leading*
    prefixes are removed (repeatedly, in any order), so a key that merely contains the
    text elsewhere is left alone.
    """
    prefixes = tuple(prefixes)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if new.startswith(p):
                    new, changed = new[len(p) :], True
        if new in out:
            raise ValueError(f"stripping {prefixes} maps two keys onto {new!r}")
        out[new] = value
    return out


_WRAPPER_KEYS = ("teacher", "model", "state_dict", "student")


def unwrap_checkpoint(
    checkpoint: Mapping[str, Any],
    *,
    checkpoint_key: str | None = None,
    prefixes: Iterable[str] = WRAPPER_PREFIXES,
) -> dict[str, Tensor]:
    """The plain ``{name: tensor}`` state dict inside a checkpoint.

    Official DINO backbone files are already plain state dicts. Full training
    checkpoints nest them under ``"teacher"`` / ``"student"`` (and other code uses
    ``"model"`` or ``"state_dict"``) with ``module.`` / ``backbone.`` prefixes.

    Args:
        checkpoint: what ``torch.load`` returned.
        checkpoint_key: which entry to take; ``None`` takes the first present of
            ``"teacher"``, ``"model"``, ``"state_dict"``, ``"student"`` (DINO evaluates the
            teacher), or the checkpoint itself when it holds tensors only.
        prefixes: leading key prefixes to strip (:func:`strip_prefixes`).

    Raises:
        ValueError: the key is absent, or the result still holds non-tensor values.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a dict checkpoint, got {type(checkpoint).__name__}")
    if checkpoint_key is not None:
        if checkpoint_key not in checkpoint:
            raise ValueError(
                f"checkpoint has no key {checkpoint_key!r}; its keys are {sorted(checkpoint)[:20]}"
            )
        inner = checkpoint[checkpoint_key]
    elif all(isinstance(v, Tensor) for v in checkpoint.values()):
        inner = checkpoint
    else:
        found = [k for k in _WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)]
        if not found:
            raise ValueError(
                "checkpoint is neither a plain state dict nor wraps one under "
                f"{list(_WRAPPER_KEYS)}; its keys are {sorted(checkpoint)[:20]}"
            )
        inner = checkpoint[found[0]]
    bad = [k for k, v in inner.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"state dict values must be tensors; not so for {bad[:10]}")
    return strip_prefixes(inner, prefixes)


def load_strict(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    source: str,
    ignore_prefixes: Iterable[str] = (),
) -> nn.Module:
    """Copy ``state`` into ``model`` if it fits exactly, and return the model.

    Every parameter and persistent buffer of ``model`` must be in ``state`` with the same
    shape, and every key of ``state`` must be one of them. A floating-point tensor is
    cast to the dtype of the model's tensor it fills (a float16 file fills a float32
    model); the copy is then exact. Nothing is copied unless everything fits: every
    check, those that ``load_state_dict`` would only fail while copying included (a meta
    tensor, a sparse one, a key that is not a string), runs before the first copy.

    Args:
        model: the module to fill, in place (its dtypes and devices are kept).
        state: ``{name: tensor}``, keys as in ``model.state_dict()``.
        source: what the weights came from, for the error message: a file name or a
            checkpoint name, e.g. ``"checkpoint 'unet_shapes'"``.
        ignore_prefixes: keys of ``state`` to drop on purpose, e.g. ``("head.",)`` to
            load a full DINO teacher (backbone + projection head) into a backbone.

    Raises:
        StateDictMismatchError: a ``ValueError`` naming ``source`` and listing the missing
            keys, the unexpected keys and the shape mismatches
            (``name: checkpoint (..) vs model (..)``), all at once, each list cut to
            :data:`LISTED_KEYS` names and a count.
        ValueError: ``state`` is not a mapping of string names to tensors, or holds
            tensors that cannot be copied: on the meta device (no values), not dense, or
            whose values the model's tensor cannot hold (complex into real, floating
            point into an integer buffer). Nothing was copied.
    """
    _check_copyable(state, source)
    ignore = tuple(ignore_prefixes)
    if ignore:
        state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    target = model.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(source, model, missing, unexpected, mismatched)
    lossy = sorted(
        f"{k}: checkpoint {state[k].dtype} vs model {target[k].dtype}"
        for k in state
        if _lossy_cast(state[k].dtype, target[k].dtype)
    )
    if lossy:
        raise ValueError(
            f"{source}: {_listing('tensors whose values the model cannot hold', lossy)} "
            "(nothing was loaded)"
        )
    cast = {
        k: v.to(target[k].dtype) if v.is_floating_point() and target[k].is_floating_point() else v
        for k, v in state.items()
    }
    model.load_state_dict(cast, strict=True)
    return model


def _check_copyable(state: object, source: str) -> None:
    """Raise a ValueError naming ``source`` unless ``state`` maps string keys to dense
    tensors that hold values: what ``load_state_dict`` would only find while copying,
    after it had copied the tensors before."""
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{source} must be a mapping of names to tensors; got {type(state).__name__}"
        )
    not_names = [k for k in state if not isinstance(k, str)]
    if not_names:
        raise ValueError(
            f"{source}: keys must be parameter names (strings); not so for {not_names[:10]!r}"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"{source}: values must be tensors; not so for {not_tensors[:10]}")
    meta = sorted(k for k, v in state.items() if v.is_meta)
    if meta:
        raise ValueError(
            f"{source}: {_listing('tensors on the meta device, which hold no values', meta)} "
            "(nothing was loaded)"
        )
    sparse = sorted(f"{k} ({v.layout})" for k, v in state.items() if v.layout != torch.strided)
    if sparse:
        raise ValueError(
            f"{source}: {_listing('tensors that are not dense (strided)', sparse)}; "
            "call .to_dense() on them (nothing was loaded)"
        )


def _lossy_cast(saved: torch.dtype, model: torch.dtype) -> bool:
    """Whether copying a ``saved`` tensor into a ``model`` one would drop part of each
    value: complex into real, or floating point into an integer or bool tensor."""
    if saved.is_complex:
        return not model.is_complex
    return saved.is_floating_point and not (model.is_floating_point or model.is_complex)
