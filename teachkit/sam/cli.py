"""The ``sam`` and ``unet`` sub-commands of ``python -m teachkit.train``.

``add_sam_parser(subparsers)`` registers them; each trains (resuming from ``--out``),
evaluates on the fixed held-out scenes, writes ``model.pt`` and ``metrics.json``, and with
``--ship NAME`` the fp16 checkpoint and its model card into :mod:`teachkit.pretrained`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from teachkit.data.datasets import SCENE_DATASETS
from teachkit.infra.config_fields import add_dataclass_flags, flag_values
from teachkit.infra.run import command_line, parse_args_recorded
from teachkit.sam.config import SamTrainConfig


def _config_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The config from the flags, checked with the run flags before any training: a bad
    value is a usage error (``parser.error``: message, exit status 2, no traceback)."""
    from teachkit.infra.cli_checks import check_device, check_output_folder, usage_errors
    from teachkit.pretrained import check_shipped_name

    with usage_errors(args):
        cfg = cls(**flag_values(args, cls))
        if args.eval_scenes < 1:
            raise ValueError(f"--eval-scenes must be >= 1, got {args.eval_scenes}")
        if args.ship is not None:
            check_shipped_name(args.ship, "--ship")
        check_output_folder(args.out)
        check_device(cfg.device)
    return cfg


def add_sam_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sam`` and ``unet`` sub-commands on an argparse ``subparsers`` object.

    Each sets ``func`` (``args.func(args)`` runs it and returns an exit code):
    :func:`run_sam_command` and :func:`run_unet_command`.
    """
    from teachkit.sam.unet import UNetTrainConfig

    p = subparsers.add_parser(
        "sam",
        help="Chapters 6-7: train the tiny SAM on shapes or critters scenes (interactive prompts)",
        description="Train SAM (teachkit.sam.train.train_sam) with simulated clicks and "
        "boxes, checkpointing into --out (re-run to resume); evaluate mIoU with 1 point, "
        "3 points and a box on held-out scenes, seen vs --holdout classes.",
    )
    add_dataclass_flags(p, SamTrainConfig, skip=("out_dir",))
    _add_run_flags(p)
    p.set_defaults(func=run_sam_command, build=_build_sam, _prog=p.prog, _parser=p)

    p = subparsers.add_parser(
        "unet",
        help="Chapter 6 baseline: a U-Net trained with class labels on shapes scenes",
        description="Train the class-aware U-Net baseline (teachkit.sam.unet) on the seen "
        "classes of the same scenes and measure it like SAM.",
    )
    add_dataclass_flags(p, UNetTrainConfig)
    _add_run_flags(p)
    p.set_defaults(func=run_unet_command, build=_build_unet, _prog=p.prog, _parser=p)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Output folder: checkpoint.pt, model.pt, metrics.json.",
    )
    p.add_argument(
        "--ship",
        default=None,
        metavar="NAME",
        help="Also write NAME.pt (fp16) and its model card into teachkit/pretrained.",
    )
    p.add_argument(
        "--eval-scenes",
        type=int,
        default=200,
        help="Held-out scenes of the final evaluation (fixed seed; 200).",
    )
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def _build_sam(args: argparse.Namespace) -> nn.Module:
    """The ``sam`` command's model, random weights (``build``: also rebuilds a shipped one;
    ``--init`` is not loaded here, the caller loads the weights it wants)."""
    from teachkit.sam.train import build_training_sam

    cfg = SamTrainConfig(**flag_values(args, SamTrainConfig))
    return build_training_sam(dataclasses.replace(cfg, init=None))


def _build_unet(args: argparse.Namespace) -> nn.Module:
    """The ``unet`` command's model, random weights."""
    from teachkit.sam.unet import UNetTrainConfig, build_unet

    return build_unet(UNetTrainConfig(**flag_values(args, UNetTrainConfig)))


