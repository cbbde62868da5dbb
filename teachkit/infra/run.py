"""What every training run shares, whatever it trains.

* how it fails when training diverges: :class:`NonFiniteLossError`
  (:func:`check_finite_loss` for a trainer that has no more to say);
* what it records step by step: :class:`StepHistory`, which each trainer's history extends;
* where it keeps itself: :func:`save_run` writes ``checkpoint.pt`` (atomically,
  :mod:`teachkit.infra.checkpoint`) and ``metrics.json``; :func:`resume_run` reads the latest
  checkpoint back under **one resume policy**: a run may be continued with other
  settings, but every setting that changed is named in a warning, except those the
  trainer lists as free to change (where the run goes, how often it saves or is
  monitored, the device): a resumed run then matches an uninterrupted one. The
  run-level facts that make a run what it is (the data it trains on, the model it
  started from; :func:`recorded_run`) may not change at all (:func:`check_same_run`);
* the command that started it: :func:`parse_args_recorded` keeps the arguments on the
  parsed namespace and :func:`command_line` writes them back for ``metrics.json`` and the
  model cards, as a line that can be pasted into a shell (with the thread count of a CPU
  run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachkit.infra.checkpoint import CHECKPOINT_NAME, load_latest, save_checkpoint

__all__ = [
    "METRICS_NAME",
    "NonFiniteLossError",
    "StepHistory",
    "changed_settings",
    "check_finite_loss",
    "check_same_run",
    "command_line",
    "portable_command",
    "parse_args_recorded",
    "recorded_argv",
    "recorded_run",
    "resume_run",
    "save_run",
    "write_metrics",
]

METRICS_NAME = "metrics.json"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and likely causes.

    A :class:`FloatingPointError`, so code that catches that keeps working.
    """


