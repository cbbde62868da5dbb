"""Where teachkit's DINO training loop spends its time besides the step (issue 14).

The ``e2e`` rows of ``dino_throughput.py`` (ResNet-18, batch 256, 2 x 32 px + 6 x 16 px
crops made on the device from a uint8 ``ImageBatches``) in three passes:

1. **timing**: ``train_dino`` end to end and with fixed crops (the step alone), timed
   between its metric read-backs as ``dino_throughput.py`` times them; their ratio.
2. **regions**: end to end under ``torch.profiler``: host time per step of each
   ``dino/...`` region the trainer labels while a profiler records (data, augment_draw,
   augment, teacher_forward, student_forward, loss, backward, clip, optimizer, ema,
   stats, flush), the kernel time launched from it on a GPU, and the aten calls it
   makes (on a GPU most are a kernel launch). The warm-up steps are left out.
3. **syncs** (CUDA only): a few steps end to end under
   ``torch.cuda.set_sync_debug_mode("warn")``: every call that made the host wait for
   the GPU, by the teachkit line that led to it, and how often per step. A host sync
   per step stops the host from queueing the next step while the GPU works.

Everything is printed; nothing is written.

    OMP_NUM_THREADS=1 python benchmarks/profile_dino_loop.py --tiny    # CPU, ~15 s
    python benchmarks/profile_dino_loop.py --device cuda               # GPU, ~25 s
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from dino_throughput import (
    FULL,
    TINY,
    Sizes,
    StepClock,
    fixed_crops,
    synthetic_images,
    teachkit_config,
    teachkit_inputs,
    teachkit_resnet,
)
from torch import Tensor

from teachkit.dino.trainer import Callback, train_dino

#: More steps than dino_throughput.py's smoke test (3), fewer than its GPU run (80).
TINY_PROFILE = dataclasses.replace(TINY, warmup=2, timed=8, log_every=2)
FULL_PROFILE = dataclasses.replace(FULL, warmup=10, timed=20, log_every=10)
PROFILED_STEPS = 5  # at most, after at most 5 of warm-up (the profiler's events take a while)
SYNC_STEPS = 4  # steps under the sync debug mode (after the warm-up)
TEACHKIT = str(Path(__file__).resolve().parents[1] / "teachkit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (CPU)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 with --tiny, else 2 as dino_throughput.py)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train(
    args: argparse.Namespace,
    sizes: Sizes,
    images: Tensor,
    crops: list[Tensor] | None,
    callbacks: tuple[Callback, ...] = (),
) -> StepClock:
    """One ``train_dino`` run of ``sizes.warmup + sizes.timed`` steps on the (N, 3, 32,
    32) uint8 ``images`` (``crops``: the step alone), as ``dino_throughput.py`` runs it;
    its clock."""
    arch, backbone = teachkit_resnet(sizes)
    clock = StepClock(batch=sizes.batch, every=sizes.log_every, warmup=sizes.warmup)
    data, augment = teachkit_inputs(args, sizes, images, crops)
    cfg = teachkit_config(args, sizes, arch=arch)
    train_dino(
        cfg, data, backbone=backbone, callbacks=[clock, *callbacks], progress=False, augment=augment
    )
    return clock


def timing(args: argparse.Namespace, sizes: Sizes, images: Tensor) -> None:
    """Pass 1: ms per step end to end and for the step alone."""
    print(f"\n== timing ({sizes.timed} steps after {sizes.warmup} of warm-up, batch {sizes.batch})")
    rows = {}
    for name, crops in (("e2e", None), ("step", fixed_crops(images, sizes.batch, args.seed))):
        rows[name] = train(args, sizes, images, crops).result()
        print(
            f"{name:>6}: {rows[name]['ms_per_step']:8.2f} ms/step  {rows[name]['img_s']:9.1f} img/s"
        )
    print(f"e2e / step alone: {rows['e2e']['img_s'] / rows['step']['img_s']:.3f} (target >= 0.85)")


def region_table(prof: torch.profiler.profile, steps: int, first_timed: float) -> None:
    """Print the ``dino/...`` regions that start at or after ``first_timed`` (profiler
    microseconds), per step: host ms, device ms (kernels launched inside), aten calls."""
    events = [e for e in prof.events() if e.time_range.start >= first_timed]
    labels = sorted(
        {e.name for e in events if e.name.startswith("dino/")},
        key=lambda n: min(e.time_range.start for e in events if e.name == n),
    )
    stats = {n: {"calls": 0, "host": 0.0, "device": 0.0, "ops": 0} for n in labels}
    for e in events:
        if e.name in stats:
            s = stats[e.name]
            s["calls"] += 1
            s["host"] += e.time_range.elapsed_us()
            s["device"] += getattr(e, "device_time_total", 0.0)
        elif e.name.startswith("aten::"):  # an aten call: counted in its region if outermost
            parent = e.cpu_parent
            while parent is not None and not parent.name.startswith(("aten::", "dino/")):
                parent = parent.cpu_parent
            if parent is not None and parent.name in stats:
                stats[parent.name]["ops"] += 1
    wall = max(e.time_range.end for e in events if e.name in stats) - first_timed
    print(
        f"{'region':<24}{'calls/step':>11}{'host ms/step':>14}{'% of step':>10}"
        f"{'device ms/step':>16}{'aten calls/step':>17}"
    )
    for n in labels:
        s = stats[n]
        print(
            f"{n:<24}{s['calls'] / steps:>11.2f}{s['host'] / steps / 1e3:>14.3f}"
            f"{100 * s['host'] / wall:>9.1f}%{s['device'] / steps / 1e3:>16.3f}"
            f"{s['ops'] / steps:>17.1f}"
        )
    print(f"{'whole step (wall)':<24}{'':>11}{wall / steps / 1e3:>14.3f}{100.0:>9.1f}%")


def regions(args: argparse.Namespace, sizes: Sizes, images: Tensor) -> None:
    """Pass 2: the labelled regions of the end-to-end loop, warm-up left out."""
    sizes = dataclasses.replace(
        sizes, warmup=min(sizes.warmup, 5), timed=min(sizes.timed, PROFILED_STEPS)
    )
    print(f"\n== regions under torch.profiler, end to end ({sizes.timed} steps)")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        train(args, sizes, images, None)
    starts = sorted(e.time_range.start for e in prof.events() if e.name == "dino/data")
    region_table(prof, sizes.timed, starts[sizes.warmup])
    print("(host ms: wall time on the host inside the region, waits for the GPU included)")


def _shown(path: str) -> str:
    """A path relative to the repository if inside it, else the file's name."""
    p, root = Path(path), Path(TEACHKIT).parent
    return str(p.relative_to(root)) if p.is_relative_to(root) else p.name


