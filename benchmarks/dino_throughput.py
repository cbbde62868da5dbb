"""Benchmark: DINO training throughput, teachkit against lightly and a per-crop timm step.

Three comparisons, each measured side by side in one run on one card (``--parts``, run
in this order: step, e2e, fp16, compile):

``step`` (2) the training step alone, ViT-Tiny/4: teachkit (one forward per resolution,
         bf16 where supported, fused AdamW, no host syncs between log steps) against a
         per-crop timm ViT-Tiny/4 step with lightly's head and loss, as lightly's examples
         train. Target >= 3x. The model-FLOPs utilisation of both is reported against the
         card's bf16 matrix-product rate, measured here with an 8192^3 product.
``e2e``  (1) end to end at CIFAR size: 32 px images, 2 global 32 px + 6 local 16 px
         crops, batch 256, ResNet-18 with the CIFAR stem on both sides.
         * teachkit: the dataset lives on the device as uint8 (``ImageBatches``), the
           crops are made there (``BatchedMultiCrop``), one backbone pass per resolution;
           the real ``train_dino`` loop, timed from its own metric read-backs.
         * teachkit step alone: the same ``train_dino`` with the augmentation replaced by
           fixed pre-made crops (``train_dino(augment=...)``; the ceiling the end-to-end
           run is held against).
         * lightly: ``DINOTransform`` on PIL images in a 2-worker ``DataLoader`` whose
           workers are pinned to 2 CPU cores, feeding lightly's DINO recipe (one forward
           per crop, ``DINOProjectionHead``, ``DINOLoss``, ``update_momentum``) as in
           lightly's examples; the loader alone and the step alone (fp32 and bf16) too.
         Targets: teachkit >= 8x lightly end to end; teachkit end to end >= 85 % of
         teachkit's step alone.
``fp16`` (5) the T4 path: fp16 autocast + GradScaler, the precision
         ``teachkit.infra.hardware.pick_precision`` gives for compute capability (7, 5), against
         fp32 on the same seed, data and crops. The scaler starts at 65536 and skips the
         first steps while it backs off; the fp32 reference skips the same optimizer
         steps, so both make the same updates and only the arithmetic differs. Passes when
         every logged number is finite and each step's loss is within
         ``--fp16-tolerance`` (relative) of fp32's. The curve against plain fp32 (no
         skipped step) is reported too.
``compile`` the teachkit row of (2) again with ``torch.compile`` (minutes to start on a
         CPU, so left out of ``--tiny`` unless asked for).

The images are synthetic (smooth random colour fields plus noise, made once, seeded):
no download is needed and the augmentation costs what it costs on CIFAR-10.
Data loading on the lightly side is limited to ``--loader-cores`` CPU cores (worker
affinity and one torch thread per worker); the main processes use ``--threads``.

    python benchmarks/dino_throughput.py --tiny                     # CPU smoke test, < 1 min
    python benchmarks/dino_throughput.py --device cuda --out dino.json
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bench_timing as bt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from teachkit.data.stream import ImageBatches
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.batched_augment import BatchedMultiCrop
from teachkit.dino.config import DINOConfig
from teachkit.dino.trainer import STEP_STATS, Augment, train_dino
from teachkit.infra.hardware import BF16, FP32, Precision, pick_precision
from teachkit.infra.run import NonFiniteLossError
from teachkit.models.resnet import resnet18_cifar
from teachkit.models.vit import VIT_SIZES

PARTS = ("step", "e2e", "fp16", "compile")
TARGETS = {
    "e2e_vs_lightly": 8.0,
    "e2e_vs_own_step": 0.85,
    "vit_step_vs_timm_per_crop": 3.0,
}


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU smoke test."""

    batch: int
    images: int  # size of the synthetic dataset
    warmup: int  # teachkit steps before timing (a multiple of log_every)
    timed: int  # teachkit steps timed (a multiple of log_every)
    log_every: int  # teachkit metric read-back = one host sync = one timing mark
    peer_warmup: int
    peer_timed: int
    peer_every: int
    loader_batches: int  # lightly loader alone: batches timed
    resnet_width: int  # 64 = ResNet-18; smaller only for the smoke test
    vit_arch: str  # comparison 2
    out_dim: int  # DINO head: K prototypes
    hidden_dim: int
    bottleneck_dim: int
    fp16_arch: str
    fp16_batch: int
    fp16_epochs: int
    fp16_steps_per_epoch: int
    peak_n: int  # side of the matrix product that measures the peak


