"""Checks that the settings dataclasses run on their fields in ``__post_init__``.

Every run config of the course (:class:`~teachkit.dino.config.DINOConfig`,
:class:`~teachkit.dino.augment.MultiCropConfig`, :class:`~teachkit.sam.config.SamTrainConfig`,
:class:`~teachkit.sam.unet.UNetTrainConfig`, :class:`~teachkit.data.critters.CrittersConfig`,
:class:`~teachkit.data.shapes.ShapesConfig`) refuses a bad value where it is made, with a
message that names the field and the value expected, instead of failing steps later with
an ``IndexError`` or training on a silently wrong setting:

* :func:`check_field_types` checks every field against its annotation: ``bool`` only
  ``True``/``False`` (not 1), ``int`` a whole number (not ``True``, not 2.0), ``float`` a
  finite number (an int is fine, ``True``, NaN and inf are not), ``str`` a string,
  ``tuple[float, float]`` two numbers (a JSON list becomes a tuple), ``X | None``
  ``None`` or an ``X``, a nested config an instance of its class;
* :func:`check_range` and :func:`check_pair` check a number, or a ``(min, max)`` pair,
  against its bounds.

A value of the wrong type is a ``TypeError``; a value of the right type out of range
(NaN included) is a ``ValueError``. ::

    @dataclass
    class MyConfig:
        lr: float = 1e-3
        crop: tuple[float, float] = (0.4, 1.0)

        def __post_init__(self) -> None:
            check_field_types(self)
            check_range("lr", self.lr, low=0, low_open=True)
            check_pair("crop", self.crop, low=0, high=1, low_open=True)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from typing import Any

__all__ = ["check_field_types", "check_pair", "check_range", "check_seed"]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (strings under ``from __future__``)."""
    return typing.get_type_hints(cls)


def check_field_types(config: Any) -> None:
    """Check every field of the dataclass instance ``config`` against its annotation.

    Fields are normalised in place where the value is right but its container is not:
    a list for a ``tuple[...]`` becomes a tuple, a NumPy integer for an ``int`` a Python
    int, a path for a ``str`` field its string. Works on frozen dataclasses too.

    Raises:
        TypeError: a field whose value has the wrong type; the message names the field,
            the type expected and the value given.
        ValueError: a float field (or an element of a tuple of floats) that is NaN or
            infinite.
    """
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        checked = _checked(f.name, value, hints[f.name])
        if checked is not value:
            object.__setattr__(config, f.name, checked)


def _checked(name: str, value: Any, annotation: Any, nullable: bool = False) -> Any:
    """``value`` if it fits ``annotation`` (normalised, see :func:`check_field_types`);
    ``nullable``: the field is ``X | None`` (the message says so)."""
    alt = " or None" if nullable else ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _checked(name, value, rest[0], nullable=True)
        return value  # a union of several types: left to the config's own checks
    if annotation is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False{alt}, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer{alt}, got {value!r}")
        return value if type(value) is int else int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number{alt}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return value if type(value) in (int, float) else float(value)
    if annotation is str:
        if isinstance(value, os.PathLike) and name.endswith("_dir"):
            return os.fspath(value)
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string{alt}, got {value!r}")
        return value
    if origin is tuple:
        return _checked_tuple(name, value, args, alt)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, annotation):
            raise TypeError(
                f"{name} must be a {annotation.__name__}{alt}, got {type(value).__name__} {value!r}"
            )
    return value


def _checked_tuple(name: str, value: Any, args: tuple[Any, ...], alt: str = "") -> tuple[Any, ...]:
    """A tuple (or list) whose items fit ``args``: ``(X, ...)`` or one type per item."""
    variable = len(args) == 2 and args[1] is Ellipsis
    items = args[:1] if variable else args
    kinds = " or ".join(sorted({getattr(a, "__name__", str(a)) for a in items}))
    expected = f"a tuple of {kinds}" if variable else f"a tuple of {len(args)} {kinds}s"
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be {expected}{alt}, got {value!r}")
    if not variable and len(value) != len(args):
        raise ValueError(f"{name} must be {expected}, got {tuple(value)!r}")
    kind = (lambda i: args[0]) if variable else (lambda i: args[i])
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_checked(f"{name}[{i}]", item, kind(i)))
        except (TypeError, ValueError) as err:  # name the whole field as well
            raise type(err)(f"{err} (in {name} = {tuple(value)!r})") from None
    result = tuple(out)
    return value if isinstance(value, tuple) and result == value else result


def _bound(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``"in [0, 1]"``, ``"> 0"``, ``">= 1"``... for an error message."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "a number"


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise a ValueError ``"<name> must be <bounds>, got <value>"`` unless ``value``
    lies within the bounds (``None``: unbounded; ``*_open``: the bound itself excluded).
    ``value`` has passed :func:`check_field_types`: it is a number (NaN fails here)."""
    ok = not (isinstance(value, float) and math.isnan(value))
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be {_bound(low, high, low_open, high_open)}, got {value!r}")


def check_pair(
    name: str,
    pair: tuple[float, float],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise a ValueError unless ``pair`` is ``(min, max)`` with ``min <= max`` and both
    within the bounds (``low_open``: ``min > low``); the message names the field, the
    expected order and bounds, and the pair given."""
    lo, hi = pair
    ok = lo <= hi
    if low is not None:
        ok = ok and (lo > low if low_open else lo >= low)
    if high is not None:
        ok = ok and hi <= high
    if not ok:
        first = f"{low:g} {'<' if low_open else '<='} " if low is not None else ""
        last = f" <= {high:g}" if high is not None else ""
        raise ValueError(f"{name} must be (min, max) with {first}min <= max{last}, got {pair!r}")


def check_seed(name: str, value: int) -> None:
    """Raise a ValueError unless ``value`` fits a 64-bit signed integer (a torch seed)."""
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must be a 64-bit integer; got {value}")