def check_finite_loss(loss: float, *, step: int, trainer: str, lr: float) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` (of step ``step``) is NaN or infinite.

    Args:
        loss: the step's loss, a Python number (read back from the device).
        step: the step it belongs to (from 0).
        trainer: what was trained, the first word of the message ("autoencoder").
        lr: the peak learning rate, named in the message as the likely cause.
    """
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"{trainer} loss is {loss} at step {step}; training stopped. Likely cause: a "
            f"learning rate too high (peak lr {lr:.2e}): lower lr. Non-finite input images "
            "would do it too."
        )


@dataclass
class StepHistory:
    """What a run recorded, one dict per step (each trainer's history adds its own fields).

    Attributes:
        steps: one dict per logged step (``step``, ``loss``, ...).
    """

    steps: list[dict[str, float]] = field(default_factory=list)

    def column(self, name: str) -> list[float]:
        """One quantity over the steps, e.g. ``history.column("loss")`` for a plot."""
        return [row[name] for row in self.steps]


# ----------------------------------------------------------------------- run folder
def write_metrics(out_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics`` (plain values) as ``out_dir/metrics.json``; make the folder."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / METRICS_NAME).write_text(json.dumps(metrics, indent=1))


def save_run(out_dir: str | Path, state: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Write ``state`` as ``out_dir/checkpoint.pt`` (atomically), then ``metrics.json``.

    Args:
        out_dir: the run's folder (made if needed).
        state: tensors, state dicts and plain values; ``state["config"]``, the run's
            settings as plain values, is what :func:`resume_run` compares.
        metrics: what ``metrics.json`` holds.
    """
    save_checkpoint(state, Path(out_dir) / CHECKPOINT_NAME)
    write_metrics(out_dir, metrics)


def resume_run(
    out_dir: str | Path | None,
    config: dict[str, Any],
    *,
    free_to_change: Collection[str],
    stacklevel: int = 1,
) -> dict[str, Any] | None:
    """The latest checkpoint of ``out_dir`` to continue from, or ``None`` (a fresh run).

    The one resume policy: every setting of ``config`` whose value differs from the
    checkpoint's ``config`` is named in a warning, except ``free_to_change``
    (:func:`changed_settings`). The run goes on with the new values.

    Args:
        out_dir: the run's folder; ``None`` (nothing is saved) gives ``None``.
        config: this session's settings as plain values (``cfg.to_dict()``).
        free_to_change: names of the settings that may change without a warning.
        stacklevel: as for :func:`warnings.warn`, counted from the caller of this
            function (1: the caller's line).

    Returns:
        The checkpoint's dict (``torch.load`` of :func:`save_run`'s ``state``) or ``None``.
    """
    if out_dir is None:
        return None
    ckpt = load_latest(out_dir)
    if ckpt is None:
        return None
    changed = changed_settings(ckpt["config"], config, free_to_change=free_to_change)
    if changed:
        warnings.warn(
            f"resuming from {out_dir} with changed settings {changed} (saved, now): the "
            "run will not match an uninterrupted one",
            stacklevel=stacklevel + 1,
        )
    return ckpt


def recorded_run(out_dir: str | Path) -> dict[str, Any]:
    """The facts ``out_dir/metrics.json`` records about its run (its ``"run"`` dict).

    ``{}`` when there is no ``metrics.json``, or it records none; an unreadable one is
    named in a warning and counts as recording nothing (the run rewrites it).
    """
    path = Path(out_dir) / METRICS_NAME
    if not path.is_file():
        return {}
    try:
        run = json.loads(path.read_text()).get("run")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        warnings.warn(f"{path} is unreadable ({err}); its run facts are not compared", stacklevel=2)
        return {}
    return dict(run) if isinstance(run, dict) else {}


def check_same_run(
    out_dir: str | Path, saved: dict[str, Any], now: dict[str, Any], names: Collection[str]
) -> None:
    """Raise a ValueError if a run-level setting in ``names`` differs between the run
    that ``out_dir`` holds (``saved``) and this session (``now``).

    Unlike the settings :func:`resume_run` warns about, these make the run what it is
    (what it trains on, where it started): continuing under another value would record
    a history that no single setting produced. A name either side does not record (an
    older ``metrics.json``) is not compared. Values compare as JSON does (tuples and
    lists alike).
    """
    changed = [
        f"{name}: {saved[name]!r} when the run started, {now[name]!r} now"
        for name in names
        if name in saved and name in now and _as_json(saved[name]) != _as_json(now[name])
    ]
    if changed:
        raise ValueError(
            f"cannot resume the run in {out_dir} with other run settings ({'; '.join(changed)}): "
            "they decide what the run trains on. Use the same ones, or another output folder "
            "for a new run"
        )


def _as_json(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), for comparing."""
    return json.loads(json.dumps(value))


def changed_settings(
    saved: dict[str, Any], now: dict[str, Any], *, free_to_change: Collection[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """``{name: (saved value, value now)}`` for every setting of ``now`` that changed.

    Tuples and lists compare alike; a nested config (a dict) is compared field by field,
    named ``outer.inner``; a setting the saved config lacks counts as ``None``.
    """
    before, after = _flatten(saved), _flatten(now)
    return {
        name: (before.get(name), value)
        for name, value in after.items()
        if name not in free_to_change and _plain(before.get(name)) != _plain(value)
    }


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------- the command
def parse_args_recorded(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` (``None``: the process's arguments), keeping the
    arguments as ``args.argv`` for :func:`command_line`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def recorded_argv(args: argparse.Namespace) -> list[str]:
    """The arguments :func:`parse_args_recorded` kept (else the process's arguments)."""
    argv = getattr(args, "argv", None)
    return list(sys.argv[1:] if argv is None else argv)


def command_line(args: argparse.Namespace, program: str = "python -m teachkit.train") -> str:
    """The command that started the run, as ``metrics.json`` and the model cards record it.

    ``program`` and the recorded arguments (:func:`recorded_argv`), each quoted for a POSIX
    shell (:func:`shlex.quote`) so the line can be pasted back; preceded by
    ``OMP_NUM_THREADS=N`` when that variable is set, since the thread count matters for
    reproducing a CPU run::

        OMP_NUM_THREADS=1 python -m teachkit.train sam --holdout 'star, heart' --out runs/sam
    """
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return prefix + program + " " + " ".join(shlex.quote(arg) for arg in recorded_argv(args))


def portable_command(command: str, name: str) -> str:
    """``command`` with its ``--out`` folder replaced by ``runs/NAME``: a card names no
    folder of the machine that trained it, and the line can be pasted anywhere.

    >>> portable_command("python -m teachkit.train dino --out /tmp/x --lr 0.1", "m")
    'python -m teachkit.train dino --out runs/m --lr 0.1'
    """
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "--out" and i + 1 < len(words):
            words[i + 1] = f"runs/{name}"
        elif word.startswith("--out="):
            words[i] = f"--out=runs/{name}"
    return shlex.join(words)