# Head sizes of lightly's DINO example (DINOProjectionHead(512, 512, 64, 2048)) on both sides.
FULL = Sizes(
    batch=256,
    images=20_000,
    warmup=20,
    timed=60,
    log_every=10,
    peer_warmup=6,
    peer_timed=24,
    peer_every=6,
    loader_batches=16,
    resnet_width=64,
    vit_arch="vit_tiny",
    out_dim=2048,
    hidden_dim=512,
    bottleneck_dim=64,
    fp16_arch="vit_tiny",
    fp16_batch=64,
    fp16_epochs=4,
    fp16_steps_per_epoch=30,
    peak_n=8192,
)
TINY = Sizes(
    batch=4,
    images=32,
    warmup=1,
    timed=2,
    log_every=1,
    peer_warmup=1,
    peer_timed=2,
    peer_every=1,
    loader_batches=2,
    resnet_width=8,
    vit_arch="vit_nano",
    out_dim=256,
    hidden_dim=64,
    bottleneck_dim=32,
    fp16_arch="vit_nano",
    fp16_batch=4,
    fp16_epochs=2,
    fp16_steps_per_epoch=3,
    peak_n=256,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (CPU, < 1 minute)")
    p.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when available, else cpu)"
    )
    p.add_argument(
        "--parts",
        default=None,
        help=f"comma-separated subset of {','.join(PARTS)} (default: all, in that order; "
        "with --tiny all but compile, which takes minutes on a CPU)",
    )
    p.add_argument("--batch", type=int, default=None, help="override the batch size (256)")
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads of the main process (both sides)"
    )
    p.add_argument(
        "--loader-cores", type=int, default=2, help="CPU cores the lightly loader workers may use"
    )
    p.add_argument("--workers", type=int, default=2, help="lightly DataLoader workers")
    p.add_argument(
        "--fp16-tolerance",
        type=float,
        default=0.02,
        help="max relative per-step loss difference, fp16 vs fp32 with the same scaler-skipped "
        "steps, that passes (0.02 = 2 %%; 0.03 %% was seen over 24 CPU steps)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=math.inf,
        help="soft time budget: rows not started by then are skipped (JSON is written "
        "after every row, so a hard timeout loses only the row in flight)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and crops")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- data
def synthetic_images(n: int, size: int, seed: int) -> Tensor:
    """(n, 3, size, size) uint8: smooth random colour fields plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        low = torch.rand(m, 3, 4, 4, generator=g)
        x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
        x = x + 0.08 * torch.randn(m, 3, size, size, generator=g)
        chunks.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(chunks)


def crop_config() -> MultiCropConfig:
    """The issue's recipe: 2 global 32 px + 6 local 16 px crops, official distributions."""
    return MultiCropConfig(global_size=32, local_size=16, local_crops_number=6)


def fixed_crops(images: Tensor, batch: int, seed: int) -> list[Tensor]:
    """One batch of crops made once (for the step-alone rows), on the images' device."""
    g = torch.Generator().manual_seed(seed)
    return [c.contiguous() for c in BatchedMultiCrop(crop_config())(images[:batch], generator=g)]


# ---------------------------------------------------------------------------- timing
class StepClock:
    """Host time at every ``every``-th step, read right after a host sync.

    As a ``train_dino`` callback it is called for each step when the trainer reads its
    metrics back (every ``log_every`` steps, one sync); the peers' loops call
    :meth:`mark` after their own sync. Throughput is measured between marks after the
    warm-up: ``every * batch`` images over the time between two marks.
    """

    def __init__(self, *, batch: int, every: int, warmup: int) -> None:
        self.batch, self.every, self.warmup = batch, every, warmup
        self.marks: list[tuple[int, float]] = []

    def __call__(self, kind: str, record: dict[str, float]) -> None:
        if kind == "step" and (int(record["step"]) + 1) % self.every == 0:
            self.mark(int(record["step"]))

    def mark(self, step: int) -> None:
        self.marks.append((step, time.perf_counter()))

    def result(self) -> dict[str, Any]:
        marks = [(s, t) for s, t in self.marks if s + 1 >= self.warmup]
        if len(marks) < 2:
            raise RuntimeError(f"too few timing marks after the warm-up: {self.marks}")
        rates = [
            (s1 - s0) * self.batch / (t1 - t0) for (s0, t0), (s1, t1) in itertools.pairwise(marks)
        ]
        (s_first, t_first), (s_last, t_last) = marks[0], marks[-1]
        mean = (s_last - s_first) * self.batch / (t_last - t_first)
        return {
            "img_s": bt.median(rates),
            "img_s_mean": mean,
            "img_s_intervals": rates,
            "ms_per_step": 1000.0 * self.batch / bt.median(rates),
            "timed_steps": s_last - s_first,
        }


