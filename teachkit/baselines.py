"""Command-line training of the course's baseline models on a procedural dataset.

``python -m teachkit.train autoencoder|contrastive|supervised ...`` trains one model on
``--dataset`` (shapes or critters), measures it on that dataset's fixed splits (train
5,000 / test 1,000, seed 0), writes
``model.pt`` and ``metrics.json`` into ``--out``, and with ``--ship NAME`` also writes
the checkpoint and its model card into :mod:`teachkit.pretrained`. Training checkpoints
into ``--out`` every ``--checkpoint-every`` steps; the same command resumes there.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from teachkit.data.datasets import PROCEDURAL, procedural_splits, procedural_stream
from teachkit.infra.cli_checks import check_device, check_output_folder, usage_errors
from teachkit.infra.config_fields import add_dataclass_flags, config_field, flag_values
from teachkit.infra.hardware import hardware_name, pick_device
from teachkit.infra.loop import StepLosses
from teachkit.infra.run import command_line
from teachkit.knn import extract_features, knn_accuracy
from teachkit.models.registry import build_backbone, check_arch, is_vit
from teachkit.pretrained import ModelCard, check_shipped_name, finish_run
from teachkit.profiles import seed_everything

__all__ = ["AutoencoderConfig", "BaselineConfig", "ContrastiveConfig", "SupervisedConfig",
           "add_commands"]


@dataclass
class BaselineConfig:
    """What every baseline command sets; each field is a flag (``--batch-size 64``)."""

    steps: int = config_field(6000, "Optimisation steps.")
    batch_size: int = config_field(128, "Images per step.")
    lr: float = config_field(2e-3, "Peak learning rate (one-cycle).")
    seed: int = config_field(0, "Seed of weights and data stream.")
    device: str | None = config_field(None, "cpu, cuda, mps; left out (None): the best one.")
    dataset: str = config_field(
        "shapes",
        "Procedural training data: shapes (only the silhouette carries the class) or "
        "critters (classes with natural-image statistics).",
        choices=PROCEDURAL,
    )
    checkpoint_every: int = config_field(
        200, "Steps between checkpoints in --out; the same command resumes there."
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not -(2**63) <= self.seed < 2**63:
            raise ValueError(f"seed must be a 64-bit integer, got {self.seed}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.dataset not in PROCEDURAL:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {PROCEDURAL}")


@dataclass
class AutoencoderConfig(BaselineConfig):
    """``autoencoder``: Chapter 1's convolutional autoencoder."""

    code_dim: int = config_field(128, "Bottleneck size.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.code_dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {self.code_dim}")


