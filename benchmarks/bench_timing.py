"""Timing helpers shared by the benchmark scripts: synchronise, warm up, take the median.

GPU work is asynchronous: a host timer around a kernel launch measures the launch, not
the kernel. Every timed block here is bracketed by ``torch.cuda.synchronize()`` (nothing
on the CPU), ``warmup`` untimed calls run first (cuDNN / cuBLAS heuristics, allocator
growth, ``torch.compile``), and the median of ``repeats`` timed blocks is reported: one
slow outlier (another process, a garbage-collection pause) does not move it.

The scripts import this module by name (``import bench_timing``): Python puts the
script's own folder, ``benchmarks/``, first on ``sys.path``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RowRunner",
    "Skipped",
    "machine_info",
    "matmul_peak_flops",
    "median",
    "synchronize",
    "time_calls",
    "write_json",
]


class Skipped(Exception):
    """A benchmark row that cannot run here; the message says why (printed as the row)."""


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], Any],
    *,
    device: torch.device | str,
    warmup: int = 3,
    repeats: int = 10,
    inner: int = 1,
) -> list[float]:
    """Seconds per call of ``fn``: ``repeats`` timed blocks of ``inner`` calls each.

    Each block is synchronised before and after, so queued GPU work is counted in full;
    ``inner > 1`` amortises the synchronisation over several back-to-back calls (use it
    for calls much shorter than a millisecond).

    Returns:
        ``repeats`` values, each the block's seconds divided by ``inner``.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / inner)
    return times


def median(values: list[float]) -> float:
    """The median, NaN for an empty list."""
    return statistics.median(values) if values else math.nan


def matmul_peak_flops(
    device: torch.device | str, dtype: torch.dtype = torch.bfloat16, n: int = 8192, repeats: int = 5
) -> float:
    """Measured matrix-product rate in FLOP/s: median of ``n x n @ n x n`` products.

    Random (not zero) operands: zeros run measurably faster on some GPUs. On the CPU use a
    small ``n`` (512): the number is then a sanity value, not a peak.
    """
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    inner = 10 if device.type == "cuda" else 1
    seconds = median(
        time_calls(lambda: a @ b, device=device, warmup=2, repeats=repeats, inner=inner)
    )
    return 2.0 * n**3 / seconds


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """Versions, card, CPU count: what a reader needs to compare two result files."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = list(torch.cuda.get_device_capability(device))
    return info


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf become None, paths and dtypes become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` (strict JSON, NaN as null); nothing when ``path`` is None.

    The scripts call this after every row, so a run stopped by its time limit still leaves
    the rows it finished.
    """
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2))
    tmp.replace(path)


class RowRunner:
    """Runs benchmark rows within a soft time budget, prints each as it finishes and
    rewrites the JSON report after every row, so a run cut short keeps what it measured.

    Args:
        report: the JSON report; rows go into ``report["rows"]``.
        out: where to write it (``None``: nowhere).
        budget_s: rows not started after this many seconds are skipped.
        format_row: one printed line for a finished row.
        known_errors: exception types reported in short form, with their prefix.
    """

    def __init__(
        self,
        report: dict[str, Any],
        *,
        out: Path | None,
        budget_s: float,
        format_row: Callable[[dict[str, Any]], str],
        known_errors: dict[type[Exception], str] | None = None,
    ) -> None:
        self.report, self.out, self.budget_s = report, out, budget_s
        self.format_row, self.known_errors = format_row, known_errors or {}
        self.report.setdefault("rows", {})
        self.start = time.perf_counter()

    def row(self, key: str, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` (returning the row's figures) unless the budget is spent."""
        if time.perf_counter() - self.start > self.budget_s:
            result: dict[str, Any] = {"skipped": f"time budget ({self.budget_s:.0f} s) spent"}
        else:
            t0 = time.perf_counter()
            try:
                result = fn()
            except Skipped as err:
                result = {"skipped": str(err)}
            except Exception as err:  # noqa: BLE001 - one failed row must not lose the others
                prefix = next((p for t, p in self.known_errors.items() if isinstance(err, t)), None)
                if prefix is None:
                    traceback.print_exc()
                    prefix = type(err).__name__
                result = {"error": f"{prefix}: {err}"}
            result["wall_s"] = time.perf_counter() - t0
        result["label"] = label
        self.report["rows"][key] = result
        print(self.format_row(result), flush=True)
        write_json(self.out, self.report)
        return result
