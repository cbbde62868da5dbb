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
from pathlib import Path

import torch

from teachkit.data.datasets import PROCEDURAL, procedural_splits, procedural_stream
from teachkit.infra.cli_checks import check_device, check_output_folder, usage_errors
from teachkit.infra.loop import StepLosses
from teachkit.infra.run import command_line
from teachkit.knn import extract_features, knn_accuracy
from teachkit.models.registry import build_backbone, check_arch, is_vit
from teachkit.pretrained import ModelCard, check_shipped_name, finish_run
from teachkit.profiles import hardware_name, pick_device, seed_everything

__all__ = ["add_commands"]


def _check_args(args: argparse.Namespace) -> None:
    """Check every flag before the first step; a usage error (exit 2) if one is wrong."""
    with usage_errors(args):
        for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                            ("--checkpoint-every", args.checkpoint_every)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if not -(2**63) <= args.seed < 2**63:
            raise ValueError(f"--seed must be a 64-bit integer, got {args.seed}")
        for flag, name in (("--lr", "lr"), ("--temperature", "temperature")):
            value = getattr(args, name, 1.0)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a positive number, got {value}")
        if args.ship is not None:
            check_shipped_name(args.ship, "--ship")
        if getattr(args, "code_dim", 1) < 1:
            raise ValueError(f"--code-dim must be >= 1, got {args.code_dim}")
        if hasattr(args, "arch"):
            _check_arch(args.arch, args.patch_size, args.conv_stem)
        check_output_folder(args.out)
        check_device(args.device)


def _common(p: argparse.ArgumentParser, steps: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help="Optimisation steps.")
    p.add_argument("--batch-size", type=int, default=128, help="Images per step.")
    p.add_argument("--lr", type=float, default=2e-3, help="Peak learning rate (one-cycle).")
    p.add_argument("--seed", type=int, default=0, help="Seed of weights and data stream.")
    p.add_argument("--device", default=None, help="cpu, cuda, mps; default: the best one.")
    p.add_argument("--out", type=Path, required=True, help="Folder for model.pt, metrics.json.")
    p.add_argument("--dataset", choices=PROCEDURAL, default="shapes",
                   help="Procedural training data: shapes (only the silhouette carries the "
                   "class) or critters (classes with natural-image statistics).")
    p.add_argument("--ship", default=None, metavar="NAME",
                   help="Also write NAME.pt and its model card into teachkit/pretrained.")
    p.add_argument("--checkpoint-every", type=int, default=200,
                   help="Steps between checkpoints in --out; the same command resumes there.")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``autoencoder``, ``contrastive`` and ``supervised`` sub-commands."""
    p = sub.add_parser("autoencoder", help="Chapter 1: a convolutional autoencoder on shapes.")
    _common(p, 6000)
    p.add_argument("--code-dim", type=int, default=128, help="Bottleneck size.")
    p.set_defaults(func=_run_autoencoder, build=_autoencoder, _parser=p)

    p = sub.add_parser("contrastive", help="Chapter 1: two-view contrastive (SimCLR) on shapes.")
    _common(p, 6000)
    p.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature.")
    p.add_argument("--shortcuts", action="store_true",
                   help="Train on shapes with per-image colour and background signatures "
                   "(Chapter 3); k-NN is then reported on both kinds of data.")
    _arch_flags(p)
    p.set_defaults(func=_run_contrastive, build=_contrastive_model, _parser=p)

    p = sub.add_parser("supervised", help="A backbone trained with labels on shapes.")
    _common(p, 1500)
    _arch_flags(p)
    p.set_defaults(func=_run_supervised, build=_classifier, _parser=p)


def _arch_flags(p: argparse.ArgumentParser) -> None:
    """``--arch``, ``--patch-size`` and ``--conv-stem``: the backbone to train."""
    p.add_argument("--arch", default="small_cnn",
                   help="small_cnn, resnet18, or a ViT name (vit_nano, vit_tiny, ...).")
    p.add_argument("--patch-size", type=int, default=4, help="ViT patch size.")
    p.add_argument("--conv-stem", action="store_true",
                   help="ViTs: convolutional stem instead of the patchify layer.")


def _backbone(args: argparse.Namespace) -> torch.nn.Module:
    """The ``--arch`` backbone at 32 px."""
    return build_backbone(
        args.arch, patch_size=args.patch_size, img_size=32, conv_stem=args.conv_stem
    )


def _autoencoder(args: argparse.Namespace) -> torch.nn.Module:
    """The ``autoencoder`` command's model (``build``: also rebuilds a shipped one)."""
    from teachkit.pretext.autoencoder import ConvAutoencoder

    return ConvAutoencoder(resolution=32, code_dim=args.code_dim)


def _contrastive_model(args: argparse.Namespace) -> torch.nn.Module:
    """The ``contrastive`` command's backbone and projector."""
    from teachkit.models.resnet import small_cnn
    from teachkit.pretext.contrastive import ContrastiveModel

    # Chapter 1's small CNN is a narrower one (width 32, 128 features) than the registry's
    backbone = small_cnn(width=32, embed_dim=128) if args.arch == "small_cnn" else _backbone(args)
    return ContrastiveModel(backbone)


