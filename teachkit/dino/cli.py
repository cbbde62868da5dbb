"""The ``dino`` sub-command of ``python -m teachkit.train``, and the shipping of DINO runs.

``dino`` trains (:func:`teachkit.dino.trainer.train_dino`) with every :class:`DINOConfig`
and :class:`MultiCropConfig` field as a flag (``--teacher-temp 0.07``,
``--no-norm-last-layer``, ``--local-crops-number 6`` ...) carrying the help text of the
field, every :class:`CrittersConfig` field as a data-variant flag (``--context-strength
0``), ``--init NAME`` to start from a shipped backbone, and ``--preset`` naming the recipe
the flags override (:data:`teachkit.dino.presets.PRESETS`). ``ship`` turns a finished
DINO run into a shipped checkpoint with its model card through :func:`run_ship`
(:func:`teachkit.dino.export.ship_run`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from teachkit import pretrained
from teachkit.data.critters import CrittersConfig
from teachkit.data.datasets import DATASETS, make_procedural, procedural_stream
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.config import DINOConfig
from teachkit.dino.presets import CPU_PRESETS, PRESETS
from teachkit.infra import distributed as dist
from teachkit.infra.cli_checks import check_device, check_output_folder, usage_errors
from teachkit.infra.config_fields import add_dataclass_flags, flag_values
from teachkit.infra.run import NonFiniteLossError, command_line

__all__ = [
    "add_dino_commands",
    "data_variant_from_args",
    "dino_config_from_args",
    "run_dino",
    "run_ship",
]

#: Fields of the start that must equal the recipe's for ``--init`` (the backbone's shape).
_BACKBONE_FIELDS: tuple[str, ...] = ("arch", "patch_size", "conv_stem")


def add_dino_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``dino`` (:func:`run_dino`) on an argparse ``subparsers`` object;
    ``args.func(args)`` runs it. ``ship`` (:mod:`teachkit.train`) hands DINO runs to
    :func:`run_ship`."""
    _add_dino_parser(subparsers)


def _add_dino_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``dino`` subcommand: all DINOConfig and MultiCropConfig fields as flags."""
    p = subparsers.add_parser(
        "dino",
        help="self-supervised DINO pre-training",
        description="Train DINO (teachkit.dino.trainer.train_dino). Flags left out take "
        "the --preset's value, then the config's default. Presets (teachkit/dino/presets.py): "
        + ", ".join(PRESETS)
        + ".",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--preset",
        "--profile",
        dest="profile",
        choices=list(PRESETS),
        default="quick",
        help="the recipe the other flags override: quick (two CPU cores, minutes, "
        "critters), curve (the 1,000-step CPU learning curve), cnn_critters and "
        "vit_nano_critters (the shipped models, one GPU), shapes, full (CIFAR-10, one GPU)",
    )
    run.add_argument(
        "--init",
        default=None,
        metavar="NAME",
        help="start the student from a shipped DINO backbone (teachkit/pretrained; its "
        "architecture must match the recipe's, loaded strictly) instead of the random "
        "initialisation, with a fresh head; recorded in metrics.json and on the card",
    )
    run.add_argument(
        "--dataset",
        choices=list(DATASETS),
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
    critters = p.add_argument_group(
        "critters data variant (CrittersConfig; --dataset critters only)"
    )
    # saturation is also a colour-jitter flag (MultiCropConfig): the data's flags get a
    # prefix, --critters-context-strength 0
    add_dataclass_flags(critters, CrittersConfig, default_label="default", prefix="critters_")
    # run_dino reports configuration errors as usage errors
    p.set_defaults(func=run_dino, build=_build_dino, _parser=p)


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


def data_variant_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The critters data variant: the ``CrittersConfig`` fields the preset and the flags
    set (``{}``: the defaults), as ``metadata.json`` and the card record it."""
    names = {f.name for f in dataclasses.fields(CrittersConfig)}
    preset = {k: v for k, v in PRESETS[args.profile].items() if k in names}
    typed = flag_values(args, CrittersConfig, prefix="critters_")
    variant = {**preset, **typed}
    if variant and _resolved(args, "dataset") != "critters":
        flags = ", ".join(f"--critters-{k.replace('_', '-')}" for k in variant)
        raise ValueError(f"{flags}: data-variant flags need --dataset critters")
    CrittersConfig(**variant)  # a bad value is an error before the first step
    return {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()}