def timed_loop(
    step_fn: Callable[[Any], Tensor],
    batches: Iterator[Any],
    *,
    device: torch.device,
    batch: int,
    warmup: int,
    timed: int,
    every: int,
) -> dict[str, Any]:
    """Run ``step_fn`` on ``warmup + timed`` batches, syncing and marking every ``every``."""
    clock = StepClock(batch=batch, every=every, warmup=warmup)
    for step in range(warmup + timed):
        step_fn(next(batches))
        if (step + 1) % every == 0:
            bt.synchronize(device)
            clock.mark(step)
    return clock.result()


# ---------------------------------------------------------------------------- FLOPs
def vit_forward_flops(arch: str, patch: int, size: int) -> float:
    """Matrix-product FLOPs of one ViT forward on a ``size`` px image (patch embedding,
    qkv / projection / MLP, and the two attention products), per image."""
    d, depth = VIT_SIZES[arch]["embed_dim"], VIT_SIZES[arch]["depth"]
    n = (size // patch) ** 2
    t = n + 1  # + [CLS]
    linear = 2 * t * d * (3 * d + d + 2 * 4 * d)  # qkv, proj, fc1 + fc2 (mlp ratio 4)
    attention = 2 * 2 * t * t * d  # q k^T and attn @ v over all heads
    return 2 * n * 3 * patch * patch * d + depth * (linear + attention)


def head_flops(in_dim: int, sizes: Sizes) -> float:
    """FLOPs of the 3-layer DINO head and its last layer, per feature vector."""
    h, b, k = sizes.hidden_dim, sizes.bottleneck_dim, sizes.out_dim
    return 2 * (in_dim * h + h * h + h * b + b * k)


def dino_vit_train_flops(sizes: Sizes, crops: MultiCropConfig, patch: int = 4) -> float:
    """Model FLOPs of one DINO training step per image: student forward + backward (3x
    forward) over all crops, teacher forward over the 2 global crops."""
    arch = sizes.vit_arch
    head = head_flops(VIT_SIZES[arch]["embed_dim"], sizes)
    global_fwd = vit_forward_flops(arch, patch, crops.global_size) + head
    local_fwd = vit_forward_flops(arch, patch, crops.local_size) + head
    student = 2 * global_fwd + crops.local_crops_number * local_fwd
    return 3 * student + 2 * global_fwd


# ---------------------------------------------------------------------------- teachkit
def teachkit_config(
    args: argparse.Namespace,
    sizes: Sizes,
    *,
    arch: str,
    precision: str = "auto",
    compile: bool = False,
) -> DINOConfig:
    """The ``train_dino`` settings of the teachkit rows: ``sizes.warmup + sizes.timed``
    steps of batch ``sizes.batch``, the issue's crops, the head of ``sizes``."""
    return DINOConfig(
        arch=arch,
        patch_size=4,
        out_dim=sizes.out_dim,
        hidden_dim=sizes.hidden_dim,
        bottleneck_dim=sizes.bottleneck_dim,
        batch_size=sizes.batch,
        epochs=1,
        steps_per_epoch=sizes.warmup + sizes.timed,
        warmup_epochs=0,
        freeze_last_layer=0,  # every step updates the whole head, as on the peers
        crops=crop_config(),
        device=str(args.device),
        precision=precision,
        compile=compile,
        log_every=sizes.log_every,
        seed=args.seed,
    )


def teachkit_inputs(
    args: argparse.Namespace, sizes: Sizes, images: Tensor, crops: list[Tensor] | None
) -> tuple[Any, Augment | None]:
    """``(data, augment)`` for ``train_dino``: end to end, ``ImageBatches`` of the
    (N, 3, 32, 32) uint8 ``images`` and the built-in multi-crop; with ``crops`` (the
    step alone), the first batch again and again, and an ``augment`` that returns the
    fixed crops."""
    if crops is None:
        return ImageBatches(images, sizes.batch, seed=args.seed, rank=0, world_size=1), None
    return itertools.repeat(images[: sizes.batch]), (lambda images, step: crops)


def teachkit_run(
    args: argparse.Namespace,
    sizes: Sizes,
    images: Tensor,
    *,
    arch: str,
    backbone: nn.Module | None = None,
    crops: list[Tensor] | None = None,
    precision: str = "auto",
    compile: bool = False,
) -> dict[str, Any]:
    """Time the real ``train_dino`` loop (with ``crops``: the step alone)."""
    cfg = teachkit_config(args, sizes, arch=arch, precision=precision, compile=compile)
    clock = StepClock(batch=sizes.batch, every=sizes.log_every, warmup=sizes.warmup)
    data, augment = teachkit_inputs(args, sizes, images, crops)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_dino(
            cfg, data, backbone=backbone, callbacks=[clock], progress=False, augment=augment
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"  warning: {message[:200]}", file=sys.stderr)
    row = clock.result()
    row["precision"] = pick_precision(args.device).name if precision == "auto" else precision
    failed = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    if compile:
        row["compiled"] = not failed
        if failed:
            row["note"] = "torch.compile failed, ran eagerly: " + failed[0][:200]
    return row


def teachkit_resnet(sizes: Sizes) -> tuple[str, nn.Module | None]:
    """(arch, backbone) for train_dino: the built-in resnet18, or a slim one (smoke test)."""
    if sizes.resnet_width == 64:
        return "resnet18", None
    return "resnet18", resnet18_cifar(width=sizes.resnet_width)


# ---------------------------------------------------------------------------- peers
def require(module: str, package: str) -> Any:
    """Import ``module`` or raise :class:`bench_timing.Skipped` naming the pip package."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        raise bt.Skipped(f"{package} not installed ({err})") from None


def torchvision_resnet18_cifar(width: int) -> nn.Module:
    """What a lightly user trains on CIFAR: torchvision's ResNet-18 with a 3x3 stride-1
    stem, no max-pool, no classifier (512-d). The smoke test uses teachkit's slim one."""
    if width != 64:
        return resnet18_cifar(width=width)
    from torchvision.models import resnet18

    model = resnet18()
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def timm_vit(arch: str, drop_path_rate: float) -> nn.Module:
    """timm's VisionTransformer with teachkit's size, patch 4 at 32 px, CLS feature out;
    ``dynamic_img_size`` interpolates the position embedding for 16 px crops."""
    vit = require("timm.models.vision_transformer", "timm")
    dims = VIT_SIZES[arch]
    return vit.VisionTransformer(
        img_size=32,
        patch_size=4,
        embed_dim=dims["embed_dim"],
        depth=dims["depth"],
        num_heads=dims["num_heads"],
        num_classes=0,
        dynamic_img_size=True,
        drop_path_rate=drop_path_rate,
    )


class LightlyDINO(nn.Module):
    """lightly's DINO example model: student and teacher backbone + DINOProjectionHead.

    The teacher is built a second time and given the student's weights: lightly 1.6's
    weight-normed head cannot be ``copy.deepcopy``'d under recent torch.
    """

    def __init__(self, make_backbone: Callable[[bool], nn.Module], dim: int, sizes: Sizes):
        super().__init__()
        heads = require("lightly.models.modules.heads", "lightly")

        def head() -> nn.Module:
            return heads.DINOProjectionHead(
                dim, sizes.hidden_dim, sizes.bottleneck_dim, sizes.out_dim, freeze_last_layer=1
            )

        self.student_backbone, self.student_head = make_backbone(True), head()
        self.teacher_backbone, self.teacher_head = make_backbone(False), head()
        self.teacher_backbone.load_state_dict(self.student_backbone.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        for p in itertools.chain(
            self.teacher_backbone.parameters(), self.teacher_head.parameters()
        ):
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.student_head(self.student_backbone(x).flatten(start_dim=1))

    def forward_teacher(self, x: Tensor) -> Tensor:
        return self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1))


