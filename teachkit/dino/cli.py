"""The ``dino`` and ``ship-dino`` sub-commands of ``python -m teachkit.train``.

``dino`` trains (:func:`teachkit.dino.trainer.train_dino`) with every :class:`DINOConfig`
and :class:`MultiCropConfig` field as a flag (``--teacher-temp 0.07``,
``--no-norm-last-layer``, ``--local-crops-number 6`` ...) carrying the help text of the
field; ``--profile`` only changes the defaults (:data:`PRESETS`). ``ship-dino`` turns a
finished run into a shipped checkpoint with its model card
(:func:`teachkit.dino.export.ship_run`). :func:`add_dino_commands` registers both.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from teachkit import distributed as dist
from teachkit.cli_checks import check_device, check_output_folder, usage_errors
from teachkit.config_fields import add_dataclass_flags, flag_values
from teachkit.data.datasets import DATASETS, PROCEDURAL, make_procedural, procedural_stream
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.config import DINOConfig
from teachkit.run import NonFiniteLossError, command_line

__all__ = ["PRESETS", "add_dino_commands", "dino_config_from_args", "run_dino", "run_ship"]

#: Defaults of ``--profile``; explicit flags override them.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {  # two CPU cores, minutes
        "dataset": "shapes",
        "arch": "vit_nano",
        "patch_size": 4,
        "drop_path_rate": 0.0,
        "out_dim": 1024,
        "hidden_dim": 512,
        "bottleneck_dim": 128,
        "epochs": 2,
        "steps_per_epoch": 40,
        "batch_size": 64,
        "warmup_epochs": 1,
        "local_crops_number": 4,
        "checkpoint_every": 20,
        "knn_train": 1000,
        "knn_test": 500,
    },
    "full": {  # one GPU, hours
        "dataset": "cifar10",
        "arch": "vit_small",
        "patch_size": 4,
        "drop_path_rate": 0.1,
        "out_dim": 65536,
        "epochs": 100,
        "steps_per_epoch": 200,
        "batch_size": 256,
        "warmup_epochs": 10,
        "local_crops_number": 8,
        "checkpoint_every": 500,
        "knn_train": 0,
        "knn_test": 0,
    },
}


def add_dino_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``dino`` (:func:`run_dino`) and ``ship-dino`` (:func:`run_ship`) on an
    argparse ``subparsers`` object; ``args.func(args)`` runs the one chosen."""
    _add_dino_parser(subparsers)
    _add_ship_parser(subparsers)


def _add_dino_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``dino`` subcommand: all DINOConfig and MultiCropConfig fields as flags."""
    presets = "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        for name, values in PRESETS.items()
    )
    p = subparsers.add_parser(
        "dino",
        help="self-supervised DINO pre-training",
        description="Train DINO (teachkit.dino.trainer.train_dino). Flags left out take "
        f"the --profile preset, then the DINOConfig default. Presets: {presets}.",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--profile",
        choices=["quick", "full"],
        default="quick",
        help="defaults for two CPU cores (quick) or a GPU (full)",
    )
    run.add_argument(
        "--dataset",
        choices=["shapes", "critters", "cifar10"],
        default=None,
        help="critters: endless procedural stream whose classes have natural-image "
        "statistics (offline; the quick profile's DINO data); shapes: procedural shapes, "
        "where only the silhouette carries the class (Chapter 3's shortcut lesson); "
        "cifar10: the 50k training images (needs --data-root or --download)",
    )
    run.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py")
    run.add_argument("--download", action="store_true", help="download CIFAR-10 if missing")
    run.add_argument(
        "--shortcuts",
        action="store_true",
        help="shapes only: per-image background hue, stripes and object colour (the "
        "shortcut DINO learns instead of shape; Chapter 3)",
    )
    run.add_argument(
        "--out",
        default=None,
        help="output directory (checkpoint.pt, "
        "metrics.json); re-running with the same one resumes. Default "
        "runs/dino_<dataset>_<arch>",
    )
    run.add_argument(
        "--knn-train",
        type=int,
        default=None,
        help="images of the k-NN bank for the per-epoch monitor (0: the whole training set)",
    )
    run.add_argument("--knn-test", type=int, default=None, help="k-NN query images (0: all)")
    run.add_argument("--no-eval", action="store_true", help="skip the k-NN monitor")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    model = p.add_argument_group("DINO (DINOConfig)")
    # crops is a nested config: its fields get flags of their own
    add_dataclass_flags(
        model, DINOConfig, skip=("crops", "out_dir"), default_label="config default"
    )
    crops = p.add_argument_group("multi-crop (MultiCropConfig)")
    add_dataclass_flags(crops, MultiCropConfig, default_label="config default")
    # run_dino reports configuration errors as usage errors
    p.set_defaults(func=run_dino, _parser=p)


def _resolved(args: argparse.Namespace, name: str) -> Any:
    """A flag's value, else the profile's preset, else None."""
    value = getattr(args, name, None)
    if value is None:
        value = PRESETS[args.profile].get(name)
    return value


def _config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` from the profile's presets, overridden by the flags given."""
    names = {f.name for f in dataclasses.fields(cls)}
    preset = {k: v for k, v in PRESETS[args.profile].items() if k in names}
    return {**preset, **flag_values(args, cls, skip=("crops",))}


