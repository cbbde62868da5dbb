"""Documented config fields, and the command-line flags made from them.

A run's settings are a small dataclass whose every field says what it does and what
value to try (as the official ``main_dino.py`` documents its arguments)::

    @dataclass
    class MyConfig:
        lr: float = config_field(5e-4, "Peak learning rate for a batch of 256.")
        precision: str = config_field("auto", "Arithmetic of the forward pass.",
                                      choices=("auto", "fp32", "bf16"))

and the command line gets one flag per field, with that text as its help::

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, MyConfig)         # --lr 0.001, --precision fp32
    config = MyConfig(**flag_values(parser.parse_args(), MyConfig))

Every flag defaults to ``None``, so :func:`flag_values` holds only what was typed and the
dataclass (or a profile's presets) supplies the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any

__all__ = ["add_dataclass_flags", "comma_names", "config_field", "flag_name", "flag_values"]


def config_field(default: Any, help: str, *, choices: Sequence[str] | None = None) -> Any:
    """A dataclass field with its default and the help text the command line shows.

    Args:
        default: the field's default (immutable: a number, string, tuple or None).
        help: what the setting does and what value to try; ``metadata["help"]``.
        choices: the only values the command line accepts (``metadata["choices"]``).
    """
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    """``"teacher_temp"`` -> ``"--teacher-temp"``."""
    return "--" + name.replace("_", "-")


def comma_names(text: str) -> tuple[str, ...]:
    """``"star,heart"`` -> ``("star", "heart")``; ``""`` or ``"none"`` -> ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Collection[str] = (),
    default_label: str = "default",
    prefix: str = "",
) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (or an argument group).

    The flag is the field's name with dashes (:func:`flag_name`); its type comes from the
    annotation: ``bool`` gives ``--x/--no-x``, ``tuple[float, float]`` two numbers,
    ``tuple[int, int]`` two whole numbers, ``tuple[str, ...]`` comma-separated names
    (:func:`comma_names`), ``int``, ``float`` or ``str`` (``X | None`` counts as ``X``).
    The help is ``metadata["help"]`` followed by ``(<default_label>: <the field's
    default>)``; ``metadata["choices"]`` restricts the
    values. Every flag defaults to ``None`` (not given).

    Args:
        parser: where the flags go.
        cls: the config dataclass.
        skip: names of fields that get no flag (nested configs, paths set otherwise).
        default_label: the word before the default in the help text.
        prefix: put before each field's name, for a second config whose field names
            clash with the first's (``prefix="critters_"``: ``--critters-saturation``,
            read back by ``flag_values(args, cls, prefix="critters_")``).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f"{f.metadata.get('help', '')} ({default_label}: {default})".replace("%", "%%")
        kwargs = _parse_kwargs(_without_none(hints[f.name]))
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag_name(prefix + f.name), default=None, help=text, **kwargs)


def flag_values(
    args: argparse.Namespace, cls: type, *, skip: Collection[str] = (), prefix: str = ""
) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given (not ``None``), lists made tuples;
    ``prefix`` as given to :func:`add_dataclass_flags`."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None and f.name not in skip:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def _without_none(annotation: Any) -> Any:
    """``X | None`` (or ``Optional[X]``) -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _parse_kwargs(annotation: Any) -> dict[str, Any]:
    """``add_argument`` keywords that parse a value of type ``annotation``."""
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(annotation) is tuple:
        items = typing.get_args(annotation)
        if items and all(item is float for item in items):
            return {"type": float, "nargs": len(items), "metavar": "X"}
        if items and all(item is int for item in items):
            return {"type": int, "nargs": len(items), "metavar": "N"}
        return {"type": comma_names, "metavar": "A,B,C"}
    parse: Callable[[str], Any] = annotation if annotation in (int, float) else str
    return {"type": parse}