def lightly_step_fn(model: LightlyDINO, sizes: Sizes, device: torch.device, precision: Precision):
    """One step of lightly's DINO example: a forward per crop, DINOLoss, Adam(W), EMA."""
    loss_mod = require("lightly.loss.dino_loss", "lightly")
    utils = require("lightly.models.utils", "lightly")
    criterion = loss_mod.DINOLoss(output_dim=sizes.out_dim, warmup_teacher_temp_epochs=0).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04)
    epoch = 1  # past freeze_last_layer: the last layer is updated, as on teachkit's side

    def step(views: list[Tensor]) -> Tensor:
        utils.update_momentum(model.student_backbone, model.teacher_backbone, m=0.996)
        utils.update_momentum(model.student_head, model.teacher_head, m=0.996)
        with precision.autocast(device):
            teacher_out = [model.forward_teacher(v) for v in views[:2]]
            student_out = [model.forward(v) for v in views]
        loss = criterion(
            [t.float() for t in teacher_out], [s.float() for s in student_out], epoch=epoch
        )
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=epoch)
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    return step


class _PinnedWorker:
    """DataLoader ``worker_init_fn``: one torch thread, CPU affinity to ``cores``."""

    def __init__(self, cores: list[int]) -> None:
        self.cores = cores

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(1)
        if self.cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cores)


