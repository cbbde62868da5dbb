"""Checks that a public function's tensor arguments run before it uses them.

A list, a NumPy array or ``None`` passed where a tensor is expected would otherwise fail
deep inside (``AttributeError: 'list' object has no attribute 'ndim'``); these checks
fail at the door with a ``TypeError`` that names the argument and what was expected::

    require_tensor("queries", queries, "of shape (M, D)")
    # TypeError: queries must be a torch.Tensor of shape (M, D); got a list of 20
"""

from __future__ import annotations

import operator

from torch import Tensor

__all__ = ["as_integer", "describe", "require_positive_int", "require_tensor"]


def describe(value: object) -> str:
    """What ``value`` is, for an error message: its type, with the length of a list or
    tuple (``"a list of 20"``) and the shape of an array (``"ndarray of shape (2, 3)"``)."""
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return f"{type(value).__name__} of shape {shape}"
    return type(value).__name__


def require_tensor(name: str, value: object, expected: str) -> None:
    """Raise a TypeError unless ``value`` is a :class:`torch.Tensor`.

    Args:
        name: the argument, as the caller named it (``"queries"``).
        value: what was passed.
        expected: the tensor wanted, after "a torch.Tensor" (``"of shape (N, D)"``).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {expected}; got {describe(value)}")


def require_positive_int(name: str, value: object) -> None:
    """Raise a TypeError unless ``value`` is an int (not a bool), a ValueError unless it
    is at least 1; both name ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value}")


def as_integer(name: str, value: object) -> int:
    """``value`` as a Python int (NumPy and torch integers too); ValueError otherwise.

    >>> as_integer("seed", True)
    Traceback (most recent call last):
    ValueError: seed must be an integer, got True
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