def _classifier(args: argparse.Namespace) -> torch.nn.Module:
    """The ``supervised`` command's backbone and linear classifier (10 classes)."""
    from teachkit.supervised import Classifier

    return Classifier(_backbone(args), num_classes=10)


def _split(dataset: str, shortcuts: bool = False):
    return procedural_splits(dataset, 5000, 1000, seed=0, shortcuts=shortcuts)


def _knn(model, dataset: str, preprocess=None, shortcuts: bool = False) -> float:
    train, test = _split(dataset, shortcuts)
    kw = dict(progress=False, preprocess=preprocess)
    bank = extract_features(model, train.images, **kw)
    queries = extract_features(model, test.images, **kw)
    return knn_accuracy(bank, train.labels, queries, test.labels)["top1"]


def _finish(args, model, description: str, results: dict, losses: StepLosses,
            device: torch.device) -> None:
    stride = max(1, len(losses) // 200)
    card = ModelCard(
        name=args.ship or args.out.name,
        description=description,
        command=command_line(args),
        seed=args.seed,
        data=f"{args.dataset} stream (fresh 32x32 images, batch {args.batch_size}"
        f"{', shortcuts=True' if getattr(args, 'shortcuts', False) else ''}); evaluated on "
        f"{args.dataset}_splits(5000, 1000, seed=0)",
        hardware=hardware_name(device),
        wall_time_s=round(losses.wall_time_s, 1),
        results={k: round(v, 2) for k, v in results.items()},
        history={"loss": [round(x, 5) for x in losses[::stride]]},
        created=time.strftime("%Y-%m-%d"),
    )
    finish_run(args.out, model, card, {}, method=args.command, ship=bool(args.ship))


def _run_autoencoder(args) -> None:
    from teachkit.pretext.autoencoder import train_autoencoder

    _check_args(args)
    seed_everything(args.seed)
    device = pick_device(args.device)
    model = _autoencoder(args)
    stream = procedural_stream(args.dataset, args.batch_size, seed=args.seed, device=device)
    losses = train_autoencoder(model, stream, steps=args.steps, lr=args.lr, device=device,
                               out_dir=args.out, checkpoint_every=args.checkpoint_every)
    knn = _knn(torch.nn.Sequential(model.encoder), args.dataset,
               preprocess=lambda x: x.float() / 255)
    _finish(args, model, "Convolutional autoencoder (Chapter 1), code of 128 numbers.",
            {"knn_top1_percent": knn, "final_mse": sum(losses[-50:]) / len(losses[-50:])},
            losses, device)


def _run_contrastive(args) -> None:
    from teachkit.dino.augment import MultiCropConfig
    from teachkit.dino.batched_augment import BatchedMultiCrop
    from teachkit.pretext.contrastive import train_contrastive

    _check_args(args)
    seed_everything(args.seed)
    device = pick_device(args.device)
    model = _contrastive_model(args)
    augment = BatchedMultiCrop(MultiCropConfig(local_crops_number=0, global_crops_scale=(0.3, 1.0)))
    shortcuts = getattr(args, "shortcuts", False)
    stream = procedural_stream(args.dataset, args.batch_size, seed=args.seed, device=device,
                               shortcuts=shortcuts)
    losses = train_contrastive(model, stream, augment, steps=args.steps, lr=args.lr,
                               temperature=args.temperature, device=device, seed=args.seed,
                               out_dir=args.out, checkpoint_every=args.checkpoint_every)
    model.cpu()
    results = {"knn_top1_percent": _knn(model, args.dataset)}  # without shortcuts, always
    description = f"Two-view contrastive model (Chapter 1), {args.arch} backbone."
    if shortcuts:
        results["shortcuts_knn_top1_percent"] = _knn(model, args.dataset, shortcuts=True)
        description = ("Two-view contrastive model trained on shapes with shortcuts=True "
                       "(Chapter 3); knn_top1_percent is measured on the default shapes.")
    _finish(args, model, description, results, losses, device)


def _run_supervised(args) -> None:
    from teachkit.supervised import accuracy, train_supervised

    _check_args(args)
    seed_everything(args.seed)
    device = pick_device(args.device)
    model = _classifier(args)
    stream = procedural_stream(args.dataset, args.batch_size, seed=args.seed, device=device)
    losses = train_supervised(model, stream, steps=args.steps, lr=args.lr, device=device,
                              out_dir=args.out, checkpoint_every=args.checkpoint_every)
    model.cpu()
    _, test = _split(args.dataset)
    results = {"test_accuracy_percent": accuracy(model, test.images, test.labels),
               "knn_top1_percent": _knn(model.backbone, args.dataset)}
    _finish(args, model, f"{args.arch} trained with labels on {args.dataset}.", results, losses,
            device)


def _check_arch(arch: str, patch_size: int, conv_stem: bool) -> None:
    """The flags of ``supervised``, named as the user typed them; :func:`build_backbone`
    refuses the same arguments when called from Python."""
    check_arch(arch)
    if not is_vit(arch) and conv_stem:
        raise ValueError(f"--conv-stem applies to ViTs only, not to {arch!r}")
    if is_vit(arch) and (patch_size < 1 or 32 % patch_size):
        raise ValueError(f"--patch-size must divide the 32-pixel images, got {patch_size}")