def _finish(args, model, card_fields: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The run's card (its command, this machine, today) and :func:`finish_run`."""
    from teachkit.infra.hardware import hardware_name
    from teachkit.pretrained import ModelCard, finish_run

    program = args._prog.rsplit(" ", 1)[0]  # without the sub-command, which argv holds
    card = ModelCard(
        name=args.ship or args.out.name,
        command=command_line(args, program=program),
        hardware=hardware_name(next(model.parameters()).device),
        created=time.strftime("%Y-%m-%d"),
        **card_fields,
    )
    finish_run(args.out, model, card, metrics, method=args.command, ship=bool(args.ship))


def run_sam_command(args: argparse.Namespace) -> int:
    """``sam``: train (resuming from --out), evaluate on held-out scenes, write, ship."""
    from teachkit.sam.evaluate import EVAL_SEED, eval_scenes, evaluate_sam
    from teachkit.sam.train import train_sam

    cfg = _config_from_args(args, SamTrainConfig)
    cfg.out_dir = str(args.out)
    history = train_sam(cfg, progress=not args.no_progress)
    model = history.model
    seen = cfg.seen_class_ids
    scenes = eval_scenes(args.eval_scenes, resolution=cfg.resolution, dataset=cfg.dataset)
    result = evaluate_sam(model.cpu(), scenes, seen_classes=seen, progress=not args.no_progress)
    maker = SCENE_DATASETS[cfg.dataset].scenes.__name__
    start = f", fine-tuned from {cfg.init}" if cfg.init else ""
    summary = {k: round(v, 4) for k, v in result.summary().items()}
    stride = max(1, len(history.steps) // 200)
    _finish(
        args,
        model,
        {
            "description": f"Tiny SAM ({cfg.model}, {cfg.resolution} px{start}) trained on "
            f"{cfg.dataset} scenes with simulated clicks and boxes; mIoU on "
            f"{args.eval_scenes} held-out scenes, unseen = {', '.join(cfg.holdout) or 'none'}.",
            "seed": cfg.seed,
            "init": cfg.init or "",
            "data": f"{maker} at {cfg.resolution} px, classes {', '.join(cfg.seen_classes)}; "
            f"{cfg.steps} steps x {cfg.batch_size} fresh scenes; evaluated on "
            f"eval_scenes({args.eval_scenes}) (seed {EVAL_SEED})",
            "wall_time_s": round(history.wall_time_s, 1),
            "results": summary,
            "history": {
                "loss": [round(r["loss"], 4) for r in history.steps[::stride]],
                "iou_first": [round(r["iou_first"], 4) for r in history.steps[::stride]],
                "eval_step": [float(e["step"]) for e in history.evals],
                "eval_miou_1point": [round(e["miou_1point"], 4) for e in history.evals],
                "eval_miou_box": [round(e["miou_box"], 4) for e in history.evals],
            },
        },
        {
            "config": cfg.to_dict(),
            "evaluation": summary,
            "per_class_1point": result.per_class(cfg.class_names),
            **history.to_dict(),
        },
    )
    return 0


def run_unet_command(args: argparse.Namespace) -> int:
    """``unet``: train the class-aware baseline, evaluate like SAM, write, ship."""
    from teachkit.sam.evaluate import EVAL_SEED, eval_scenes
    from teachkit.sam.unet import UNetTrainConfig, evaluate_unet, train_unet

    cfg = _config_from_args(args, UNetTrainConfig)
    start = time.perf_counter()
    model, losses = train_unet(cfg, progress=not args.no_progress)
    wall = time.perf_counter() - start
    scenes = eval_scenes(args.eval_scenes, resolution=cfg.resolution)
    summary = {k: round(v, 4) for k, v in evaluate_unet(model.cpu(), scenes).items()}
    stride = max(1, len(losses) // 200)
    _finish(
        args,
        model,
        {
            "description": "Class-aware U-Net baseline (Chapter 6): per-pixel background + "
            f"{len(cfg.seen_classes)} seen classes, no prompt; cannot name unseen classes "
            f"({', '.join(cfg.holdout) or 'none'}).",
            "seed": cfg.seed,
            "data": f"make_scenes at {cfg.resolution} px, classes {', '.join(cfg.seen_classes)}; "
            f"evaluated on eval_scenes({args.eval_scenes}) (seed {EVAL_SEED})",
            "wall_time_s": round(wall, 1),
            "results": summary,
            "history": {"loss": [round(x, 4) for x in losses[::stride]]},
        },
        {"config": cfg.to_dict(), "evaluation": summary, "loss": losses},
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m teachkit.sam.cli sam|unet ...`` (the same as ``python -m teachkit.train``)."""
    parser = argparse.ArgumentParser(prog="python -m teachkit.sam.cli")
    add_sam_parser(parser.add_subparsers(dest="command", required=True))
    args = parse_args_recorded(parser, argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