def dino_config_from_args(args: argparse.Namespace) -> DINOConfig:
    """DINOConfig from parsed flags over the preset's values."""
    values = _config_values(args, DINOConfig)
    values["crops"] = MultiCropConfig(**_config_values(args, MultiCropConfig))
    dataset = _resolved(args, "dataset")
    values["out_dir"] = args.out or str(Path("runs") / f"dino_{dataset}_{values['arch']}")
    on_cpu = args.profile in CPU_PRESETS
    if values.get("device") is None and on_cpu and not dist.is_distributed():
        values["device"] = "cpu"
    if not DATASETS[dataset].procedural and args.profile == "full" and args.steps_per_epoch is None:
        values["steps_per_epoch"] = None  # an epoch is one pass over the 50,000 images
    return DINOConfig(**values)


def _build_dino(args: argparse.Namespace) -> Any:
    """The ``dino`` command's teacher backbone at the run's random initialisation
    (``build``: :func:`teachkit.hub.load` rebuilds a shipped one from its card's command)."""
    from teachkit.dino.export import build_run_backbone

    return build_run_backbone(dino_config_from_args(args))


def _dino_data(
    args: argparse.Namespace, cfg: DINOConfig, variant: dict[str, Any]
) -> tuple[Any, tuple | None]:
    """The training stream and the k-NN monitor's (bank, labels, queries, labels)."""
    dataset = _resolved(args, "dataset")
    config = CrittersConfig(**variant) if variant else None
    n_train, n_test = _resolved(args, "knn_train"), _resolved(args, "knn_test")
    size = cfg.crops.global_size
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    if DATASETS[dataset].procedural:
        rank, world = dist.rank(), dist.world_size()
        # drawn where training runs: no host-to-device copy, no loader bottleneck
        data = procedural_stream(
            dataset,
            cfg.batch_size,
            resolution=size,
            seed=cfg.seed * world + rank,
            device=dist.device_for_process(cfg.device),
            shortcuts=args.shortcuts,
            config=config,
        )
        # the monitor's images: other seeds than the splits the model cards are measured on
        kw = dict(resolution=size, shortcuts=args.shortcuts, config=config)
        bank = make_procedural(dataset, n_train or 5000, seed=10_000 + cfg.seed, **kw)
        queries = make_procedural(dataset, n_test or 1000, seed=20_000 + cfg.seed, **kw)
        eval_data = (bank.images, bank.labels, queries.images, queries.labels)
    else:  # a dataset on disk (CIFAR-10)
        from teachkit.data.stream import ImageBatches

        load = DATASETS[dataset].load
        images, labels = load(args.data_root, train=True, download=args.download)
        test_images, test_labels = load(args.data_root, train=False, download=args.download)
        # 150 MB of uint8: keep the training set on the GPU, batches are gathered there
        data = ImageBatches(
            images.to(dist.device_for_process(cfg.device)), cfg.batch_size, seed=cfg.seed
        )
        n_train, n_test = n_train or len(images), n_test or len(test_images)
        eval_data = (images[:n_train], labels[:n_train], test_images[:n_test], test_labels[:n_test])
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