@contextmanager
def sync_log() -> Iterator[collections.Counter]:
    """Count the synchronising CUDA calls made inside, by the innermost teachkit line
    that led to each (and the torch line that synchronised, when it is not in teachkit)."""
    found: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing" not in str(message):
            return
        frames = traceback.extract_stack()[:-1]
        ours = [f for f in frames if f.filename.startswith(TEACHKIT)]
        where = ours[-1] if ours else frames[-1]
        via = "" if filename.startswith(TEACHKIT) else f"  (in {_shown(filename)}:{lineno})"
        found[f"{_shown(where.filename)}:{where.lineno}: {where.line}{via}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")


def syncs(args: argparse.Namespace, sizes: Sizes, images: Tensor) -> None:
    """Pass 3: host syncs per step of the end-to-end loop (CUDA only)."""
    if args.device.type != "cuda":
        print("\n== syncs: CUDA only (a CPU has nothing to wait for); see benchmarks/README.md")
        return
    steps = sizes.log_every * max(1, SYNC_STEPS // sizes.log_every)
    print(f"\n== host syncs per step, end to end ({steps} steps after {sizes.warmup} of warm-up)")
    with sync_log() as found:

        def forget_warmup(kind: str, record: dict[str, float]) -> None:
            if kind == "step" and int(record["step"]) + 1 == sizes.warmup:
                found.clear()  # first-batch checks, cuDNN set-up: not per step

        train(args, dataclasses.replace(sizes, timed=steps), images, None, (forget_warmup,))
    print(f"{sum(found.values()) / steps:.1f} synchronising calls per step; by line:")
    for where, n in found.most_common():
        print(f"{n / steps:6.2f}/step  {where}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = TINY_PROFILE if args.tiny else FULL_PROFILE
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.threads = args.threads or (1 if args.tiny else 2)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images = synthetic_images(max(sizes.images, sizes.batch), 32, args.seed).to(args.device)
    print(
        f"device {args.device}, torch {torch.__version__}, threads {args.threads}"
        f"{', TINY sizes (CPU smoke test: host costs only)' if args.tiny else ''}"
    )
    timing(args, sizes, images)
    regions(args, sizes, images)
    syncs(args, sizes, images)
    print(f"\n{time.perf_counter() - start:.1f} s in all")


if __name__ == "__main__":
    main()
