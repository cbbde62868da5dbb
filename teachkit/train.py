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

This module only joins the methods' command lines: each method registers its
sub-commands from its own package (:mod:`teachkit.dino.cli`, :mod:`teachkit.baselines`,
:mod:`teachkit.sam.cli`), every sub-command sets ``func``, and :func:`main` runs it with
the arguments recorded for ``metrics.json`` (:func:`teachkit.infra.run.parse_args_recorded`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from teachkit.dino import cli as dino_cli
from teachkit.dino.presets import PRESETS as DINO_PRESETS
from teachkit.infra.run import parse_args_recorded

__all__ = ["PRESETS", "build_parser", "main"]

#: Defaults of ``--profile``, by sub-command; explicit flags override them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"dino": DINO_PRESETS}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m teachkit.train`` with every method's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m teachkit.train", description="Training commands of the teachkit course."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dino_cli.add_dino_commands(sub)  # dino, ship-dino
    from teachkit.baselines import add_commands

    add_commands(sub)  # autoencoder, contrastive, supervised (Chapter 1 and the baselines)
    from teachkit.sam.cli import add_sam_parser

    add_sam_parser(sub)  # sam, unet (the tiny SAM and its class-aware baseline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command on ``argv`` (``None``: the process's arguments); its exit status."""
    args = parse_args_recorded(build_parser(), argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