def shipped_start(name: str, cfg: DINOConfig) -> tuple[Any, dict[str, Any]]:
    """The student backbone for ``--init NAME``: ``cfg``'s architecture holding the
    weights of the shipped DINO model ``name`` (loaded strictly), and what ``metrics.json``
    records of it (name, command, hardware, results of its card).

    Raises:
        ValueError: ``name`` is not shipped, its card records no DINO config, or its
            backbone (arch, patch size, conv stem) is not the recipe's.
    """
    from teachkit.dino.export import build_run_backbone

    if name not in pretrained.available():
        raise ValueError(
            f"--init: unknown shipped model {name!r}; expected one of "
            f"{', '.join(pretrained.available())}"
        )
    card = pretrained.load_card(name)
    if not card.config.get("arch"):
        raise ValueError(f"--init {name}: its card records no DINO config (not a DINO model)")
    start = DINOConfig.from_dict(card.config)
    theirs = {k: getattr(start, k) for k in _BACKBONE_FIELDS}
    ours = {k: getattr(cfg, k) for k in _BACKBONE_FIELDS}
    if theirs != ours:
        raise ValueError(f"--init {name}: its backbone is {theirs}, the recipe asks for {ours}")
    backbone = build_run_backbone(cfg)
    pretrained.load_shipped(name, backbone)
    info = {"name": name, "command": card.command, "hardware": card.hardware,
            "results": card.results}
    return backbone, info


def _prepare_dino(args: argparse.Namespace) -> tuple[DINOConfig, Any, tuple | None, Any, dict]:
    """Config, data, k-NN data, start backbone (``None``: random init) and the run-level
    facts for ``metrics.json``, checked before the first step: a configuration error is a
    usage error (``parser.error``: message and exit status 2, no traceback)."""
    from teachkit.dino.inputs import check_run_inputs

    with usage_errors(args, ValueError, FileNotFoundError):
        cfg = dino_config_from_args(args)
        variant = data_variant_from_args(args)
        _check_dino_args(args, cfg)
        check_output_folder(cfg.out_dir)
        check_device(cfg.device)
        backbone, start = (None, None) if args.init is None else shipped_start(args.init, cfg)
        data, eval_data = _dino_data(args, cfg, variant)
        check_run_inputs(cfg, eval_data)
    run_info = {
        "dataset": _resolved(args, "dataset"),
        "shortcuts": bool(args.shortcuts),
        "data_variant": variant,
        "init": start,
        "preset": args.profile,
        "knn_train": _resolved(args, "knn_train"),
        "knn_test": _resolved(args, "knn_test"),
    }
    return cfg, data, eval_data, backbone, run_info


def run_dino(args: argparse.Namespace) -> int:
    """``dino``: train (resuming from ``--out``); the exit status (1: the run failed)."""
    from teachkit.dino.trainer import UniformCollapseError, train_dino
    from teachkit.infra.hardware import hardware_name

    dist.init_distributed()
    try:
        cfg, data, eval_data, backbone, run_info = _prepare_dino(args)
        run_info["command"] = command_line(args)
        run_info["hardware"] = hardware_name(dist.device_for_process(cfg.device))
        try:
            history = train_dino(
                cfg,
                data,
                backbone=backbone,
                eval_data=eval_data,
                progress=not args.no_progress,
                run_info=run_info,
            )
        except (UniformCollapseError, NonFiniteLossError, ValueError) as err:
            # ValueError: a resumed run whose recorded dataset, data variant or start differ
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


def run_ship(args: argparse.Namespace) -> int:
    """``ship`` of a DINO run: measure it, write its checkpoint and model card; the exit
    status."""
    from teachkit.dino.export import ship_run

    if not args.description:
        args._parser.error("--description is required to ship a DINO run (one sentence "
                           "for its card)")

    with usage_errors(args, ValueError, FileNotFoundError):  # a bad --name, an unreadable run
        card = ship_run(
            args.run,
            args.name,
            args.description,
            command=args.train_command,
            hardware=args.hardware,
            wall_time_s=args.wall_time_s,
            history_only=args.history_only,
            n_train=args.split[0],
            n_test=args.split[1],
        )
    print(card.summary())
    return 0
