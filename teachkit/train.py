"""The command line of the course: ``python -m teachkit.train <method> ...``.

Examples::

    # two CPU cores, a few minutes: the small CNN on the procedural critters stream
    python -m teachkit.train dino --preset quick --out runs/dino_quick

    # the recipe of a shipped model (teachkit/dino/presets.py), a flag overriding it
    python -m teachkit.train dino --preset vit_nano_critters --epochs 60 --out runs/vit

    # a GPU: ViT-S/4 on CIFAR-10, 100 epochs, resumable
    python -m teachkit.train dino --preset full --dataset cifar10 --arch vit_small \\
        --patch-size 4 --epochs 100 --batch-size 256 --out runs/dino_cifar

    # several GPUs of one machine (each process gets --batch-size images)
    torchrun --nproc_per_node=4 -m teachkit.train dino --preset full --out runs/ddp

    # Colab: fetch CIFAR-10 into the fresh runtime, keep checkpoints on Google Drive,
    # re-run the same line to resume
    python -m teachkit.train dino --preset full --download --out /content/drive/MyDrive/dino

Every ``DINOConfig`` field is a flag (``--teacher-temp 0.07``, ``--no-norm-last-layer``,
``--local-crops-number 6`` ...) with the help text of the field, every ``CrittersConfig``
field a data-variant flag (``--critters-context-strength 0``), ``--init NAME`` starts from
a shipped backbone; ``--preset`` (alias ``--profile``) only changes the defaults (see
:data:`PRESETS`). The output directory receives
``checkpoint.pt`` (atomic, resumed automatically) and ``metrics.json`` (config, per-step
and per-epoch history).

``ship`` turns any finished run folder into a shipped model with its card::

    python -m teachkit.train sam --steps 2000 --out runs/my_sam        # no --ship: try first
    python -m teachkit.train ship --run runs/my_sam --name my_sam      # then ship it
    python -m teachkit.train ship --run runs/dino --name my_dino --description "..."

This module joins the methods' command lines: each method registers its sub-commands
from its own package (:mod:`teachkit.dino.cli`, :mod:`teachkit.baselines`,
:mod:`teachkit.sam.cli`), every sub-command sets ``func`` and, where it trains a model in
one go, ``build`` (the model from the parsed flags); :func:`main` runs ``func`` with the
arguments recorded for ``metrics.json`` (:func:`teachkit.infra.run.parse_args_recorded`).
:func:`build_from_command` rebuilds the model of any recorded command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from teachkit import pretrained
from teachkit.dino import cli as dino_cli
from teachkit.dino.presets import PRESETS as DINO_PRESETS
from teachkit.infra.cli_checks import usage_errors
from teachkit.infra.run import parse_args_recorded, portable_command
from teachkit.infra.weights import load_strict, read_state_dict

__all__ = ["PRESETS", "build_from_command", "build_parser", "main", "run_ship"]

#: Defaults of ``--profile``, by sub-command; explicit flags override them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"dino": DINO_PRESETS}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m teachkit.train`` with every method's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m teachkit.train", description="Training commands of the teachkit course."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dino_cli.add_dino_commands(sub)  # dino
    from teachkit.baselines import add_commands

    add_commands(sub)  # autoencoder, contrastive, supervised (Chapter 1 and the baselines)
    from teachkit.sam.cli import add_sam_parser

    add_sam_parser(sub)  # sam, unet (the tiny SAM and its class-aware baseline)
    _add_ship_parser(sub)  # ship (any run folder; ship-dino, its old name, still works)
    return parser


def build_from_command(command: str) -> nn.Module:
    """The random-weight model a recorded ``python -m teachkit.train ...`` line trains.

    The line is parsed by :func:`build_parser` and built by its sub-command's ``build``,
    the very function that command trains with (a DINO run: its teacher backbone). A
    card's ``command`` thus says the architecture of its weights.

    Raises:
        ValueError: the line runs no ``teachkit.train`` sub-command that builds a model.
    """
    words = shlex.split(command)
    if "teachkit.train" not in words:
        raise ValueError(f"no python -m teachkit.train command in {command!r}")
    args = build_parser().parse_args(words[words.index("teachkit.train") + 1 :])
    if not hasattr(args, "build"):
        raise ValueError(f"the {args.command!r} command builds no model: {command!r}")
    return args.build(args)


def _add_ship_parser(sub: argparse._SubParsersAction) -> None:
    """The ``ship`` sub-command (alias ``ship-dino``): :func:`run_ship`."""
    p = sub.add_parser(
        "ship",
        aliases=["ship-dino"],
        help="ship any finished run folder as a pretrained model with its card",
        description="Write NAME.pt, NAME.json and NAME.md into teachkit/pretrained from the "
        "--out folder of a finished run. A run of sam, unet, autoencoder, contrastive or "
        "supervised ships the card it wrote (its weights rebuilt by its own command, "
        "loaded strictly); a DINO run is measured first (k-NN of the teacher, of its "
        "random initialisation and of raw pixels; attention Jaccard for ViTs).",
    )
    p.add_argument("--run", required=True, type=Path, help="the run's --out folder")
    p.add_argument("--name", required=True, help="file stem of the shipped checkpoint")
    p.add_argument("--description", default=None,
                   help="one sentence for the card (required for DINO runs; the others "
                   "keep the one their command wrote unless this is given)")
    dino = p.add_argument_group("DINO runs only")
    dino.add_argument("--command", default=None, dest="train_command",
                      help="training command, for runs whose metrics.json lacks it")
    dino.add_argument("--hardware", default=None, help="likewise, where it trained")
    dino.add_argument("--wall-time-s", type=float, default=None,
                      help="likewise, its wall time")
    dino.add_argument("--history-only", action="store_true",
                      help="ship the card and its curves, not the weights (ablations)")
    dino.add_argument("--split", type=int, nargs=2, default=(5000, 1000),
                      metavar=("TRAIN", "TEST"),
                      help="the card's k-NN bank and queries: the dataset's "
                      "splits(TRAIN, TEST, seed=0) (5000 1000, the split every chapter "
                      "uses; smaller only for smoke tests)")
    p.set_defaults(func=run_ship, _parser=p)


def run_ship(args: argparse.Namespace) -> int:
    """``ship``: write the run's weights and card into :data:`teachkit.pretrained.SHIPPED_DIR`.

    A run of a one-go command (its ``metrics.json`` records ``method`` and ``card``,
    :func:`teachkit.pretrained.finish_run`) ships that card under ``--name``, its command
    naming ``runs/NAME``; a DINO run goes to :func:`teachkit.dino.cli.run_ship`.
    """
    metrics_path = args.run / "metrics.json"
    with usage_errors(args):
        pretrained.check_shipped_name(args.name, "--name")
        if not metrics_path.is_file():
            raise ValueError(f"--run {str(args.run)!r} has no metrics.json: expected the "
                             "--out folder of a finished training run")
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{metrics_path} is not valid JSON ({err}); is the run still "
                             "writing it?") from None
    if "method" not in metrics:  # the DINO trainer's schema: config, run, steps, epochs
        return dino_cli.run_ship(args)
    dino_only = [flag for flag, given in (
        ("--command", args.train_command), ("--hardware", args.hardware),
        ("--wall-time-s", args.wall_time_s), ("--history-only", args.history_only),
        ("--split", tuple(args.split) != (5000, 1000))) if given]
    with usage_errors(args, ValueError, FileNotFoundError):
        if dino_only:
            raise ValueError(f"{', '.join(dino_only)} apply to DINO runs only; "
                             f"{args.run} is a {metrics['method']} run")
        card = pretrained.ModelCard(**metrics["card"])
        model = build_from_command(card.command)
        load_strict(model, read_state_dict(args.run / "model.pt", prefixes=()),
                    source=f"{args.run}/model.pt")
    card = replace(card, name=args.name, description=args.description or card.description,
                   command=portable_command(card.command, args.name))
    pretrained.save_shipped(model.cpu(), card)
    print(card.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command on ``argv`` (``None``: the process's arguments); its exit status."""
    args = parse_args_recorded(build_parser(), argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
