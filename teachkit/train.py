"""The command line of the course: ``python -m teachkit.train <method> ...``.

Examples::

    # two CPU cores, a few minutes: ViT-nano on the procedural shapes stream
    python -m teachkit.train dino --profile quick --out runs/dino_quick

    # a GPU: ViT-S/4 on CIFAR-10, 100 epochs, resumable
    python -m teachkit.train dino --profile full --dataset cifar10 --arch vit_small \\
        --patch-size 4 --epochs 100 --batch-size 256 --out runs/dino_cifar

    # several GPUs of one machine (each process gets --batch-size images)
    torchrun --nproc_per_node=4 -m teachkit.train dino --profile full --out runs/ddp

    # Colab: fetch CIFAR-10 into the fresh runtime, keep checkpoints on Google Drive,
    # re-run the same line to resume
    python -m teachkit.train dino --profile full --download --out /content/drive/MyDrive/dino

Every ``DINOConfig`` field is a flag (``--teacher-temp 0.07``, ``--no-norm-last-layer``,
``--local-crops-number 6`` ...) with the help text of the field; ``--profile`` only
changes the defaults (see :data:`PRESETS`). The output directory receives
``checkpoint.pt`` (atomic, resumed automatically) and ``metrics.json`` (config, per-step
and per-epoch history).

Methods are subcommands; a new one (``sam``) adds an ``add_<name>_parser`` function and
an entry in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teachkit import distributed as dist
from teachkit.data.datasets import DATASETS, PROCEDURAL, make_procedural, procedural_stream
from teachkit.models.registry import ARCHS

__all__ = ["PRESETS", "COMMANDS", "build_parser", "dino_config_from_args", "main"]

#: Defaults of ``--profile``; explicit flags override them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dino": {
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
}

_NO_FLAG = {"crops"}  # nested config: its fields get flags of their own
_CHOICES: dict[str, tuple[str, ...]] = {
    "arch": ARCHS,
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "interpolation": ("bicubic", "bilinear"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One flag for a dataclass field, typed from its annotation, help from metadata."""
    kind = str(f.type)
    text = f.metadata.get("help", "")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    text = f"{text} (config default: {default})".replace("%", "%%")
    if kind.startswith("tuple"):
        group.add_argument(
            _flag(f.name),
            type=float,
            nargs=kind.count("float"),
            default=None,
            metavar="X",
            help=text,
        )
    elif kind == "bool":
        group.add_argument(
            _flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=text
        )
    else:
        py_type = int if "int" in kind else float if "float" in kind else str
        group.add_argument(
            _flag(f.name), type=py_type, default=None, help=text, choices=_CHOICES.get(f.name)
        )


def add_dino_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``dino`` subcommand: all DINOConfig and MultiCropConfig fields as flags."""
    from teachkit.dino.augment import MultiCropConfig
    from teachkit.dino.config import DINOConfig

    presets = "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        for name, values in PRESETS["dino"].items()
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
    for f in dataclasses.fields(DINOConfig):
        if f.name not in _NO_FLAG and f.name != "out_dir":
            _add_field(model, f)
    crops = p.add_argument_group("multi-crop (MultiCropConfig)")
    for f in dataclasses.fields(MultiCropConfig):
        _add_field(crops, f)
    p.set_defaults(_parser=p)  # run_dino reports configuration errors as usage errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m teachkit.train", description="Training commands of the teachkit course."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_dino_parser(sub)
    add_ship_parser(sub)
    from teachkit.baselines import add_commands

    add_commands(sub)  # autoencoder, contrastive, supervised (Chapter 1 and the baselines)
    from teachkit.sam.cli import add_sam_parser

    add_sam_parser(sub)  # sam, unet (the tiny SAM and its class-aware baseline)
    return parser


def _resolved(args: argparse.Namespace, name: str, method: str = "dino") -> Any:
    """A flag's value, else the profile's preset, else None."""
    value = getattr(args, name, None)
    if value is None:
        value = PRESETS[method][args.profile].get(name)
    return value


def dino_config_from_args(args: argparse.Namespace):
    """DINOConfig from parsed flags over the profile's presets."""
    from teachkit.dino.augment import MultiCropConfig
    from teachkit.dino.config import DINOConfig

    def collect(cls) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(cls):
            value = _resolved(args, f.name)
            if value is not None and f.name not in _NO_FLAG:
                out[f.name] = tuple(value) if isinstance(value, list) else value
        return out

    values = collect(DINOConfig)
    values["crops"] = MultiCropConfig(**collect(MultiCropConfig))
    dataset = _resolved(args, "dataset")
    values["out_dir"] = args.out or str(Path("runs") / f"dino_{dataset}_{values['arch']}")
    if values.get("device") is None and args.profile == "quick" and not dist.is_distributed():
        values["device"] = "cpu"
    if dataset == "cifar10" and args.profile == "full" and args.steps_per_epoch is None:
        values["steps_per_epoch"] = None  # an epoch is one pass over the 50,000 images
    return DINOConfig(**values)


def _dino_data(args: argparse.Namespace, cfg) -> tuple[Any, tuple | None]:
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


def _check_dino_args(args: argparse.Namespace, cfg) -> None:
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


def _prepare_dino(args: argparse.Namespace):
    """Config, data and k-NN data, checked before the first step: a configuration error
    is a usage error (``parser.error``: message and exit status 2, no traceback)."""
    from teachkit.cli_checks import check_device, check_output_folder, usage_errors
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
    from teachkit.dino.trainer import NonFiniteLossError, UniformCollapseError, train_dino
    from teachkit.profiles import hardware_name

    dist.init_distributed()
    try:
        cfg, data, eval_data = _prepare_dino(args)
        run_info = {
            "command": "python -m teachkit.train " + " ".join(getattr(args, "argv", [])),
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


def add_ship_parser(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--command", default=None, dest="train_command",
                   help="training command, for runs whose metrics.json lacks it")
    p.add_argument("--hardware", default=None, help="likewise, where it trained")
    p.add_argument("--wall-time-s", type=float, default=None, help="likewise, its wall time")
    p.add_argument("--history-only", action="store_true",
                   help="ship the card and its curves, not the weights (ablations)")
    p.set_defaults(_parser=p)


def run_ship(args: argparse.Namespace) -> int:
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "dino": run_dino,
    "ship-dino": run_ship,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in metrics.json and model cards
    if args.command in COMMANDS:
        return COMMANDS[args.command](args)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