def dino_config_from_args(args: argparse.Namespace) -> DINOConfig:
    """DINOConfig from parsed flags over the profile's presets."""
    values = _config_values(args, DINOConfig)
    values["crops"] = MultiCropConfig(**_config_values(args, MultiCropConfig))
    dataset = _resolved(args, "dataset")
    values["out_dir"] = args.out or str(Path("runs") / f"dino_{dataset}_{values['arch']}")
    if values.get("device") is None and args.profile == "quick" and not dist.is_distributed():
        values["device"] = "cpu"
    if dataset == "cifar10" and args.profile == "full" and args.steps_per_epoch is None:
        values["steps_per_epoch"] = None  # an epoch is one pass over the 50,000 images
    return DINOConfig(**values)


def _dino_data(args: argparse.Namespace, cfg: DINOConfig) -> tuple[Any, tuple | None]:
    """The training stream and the k-NN monitor's (bank, labels, queries, labels)."""
    dataset = _resolved(args, "dataset")
    n_train, n_test = _resolved(args, "knn_train"), _resolved(args, "knn_test")
    size = cfg.crops.global_size
    if dataset in PROCEDURAL:
        rank, world = dist.rank(), dist.world_size()
        # drawn where training runs: no host-to-device copy, no loader bottleneck
        data = procedural_stream(
            dataset,
            cfg.batch_size,
            resolution=size,
            seed=cfg.seed * world + rank,
            device=dist.device_for_process(cfg.device),
            shortcuts=args.shortcuts,
        )
        # the monitor's images: other seeds than the splits the model cards are measured on
        kw = dict(resolution=size, shortcuts=args.shortcuts)
        bank = make_procedural(dataset, n_train or 5000, seed=10_000 + cfg.seed, **kw)
        queries = make_procedural(dataset, n_test or 1000, seed=20_000 + cfg.seed, **kw)
        eval_data = (bank.images, bank.labels, queries.images, queries.labels)
    elif dataset == "cifar10":
        from teachkit.data.cifar import load_cifar10
        from teachkit.data.stream import ImageBatches

        images, labels = load_cifar10(args.data_root, train=True, download=args.download)
        test_images, test_labels = load_cifar10(args.data_root, train=False, download=args.download)
        # 150 MB of uint8: keep the training set on the GPU, batches are gathered there
        data = ImageBatches(
            images.to(dist.device_for_process(cfg.device)), cfg.batch_size, seed=cfg.seed
        )
        n_train, n_test = n_train or len(images), n_test or len(test_images)
        eval_data = (images[:n_train], labels[:n_train], test_images[:n_test], test_labels[:n_test])
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    return data, (None if args.no_eval else eval_data)