@dataclass
class _BackboneChoice(BaselineConfig):
    """The backbone a command trains, at 32 px."""

    arch: str = config_field(
        "small_cnn", "small_cnn, resnet18, or a ViT name (vit_nano, vit_tiny, ...)."
    )
    patch_size: int = config_field(4, "ViT patch size.")
    conv_stem: bool = config_field(
        False, "ViTs: convolutional stem instead of the patchify layer."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_arch(self.arch)  # build_backbone refuses the same, but only when it builds
        if not is_vit(self.arch) and self.conv_stem:
            raise ValueError(f"conv_stem applies to ViTs only, not to {self.arch!r}")
        if is_vit(self.arch) and (self.patch_size < 1 or 32 % self.patch_size):
            raise ValueError(f"patch_size must divide the 32-pixel images, got {self.patch_size}")

    def backbone(self) -> torch.nn.Module:
        """The ``arch`` backbone at 32 px, random weights."""
        return build_backbone(
            self.arch, patch_size=self.patch_size, img_size=32, conv_stem=self.conv_stem
        )


@dataclass
class ContrastiveConfig(_BackboneChoice):
    """``contrastive``: Chapter 1's two-view contrastive model (SimCLR's NT-Xent)."""

    temperature: float = config_field(0.2, "NT-Xent temperature.")
    shortcuts: bool = config_field(
        False,
        "Train on shapes with per-image colour and background signatures (Chapter 3); "
        "k-NN is then reported on both kinds of data.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")


@dataclass
class SupervisedConfig(_BackboneChoice):
    """``supervised``: a backbone trained with labels, the reference of the chapters."""

    steps: int = config_field(1500, "Optimisation steps.")


_COMMANDS: dict[str, tuple[type[BaselineConfig], str]] = {
    "autoencoder": (AutoencoderConfig, "Chapter 1: a convolutional autoencoder on shapes."),
    "contrastive": (ContrastiveConfig, "Chapter 1: two-view contrastive (SimCLR) on shapes."),
    "supervised": (SupervisedConfig, "A backbone trained with labels on shapes."),
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``autoencoder``, ``contrastive`` and ``supervised`` sub-commands: a
    flag per field of their config, and ``--out`` and ``--ship``."""
    runs = {"autoencoder": _run_autoencoder, "contrastive": _run_contrastive,
            "supervised": _run_supervised}
    builds = {"autoencoder": _autoencoder, "contrastive": _contrastive_model,
              "supervised": _classifier}
    for command, (cls, help_text) in _COMMANDS.items():
        p = sub.add_parser(command, help=help_text)
        add_dataclass_flags(p, cls)
        p.add_argument("--out", type=Path, required=True,
                       help="Folder for checkpoint.pt, model.pt, metrics.json.")
        p.add_argument("--ship", default=None, metavar="NAME",
                       help="Also write NAME.pt and its model card into teachkit/pretrained.")
        p.set_defaults(func=runs[command], build=builds[command], _parser=p)


def _config(args: argparse.Namespace) -> Any:
    """The command's config from its flags, with the run flags checked before any
    training; a bad value is a usage error (exit 2)."""
    cls = _COMMANDS[args.command][0]
    with usage_errors(args):
        cfg = cls(**flag_values(args, cls))
        if args.ship is not None:
            check_shipped_name(args.ship, "--ship")
        check_output_folder(args.out)
        check_device(cfg.device)
    return cfg


def _autoencoder(args: argparse.Namespace) -> torch.nn.Module:
    """The ``autoencoder`` command's model (``build``: also rebuilds a shipped one)."""
    from teachkit.pretext.autoencoder import ConvAutoencoder

    cfg = AutoencoderConfig(**flag_values(args, AutoencoderConfig))
    return ConvAutoencoder(resolution=32, code_dim=cfg.code_dim)


def _contrastive_model(args: argparse.Namespace) -> torch.nn.Module:
    """The ``contrastive`` command's backbone and projector."""
    from teachkit.models.resnet import small_cnn
    from teachkit.pretext.contrastive import ContrastiveModel

    cfg = ContrastiveConfig(**flag_values(args, ContrastiveConfig))
    # Chapter 1's small CNN is a narrower one (width 32, 128 features) than the registry's
    small = cfg.arch == "small_cnn"
    return ContrastiveModel(small_cnn(width=32, embed_dim=128) if small else cfg.backbone())


def _classifier(args: argparse.Namespace) -> torch.nn.Module:
    """The ``supervised`` command's backbone and linear classifier (10 classes)."""
    from teachkit.supervised import Classifier

    cfg = SupervisedConfig(**flag_values(args, SupervisedConfig))
    return Classifier(cfg.backbone(), num_classes=10)


def _split(dataset: str, shortcuts: bool = False):
    return procedural_splits(dataset, 5000, 1000, seed=0, shortcuts=shortcuts)


def _knn(model, dataset: str, preprocess=None, shortcuts: bool = False) -> float:
    train, test = _split(dataset, shortcuts)
    kw = dict(progress=False, preprocess=preprocess)
    bank = extract_features(model, train.images, **kw)
    queries = extract_features(model, test.images, **kw)
    return knn_accuracy(bank, train.labels, queries, test.labels)["top1"]


def _finish(args, cfg: BaselineConfig, model, description: str, results: dict,
            losses: StepLosses, device: torch.device) -> None:
    stride = max(1, len(losses) // 200)
    card = ModelCard(
        name=args.ship or args.out.name,
        description=description,
        command=command_line(args),
        seed=cfg.seed,
        data=f"{cfg.dataset} stream (fresh 32x32 images, batch {cfg.batch_size}"
        f"{', shortcuts=True' if getattr(cfg, 'shortcuts', False) else ''}); evaluated on "
        f"{cfg.dataset}_splits(5000, 1000, seed=0)",
        hardware=hardware_name(device),
        wall_time_s=round(losses.wall_time_s, 1),
        results={k: round(v, 2) for k, v in results.items()},
        history={"loss": [round(x, 5) for x in losses[::stride]]},
        created=time.strftime("%Y-%m-%d"),
    )
    finish_run(args.out, model, card, {}, method=args.command, ship=bool(args.ship))


def _start(args, build) -> tuple[Any, torch.device, torch.nn.Module, Any]:
    """The config, the device, the seeded model and the training stream of a command."""
    cfg = _config(args)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model = build(args)
    stream = procedural_stream(cfg.dataset, cfg.batch_size, seed=cfg.seed, device=device,
                               shortcuts=getattr(cfg, "shortcuts", False))
    return cfg, device, model, stream


def _run_autoencoder(args) -> None:
    from teachkit.pretext.autoencoder import train_autoencoder

    cfg, device, model, stream = _start(args, _autoencoder)
    losses = train_autoencoder(model, stream, steps=cfg.steps, lr=cfg.lr, device=device,
                               out_dir=args.out, checkpoint_every=cfg.checkpoint_every)
    knn = _knn(torch.nn.Sequential(model.encoder), cfg.dataset,
               preprocess=lambda x: x.float() / 255)
    _finish(args, cfg, model, "Convolutional autoencoder (Chapter 1), code of 128 numbers.",
            {"knn_top1_percent": knn, "final_mse": sum(losses[-50:]) / len(losses[-50:])},
            losses, device)


def _run_contrastive(args) -> None:
    from teachkit.dino.augment import MultiCropConfig
    from teachkit.dino.batched_augment import BatchedMultiCrop
    from teachkit.pretext.contrastive import train_contrastive

    cfg, device, model, stream = _start(args, _contrastive_model)
    augment = BatchedMultiCrop(MultiCropConfig(local_crops_number=0, global_crops_scale=(0.3, 1.0)))
    losses = train_contrastive(model, stream, augment, steps=cfg.steps, lr=cfg.lr,
                               temperature=cfg.temperature, device=device, seed=cfg.seed,
                               out_dir=args.out, checkpoint_every=cfg.checkpoint_every)
    model.cpu()
    results = {"knn_top1_percent": _knn(model, cfg.dataset)}  # without shortcuts, always
    description = f"Two-view contrastive model (Chapter 1), {cfg.arch} backbone."
    if cfg.shortcuts:
        results["shortcuts_knn_top1_percent"] = _knn(model, cfg.dataset, shortcuts=True)
        description = ("Two-view contrastive model trained on shapes with shortcuts=True "
                       "(Chapter 3); knn_top1_percent is measured on the default shapes.")
    _finish(args, cfg, model, description, results, losses, device)


def _run_supervised(args) -> None:
    from teachkit.supervised import accuracy, train_supervised

    cfg, device, model, stream = _start(args, _classifier)
    losses = train_supervised(model, stream, steps=cfg.steps, lr=cfg.lr, device=device,
                              out_dir=args.out, checkpoint_every=cfg.checkpoint_every)
    model.cpu()
    _, test = _split(cfg.dataset)
    results = {"test_accuracy_percent": accuracy(model, test.images, test.labels),
               "knn_top1_percent": _knn(model.backbone, cfg.dataset)}
    _finish(args, cfg, model, f"{cfg.arch} trained with labels on {cfg.dataset}.", results,
            losses, device)