class _PILDataset(torch.utils.data.Dataset):
    """CIFAR-like: uint8 HWC arrays held in memory, returned as PIL images through
    ``transform`` (what ``torchvision.datasets.CIFAR10(transform=DINOTransform())`` does)."""

    def __init__(self, images_hwc: np.ndarray, transform: Callable) -> None:
        self.images, self.transform = images_hwc, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[list[Tensor], int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), 0


def lightly_loader(args: argparse.Namespace, sizes: Sizes, images: Tensor):
    """lightly's DINOTransform in a DataLoader with ``--workers`` workers on
    ``--loader-cores`` cores."""
    dino_tf = require("lightly.transforms.dino_transform", "lightly")
    c = crop_config()
    transform = dino_tf.DINOTransform(
        global_crop_size=c.global_size,
        global_crop_scale=c.global_crops_scale,
        local_crop_size=c.local_size,
        local_crop_scale=c.local_crops_scale,
        n_local_views=c.local_crops_number,
        sigmas=c.blur_sigma_pixels(),  # the same blur, in pixels, as teachkit's recipe
    )
    cores = (
        sorted(os.sched_getaffinity(0))[: args.loader_cores]
        if hasattr(os, "sched_getaffinity")
        else []
    )
    dataset = _PILDataset(images.permute(0, 2, 3, 1).contiguous().numpy(), transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=sizes.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=args.device.type == "cuda",
        persistent_workers=args.workers > 0,
        worker_init_fn=_PinnedWorker(cores),
        generator=torch.Generator().manual_seed(args.seed),
    )
    return loader, cores