def _check_dino_args(args: argparse.Namespace, cfg: DINOConfig) -> None:
    """Flag values that only the command line has; ValueError naming the flag."""
    for flag in ("knn_train", "knn_test"):
        value = _resolved(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0 (0: all), got {value}")
    n_train = _resolved(args, "knn_train")
    if not args.no_eval and n_train and n_train < cfg.knn_k:
        raise ValueError(
            f"--knn-train {n_train} is smaller than --knn-k {cfg.knn_k}: the k-NN monitor "
            "needs at least k bank images (or pass --no-eval)"
        )


def _prepare_dino(args: argparse.Namespace) -> tuple[DINOConfig, Any, tuple | None]:
    """Config, data and k-NN data, checked before the first step: a configuration error
    is a usage error (``parser.error``: message and exit status 2, no traceback)."""
    from teachkit.dino.trainer import check_run_inputs

    with usage_errors(args, ValueError, FileNotFoundError):
        cfg = dino_config_from_args(args)
        _check_dino_args(args, cfg)
        check_output_folder(cfg.out_dir)
        check_device(cfg.device)
        data, eval_data = _dino_data(args, cfg)
        check_run_inputs(cfg, eval_data)
    return cfg, data, eval_data


def run_dino(args: argparse.Namespace) -> int:
    """``dino``: train (resuming from ``--out``); the exit status (1: the run failed)."""
    from teachkit.dino.trainer import UniformCollapseError, train_dino
    from teachkit.profiles import hardware_name

    dist.init_distributed()
    try:
        cfg, data, eval_data = _prepare_dino(args)
        run_info = {
            "command": command_line(args),
            "dataset": _resolved(args, "dataset"),
            "shortcuts": bool(args.shortcuts),
            "knn_train": _resolved(args, "knn_train"),
            "knn_test": _resolved(args, "knn_test"),
            "hardware": hardware_name(dist.device_for_process(cfg.device)),
        }
        try:
            history = train_dino(
                cfg, data, eval_data=eval_data, progress=not args.no_progress, run_info=run_info
            )
        except (UniformCollapseError, NonFiniteLossError) as err:
            print(f"python -m teachkit.train dino: error: {err}", file=sys.stderr)
            return 1
        if dist.is_main_process():
            loss = history.steps[-1]["loss"] if history.steps else float("nan")
            print(
                f"done: {len(history.steps)} steps, final loss {loss:.4f}; checkpoint and "
                f"metrics.json in {cfg.out_dir}"
            )
    finally:
        dist.cleanup()
    return 0


def _add_ship_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``ship-dino`` subcommand (teachkit.dino.export.ship_run)."""
    p = subparsers.add_parser(
        "ship-dino",
        help="ship a finished DINO run as a pretrained checkpoint with a model card",
        description="Evaluate a DINO run directory (k-NN of the teacher, of its random "
        "initialisation and of raw pixels; attention Jaccard for ViTs) and write "
        "NAME.pt, NAME.json and NAME.md into teachkit/pretrained.",
    )
    p.add_argument("--run", required=True, help="the run's --out directory")
    p.add_argument("--name", required=True, help="file stem of the shipped checkpoint")
    p.add_argument("--description", required=True, help="one sentence for the card")
    p.add_argument(
        "--command",
        default=None,
        dest="train_command",
        help="training command, for runs whose metrics.json lacks it",
    )
    p.add_argument("--hardware", default=None, help="likewise, where it trained")
    p.add_argument("--wall-time-s", type=float, default=None, help="likewise, its wall time")
    p.add_argument(
        "--history-only",
        action="store_true",
        help="ship the card and its curves, not the weights (ablations)",
    )
    p.set_defaults(func=run_ship, _parser=p)


def run_ship(args: argparse.Namespace) -> int:
    """``ship-dino``: write the run's checkpoint and model card; the exit status."""
    from teachkit.dino.export import ship_run

    if not Path(args.run).is_dir():
        args._parser.error(f"--run {args.run!r} is not a folder (the --out of a DINO run)")

    card = ship_run(
        args.run,
        args.name,
        args.description,
        command=args.train_command,
        hardware=args.hardware,
        wall_time_s=args.wall_time_s,
        history_only=args.history_only,
    )
    print(card.summary())
    return 0