def forever(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


# ---------------------------------------------------------------------------- parts
class Bench:
    """Runs rows, prints each as it finishes, keeps the JSON report up to date."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes) -> None:
        self.args, self.sizes = args, sizes
        self.start = time.perf_counter()
        self.report: dict[str, Any] = {
            "benchmark": "dino_throughput",
            "config": {k: str(v) for k, v in vars(args).items()},
            "sizes": asdict(sizes),
            "machine": bt.machine_info(args.device),
            "rows": {},
        }
        self.runner = bt.RowRunner(
            self.report, out=self.args.out, budget_s=self.args.budget_s, format_row=format_row,
            known_errors={NonFiniteLossError: "non-finite loss"},
        )

    def row(self, key: str, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return self.runner.row(key, label, fn)


def format_row(r: dict[str, Any]) -> str:
    label = f"{r['label']:<58} "
    if "skipped" in r:
        return f"{label}skipped: {r['skipped']}"
    if "error" in r:
        return f"{label}ERROR: {r['error'][:300]}"
    if "img_s" in r:
        extra = f"{r['ms_per_step']:>9.1f} ms/step"
        if "mfu" in r:
            extra += f"  MFU {100 * r['mfu']:5.1f} %"
        if r.get("note"):
            extra += f"  ({r['note'][:80]})"
        return f"{label}{r['img_s']:>10,.0f} img/s{extra}"
    return f"{label}{r.get('summary', '')}"


def part_step(bench: Bench, images: Tensor, compile_only: bool = False) -> None:
    """Comparison 2: teachkit's ViT step against the per-crop timm step; MFU."""
    args, sizes = bench.args, bench.sizes
    arch = sizes.vit_arch
    crops = fixed_crops(images, sizes.batch, args.seed)
    rows = bench.report["rows"]
    if "step.peak" not in rows:
        dtype = torch.bfloat16 if args.device.type == "cuda" else torch.float32

        def peak() -> dict[str, Any]:
            flops = bt.matmul_peak_flops(args.device, dtype, n=sizes.peak_n)
            return {
                "flops": flops,
                "dtype": str(dtype),
                "n": sizes.peak_n,
                "summary": f"{flops / 1e12:,.1f} TFLOP/s ({dtype}, {sizes.peak_n}^3 product)",
            }

        bench.row("step.peak", "matrix-product peak (measured)", peak)
    peak_flops = rows["step.peak"].get("flops")
    flops_per_image = dino_vit_train_flops(sizes, crop_config())

    def with_mfu(row: dict[str, Any]) -> dict[str, Any]:
        row["model_flops_per_image"] = flops_per_image
        if peak_flops:
            row["mfu"] = row["img_s"] * flops_per_image / peak_flops
        return row

    name = f"ViT-{arch.removeprefix('vit_').capitalize()}/4"
    if compile_only:
        bench.row(
            "step.teachkit_compiled",
            f"teachkit {name} step alone + torch.compile",
            lambda: with_mfu(
                teachkit_run(args, sizes, images, arch=arch, crops=crops, compile=True)
            ),
        )
        return
    bench.row(
        "step.teachkit",
        f"teachkit {name} step alone (1 fwd/resolution, fused AdamW)",
        lambda: with_mfu(teachkit_run(args, sizes, images, arch=arch, crops=crops)),
    )

    def timm_per_crop() -> dict[str, Any]:
        precision = pick_precision(args.device)
        torch.manual_seed(args.seed)
        model = LightlyDINO(
            lambda student: timm_vit(arch, 0.1 if student else 0.0),
            VIT_SIZES[arch]["embed_dim"],
            sizes,
        ).to(args.device)
        step = lightly_step_fn(model, sizes, args.device, precision)
        row = timed_loop(
            step,
            itertools.repeat(crops),
            device=args.device,
            batch=sizes.batch,
            warmup=sizes.warmup,
            timed=sizes.timed,
            every=sizes.log_every,
        )
        row["precision"] = precision.name
        return with_mfu(row)

    bench.row(
        "step.timm_per_crop",
        f"timm {name} step alone, 1 fwd/crop (lightly head+loss)",
        timm_per_crop,
    )


def part_e2e(bench: Bench, images: Tensor) -> None:
    """Comparison 1: teachkit end to end and step alone; lightly loader, e2e, step alone."""
    args, sizes = bench.args, bench.sizes
    crops = fixed_crops(images, sizes.batch, args.seed)

    def teachkit(crops_or_none: list[Tensor] | None) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            arch, backbone = teachkit_resnet(sizes)
            return teachkit_run(
                args, sizes, images, arch=arch, backbone=backbone, crops=crops_or_none
            )

        return run

    bench.row("e2e.teachkit", "teachkit ResNet-18 end to end (uint8 on device)", teachkit(None))
    bench.row("e2e.teachkit_step", "teachkit ResNet-18 step alone (fixed crops)", teachkit(crops))

    host_images = images.cpu()
    state: dict[str, Any] = {}

    def make_model(precision: Precision) -> Callable[[Any], Tensor]:
        torch.manual_seed(args.seed)
        model = LightlyDINO(
            lambda student: torchvision_resnet18_cifar(sizes.resnet_width),
            8 * sizes.resnet_width,
            sizes,
        ).to(args.device)
        return lightly_step_fn(model, sizes, args.device, precision)

    def release() -> None:
        """Shut the loader's workers down; give the main process its cores back."""
        if "main_affinity" in state:
            os.sched_setaffinity(0, state["main_affinity"])
        state.clear()

    def loader_alone() -> dict[str, Any]:
        loader, cores = lightly_loader(args, sizes, host_images)
        others = sorted(set(os.sched_getaffinity(0)) - set(cores)) if cores else []
        if others:  # keep the main process (and its pin-memory thread) off the loader's cores
            state["main_affinity"] = os.sched_getaffinity(0)
            os.sched_setaffinity(0, others)
        state["loader"], state["batches"] = loader, forever(loader)
        every = max(1, sizes.loader_batches // 4)
        row = timed_loop(
            lambda batch: None,
            state["batches"],
            device=torch.device("cpu"),
            batch=sizes.batch,
            warmup=every,  # the workers' start-up
            timed=sizes.loader_batches,
            every=every,
        )
        row["workers"], row["cores"] = args.workers, cores
        return row

    bench.row(
        "e2e.lightly_loader",
        f"lightly DINOTransform loader alone ({args.workers} workers, {args.loader_cores} cores)",
        loader_alone,
    )

    def lightly_e2e() -> dict[str, Any]:
        if "batches" not in state:
            raise bt.Skipped("the loader did not start (see the row above)")
        precision = FP32
        step = make_model(precision)

        def on_device(batch: Any) -> Tensor:
            views = [v.to(args.device, non_blocking=True) for v in batch[0]]
            return step(views)

        try:
            row = timed_loop(
                on_device,
                state["batches"],
                device=args.device,
                batch=sizes.batch,
                warmup=sizes.peer_warmup,
                timed=sizes.peer_timed,
                every=sizes.peer_every,
            )
        finally:
            release()
        row["precision"] = precision.name
        return row

    bench.row("e2e.lightly", "lightly ResNet-18 end to end (fp32, 1 fwd/crop)", lightly_e2e)
    release()  # in case the row above did not run

    for precision in (FP32, BF16):
        if (
            precision is BF16
            and args.device.type == "cuda"
            and pick_precision(args.device) is not BF16
        ):
            continue

        def step_alone(precision: Precision = precision) -> dict[str, Any]:
            row = timed_loop(
                make_model(precision),
                itertools.repeat(crops),
                device=args.device,
                batch=sizes.batch,
                warmup=sizes.peer_warmup,
                timed=sizes.peer_timed,
                every=sizes.peer_every,
            )
            row["precision"] = precision.name
            return row

        bench.row(
            f"e2e.lightly_step_{precision.name}",
            f"lightly ResNet-18 step alone ({precision.name}, fixed crops)",
            step_alone,
        )


class ScalerProbe:
    """Context manager: while active, every ``torch.amp.GradScaler`` the trainer builds
    records, per step, its scale and whether the optimizer step was skipped (an fp16
    overflow makes the scaler skip the step and halve the scale), and skips the optimizer
    steps listed in ``force_skip`` (so that an fp32 reference run can skip the same ones).
    """

    def __init__(self, force_skip: set[int] | None = None) -> None:
        self.force_skip = force_skip or set()
        self.scales: list[float] = []
        self.skipped: list[int] = []

    def __enter__(self) -> ScalerProbe:
        probe, base = self, torch.amp.GradScaler
        self._base = base

        class Probed(base):  # type: ignore[misc, valid-type]
            def step(self, optimizer, *args, **kwargs):
                if len(probe.scales) in probe.force_skip:
                    return None
                return super().step(optimizer, *args, **kwargs)

            def update(self, new_scale=None):
                i = len(probe.scales)
                before = self.get_scale() if self.is_enabled() else 1.0
                super().update(new_scale)
                after = self.get_scale() if self.is_enabled() else 1.0
                if after < before or i in probe.force_skip:
                    probe.skipped.append(i)
                probe.scales.append(after)

        torch.amp.GradScaler = Probed
        return self

    def __exit__(self, *exc: object) -> None:
        torch.amp.GradScaler = self._base


def part_fp16(bench: Bench, images: Tensor) -> None:
    """Comparison 5: the T4 precision (fp16 + GradScaler) against fp32, same seed.

    The fp16 run starts with the scaler's initial scale (65536) and skips optimizer steps
    while it backs off; the fp32 reference then skips the same steps, so that both apply
    the same updates and only the arithmetic differs. The unaligned curve (fp32 with no
    skipped step) is reported too.
    """
    args, sizes = bench.args, bench.sizes

    def train(precision: str, force_skip: set[int] | None = None) -> tuple[dict, ScalerProbe]:
        cfg = DINOConfig(
            arch=sizes.fp16_arch,
            patch_size=4,
            out_dim=sizes.out_dim,
            hidden_dim=sizes.hidden_dim,
            bottleneck_dim=sizes.bottleneck_dim,
            batch_size=sizes.fp16_batch,
            epochs=sizes.fp16_epochs,
            steps_per_epoch=sizes.fp16_steps_per_epoch,
            warmup_epochs=1,
            crops=crop_config(),
            device=str(args.device),
            precision=precision,
            log_every=sizes.fp16_steps_per_epoch,
            seed=args.seed,
        )
        data = ImageBatches(images, sizes.fp16_batch, seed=args.seed, rank=0, world_size=1)
        with ScalerProbe(force_skip) as probe:
            history = train_dino(cfg, data, progress=False)
        return {k: history.column(k) for k in STEP_STATS}, probe

    def run() -> dict[str, Any]:
        # What a Colab T4 (sm_75) gets; the CPU smoke test runs the same fp16 + scaler there.
        forced = pick_precision(torch.device("cuda"), capability=(7, 5))
        if forced.name != "fp16" or not forced.use_grad_scaler:
            raise RuntimeError(
                f"pick_precision(capability=(7, 5)) gave {forced}, not fp16 + scaler"
            )
        fp16, probe16 = train(forced.name)
        fp32_aligned, _ = train("fp32", force_skip=set(probe16.skipped))
        fp32_plain, _ = train("fp32")
        got, ref = np.array(fp16["loss"]), np.array(fp32_aligned["loss"])
        finite = all(np.isfinite(v).all() for v in fp16.values())
        rel = np.abs(got - ref) / np.abs(ref)
        plain = np.abs(got - np.array(fp32_plain["loss"])) / np.abs(np.array(fp32_plain["loss"]))
        ok = finite and float(rel.max()) <= args.fp16_tolerance
        return {
            "pass": bool(ok),
            "finite": bool(finite),
            "tolerance": args.fp16_tolerance,
            "max_rel_diff": float(rel.max()),
            "mean_rel_diff": float(rel.mean()),
            "unaligned_max_rel_diff": float(plain.max()),
            "unaligned_mean_rel_diff": float(plain.mean()),
            "skipped_steps": probe16.skipped,
            "scales": probe16.scales,
            "steps": len(ref),
            "curves": {"fp16": fp16, "fp32_same_skips": fp32_aligned, "fp32": fp32_plain},
            "summary": (
                f"{'PASS' if ok else 'FAIL'}: finite={finite}, {len(probe16.skipped)} of "
                f"{len(ref)} steps skipped by the scaler (final scale {probe16.scales[-1]:g}); "
                f"vs fp32 with the same skips: max |d loss|/loss {100 * rel.max():.2f} % "
                f"(tolerance {100 * args.fp16_tolerance:.1f} %), mean {100 * rel.mean():.2f} %; "
                f"vs plain fp32: max {100 * plain.max():.1f} %; loss {ref[0]:.3f} -> "
                f"{ref[-1]:.3f} (fp32) / {got[0]:.3f} -> {got[-1]:.3f} (fp16)"
            ),
        }

    bench.row(
        "fp16.check",
        f"T4 path: fp16 + GradScaler vs fp32 ({sizes.fp16_arch}, batch {sizes.fp16_batch})",
        run,
    )


# ---------------------------------------------------------------------------- summary
def summarise(bench: Bench) -> dict[str, Any]:
    rows = bench.report["rows"]

    def rate(key: str) -> float:
        return rows.get(key, {}).get("img_s", math.nan)

    vit = [v for v in (rate("step.teachkit"), rate("step.teachkit_compiled")) if not math.isnan(v)]
    best_vit = max(vit, default=math.nan)
    ratios = {
        "e2e_vs_lightly": rate("e2e.teachkit") / rate("e2e.lightly"),
        "e2e_vs_own_step": rate("e2e.teachkit") / rate("e2e.teachkit_step"),
        "vit_step_vs_timm_per_crop": best_vit / rate("step.timm_per_crop"),
    }
    summary = {
        name: {
            "ratio": value,
            "target": TARGETS[name],
            "meets_target": None if math.isnan(value) else bool(value >= TARGETS[name]),
        }
        for name, value in ratios.items()
    }
    fp16 = rows.get("fp16.check", {})
    summary["fp16_matches_fp32"] = {"pass": fp16.get("pass")}
    return summary


def print_summary(bench: Bench) -> None:
    args, sizes = bench.args, bench.sizes
    m = bench.report["machine"]
    where = m.get("gpu", m["cpu"])
    print()
    print(
        f"DINO throughput on {where} (torch {m['torch']}), batch {sizes.batch}, crops 2 x 32 px "
        f"+ 6 x 16 px, head K={sizes.out_dim} hidden {sizes.hidden_dim} bottleneck "
        f"{sizes.bottleneck_dim}{', TINY smoke-test sizes' if args.tiny else ''}"
    )
    print(f"{'':58}{'img/s':>16}{'':>17}")
    for r in bench.report["rows"].values():
        print(format_row(r))
    print()
    labels = {
        "e2e_vs_lightly": "teachkit e2e / lightly e2e",
        "e2e_vs_own_step": "teachkit e2e / teachkit step alone",
        "vit_step_vs_timm_per_crop": "teachkit ViT step / timm per-crop step",
    }
    for name, s in bench.report["summary"].items():
        if name in labels:
            verdict = {True: "meets", False: "MISSES", None: "n/a"}[s["meets_target"]]
            print(f"{labels[name]:<58}{s['ratio']:>10.3g} x   target >= {s['target']:g}  {verdict}")
    print(
        "peer figures previously measured on an H200 (not this run): lightly loader 344 img/s, "
        "lightly e2e 356 img/s, its step alone 3,637 fp32 / 3,026 bf16 img/s, timm ViT-Tiny/4 "
        "per-crop bf16 1,432 img/s"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sizes = TINY if args.tiny else FULL
    if args.batch is not None:
        sizes = Sizes(**{**asdict(sizes), "batch": args.batch})
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.parts is None:
        args.parts = ",".join(p for p in PARTS if not (args.tiny and p == "compile"))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        sys.exit(f"unknown --parts {sorted(unknown)}; expected some of {list(PARTS)}")
    torch.set_num_threads(args.threads)
    host = synthetic_images(max(sizes.images, sizes.batch), 32, args.seed)
    images = host.to(args.device)
    bench = Bench(args, sizes)
    print(
        f"device {args.device} {bench.report['machine'].get('gpu', '')}; parts {parts}", flush=True
    )
    for part in parts:
        if part == "step":
            part_step(bench, images)
        elif part == "e2e":
            part_e2e(bench, images)
        elif part == "fp16":
            part_fp16(bench, images)
        elif part == "compile":
            part_step(bench, images, compile_only=True)
    bench.report["summary"] = summarise(bench)
    bench.report["total_s"] = time.perf_counter() - bench.start
    bt.write_json(args.out, bench.report)
    print_summary(bench)
    if args.out is not None:
        print(f"wrote {args.out}")
    return bench.report


if __name__ == "__main__":
    main()
