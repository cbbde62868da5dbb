"""Run every chapter's full-profile code path under a Colab T4's limits, cell by cell.

Students run the notebooks on Colab's free T4: 15 GB of GPU memory and fp16. The
committed outputs come from the quick profile, so nothing else runs the cells under
``if not P.is_quick`` at their real sizes. This script does (issue 14), on the GPU
machine:

* each notebook's code cells run in order with ``PROFILE = "full"`` and the full
  profile's sizes (``P.choose(...)`` gives ``full``), in a process of their own;
* GPU memory is capped at a T4's 15 GiB
  (``torch.cuda.set_per_process_memory_fraction``), and the card reports compute
  capability 7.5 to Python, so ``pick_precision`` chooses what it chooses on a T4:
  fp16 autocast with a gradient scaler wherever a chapter trains under
  ``P.precision``. Cells that run in fp32 on a T4 run in fp32 here too, so the memory
  they need is measured as a student's T4 would need it;
* random weights of the official sizes stand in for the downloads (SAM ViT-B, DINO
  ViT-S/8 and ViT-S/16; ``teachkit.hub.download`` is replaced), and generated files in
  CIFAR-10's format (50,000 + 10,000 random images) stand in for CIFAR-10;
* per cell: the wall time (synchronised), the peak of allocated and of reserved GPU
  memory while it ran (what earlier cells still hold included: that is what must fit),
  the notebook process's peak resident host memory so far (a Colab runtime has about
  12 GiB), and pass / fail / out-of-memory, written after every cell.

The last code cell of each notebook asserts quick-profile numbers and is skipped, as in
``tests/test_full_profile_cells.py`` (which runs Chapters 4, 6 and 7 on the CPU at quick
sizes; this script generalises its mechanism to every chapter, real sizes and CIFAR).
Times are H100 times, not T4 times: a T4 is several times slower.

    bash benchmarks/gpu_full_profile.sh                        # the GPU machine; $OUT
    python benchmarks/full_profile.py --smoke --out /tmp/fp    # CPU smoke test

``--smoke`` runs on the CPU with the quick profile's sizes, small stand-ins for the
official models and small CIFAR files: it checks the machinery (and that every
full-profile branch at least runs), not the memory. The sizes a full branch writes
without ``P.choose`` shrink too: a trainer given ``steps=`` runs at most
``SMOKE_MAX_STEPS`` of them (Chapter 1's 6,000-step trainings), and a DINO head has
at most ``SMOKE_OUT_DIM`` prototypes (Chapter 3's CIFAR-10 epoch: 65,536 of them make
a 671 MB tensor of logits per step).

Files written under ``--out`` (4): ``full_profile.md`` (the per-cell table),
``full_profile.json`` (everything), ``cells.jsonl`` (one line per cell as it finishes)
and, from the shell script, ``full_profile.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# Memory-heavy chapters first: if the time runs out, what is left is the cheap part.
ORDER = (
    "06_sam_encoder_to_decoder",
    "07_dino_plus_sam",
    "04_attention_that_segments",
    "05_knn_classification_retrieval",
    "03_dino_step_by_step",
    "01_unsupervised_vs_self_supervised",
    "02_vision_transformers",
)
T4_GIB = 15.0  # Colab's T4: 15,360 MiB
T4_CAPABILITY = (7, 5)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
#: --smoke: the most steps of a trainer called with ``steps=`` (the quick sizes' live runs
#: are 100-150; the full branches' fixed 6,000 would keep one CPU core busy for an hour).
SMOKE_MAX_STEPS = 20
#: --smoke: the most prototypes of a DINO head (the recipe's 65,536, at batch 256 and 10
#: crops, make 671 MB of logits per step: more than the smoke's host memory allows).
SMOKE_OUT_DIM = 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the report files")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, quick-profile sizes, small stand-in models and CIFAR files (a dry run)",
    )
    p.add_argument(
        "--notebooks",
        default=",".join(ORDER),
        help="comma-separated notebook names or number prefixes (06,07), run in this order",
    )
    p.add_argument("--cap-gib", type=float, default=T4_GIB, help="GPU memory cap (15: a T4)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="total seconds; a notebook not started by then is reported as not run",
    )
    p.add_argument(
        "--min-notebook-s",
        type=float,
        default=60.0,
        help="the least time a started notebook gets (each gets 1.5x its share of what is left)",
    )
    p.add_argument(
        "--host-mem-gib",
        type=float,
        default=None,
        help="limit each notebook's process to this much host memory (RLIMIT_DATA), so a\n"
        "cell too big for the machine fails instead of waking the kernel's OOM killer\n"
        "(default: none; 6 with --smoke)",
    )
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: temp)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: run one notebook
    return p.parse_args(argv)


# ------------------------------------------------------------------------ notebooks
def select_notebooks(spec: str) -> list[str]:
    """Full notebook stems from ``"06,07"`` or full names; unknown names are an error."""
    stems = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    chosen = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        match = [s for s in stems if s == item or s.startswith(item + "_")]
        if len(match) != 1:
            raise ValueError(f"unknown notebook {item!r}; expected one of {stems}")
        chosen.append(match[0])
    return chosen


def full_profile_cells(stem: str) -> list[str]:
    """The notebook's code cells with ``PROFILE = "full"``, without its last cell (which
    asserts quick-profile numbers), as ``tests/test_full_profile_cells.py`` runs them."""
    cells = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    if "PROFILE = None" not in code[1]:
        raise ValueError(f"{stem}: the second code cell does not set PROFILE = None")
    code[1] = code[1].replace("PROFILE = None", 'PROFILE = "full"')
    return code[:-1]


# ------------------------------------------------------------------ stand-in inputs
def write_cifar_like(root: Path, *, per_train_file: int, n_test: int, seed: int = 0) -> Path:
    """Random images in CIFAR-10's python format under ``root/cifar-10-batches-py``.

    The layout ``teachkit.data.cifar.load_cifar10`` reads (five training batches, a test
    batch, ``batches.meta``); the same files as ``tests/test_cifar.py`` builds, at any
    size. Pixels are uniform noise and labels uniform: right for memory and time, not for
    accuracy.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = {name: per_train_file for name in CIFAR_TRAIN_FILES} | {"test_batch": n_test}
    for name, n in sizes.items():
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": list(CIFAR_CLASSES), "num_cases_per_batch": per_train_file}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def stand_in_builders() -> dict[str, Callable[[], Any]]:
    """The model each downloadable checkpoint of the chapters belongs to, built the way
    the chapters build it (so ``--smoke``'s smaller stand-ins apply here too)."""
    from teachkit.models import vit
    from teachkit.sam import build

    return {
        "sam_vit_b": lambda: build.build_sam("vit_b"),
        "dino_vits8": lambda: vit.vit_small(patch_size=8),
        "dino_vits16": lambda: vit.vit_small(patch_size=16),
    }


def random_weights_file(name: str, cache: Path) -> Path:
    """A file of random weights for the registry entry ``name`` (made once, atomically)."""
    import torch

    path = cache / f"{name}_random.pth"
    if not path.exists():
        builders = stand_in_builders()
        if name not in builders:
            raise KeyError(f"no random stand-in for {name!r}; add one to stand_in_builders()")
        torch.manual_seed(0)
        tmp = path.with_suffix(f".{os.getpid()}.part")
        torch.save(builders[name]().state_dict(), tmp)
        tmp.replace(path)
    return path


def _small_stand_ins(patch: Callable[[Any, str, Any], None]) -> None:
    """--smoke: the official models replaced by small ones of the same structure."""
    from teachkit.models import vit
    from teachkit.sam import build

    configs = dict(build.SAM_CONFIGS)
    configs["vit_b"] = build.SamConfig(
        encoder_embed_dim=64,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        prompt_embed_dim=64,
        decoder_mlp_dim=128,
        decoder_num_heads=4,
        iou_head_hidden_dim=64,
    )  # still 1024 px, 16 px patches, windows of 14: the official geometry
    patch(build, "SAM_CONFIGS", configs)
    # ViT-S (the DINO downloads, Chapter 3's DINO epoch): 2 blocks of width 96, 6 heads
    small = dict(embed_dim=96, depth=2, num_heads=6)
    patch(vit, "VIT_SIZES", {**vit.VIT_SIZES, "vit_small": small})


def _short_trainings(patch: Callable[[Any, str, Any], None]) -> None:
    """--smoke: the trainings the full branches size without ``P.choose`` made small.

    ``train_autoencoder`` and ``train_contrastive`` run at most ``SMOKE_MAX_STEPS`` steps;
    ``train_dino``'s head has at most ``SMOKE_OUT_DIM`` prototypes (its steps are already
    few: one epoch of the small CIFAR files is 19 steps of 256). The notebooks import
    these functions from their modules after the patch, so they get the short ones.
    """
    from teachkit.dino import trainer
    from teachkit.pretext import autoencoder, contrastive

    def at_most_smoke_steps(train: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(train)
        def short(*args: Any, steps: int, **kwargs: Any) -> Any:
            return train(*args, steps=min(steps, SMOKE_MAX_STEPS), **kwargs)

        return short

    train_dino = trainer.train_dino

    @functools.wraps(train_dino)
    def small_head(config: Any, *args: Any, **kwargs: Any) -> Any:
        config = replace(config, out_dim=min(config.out_dim, SMOKE_OUT_DIM))
        return train_dino(config, *args, **kwargs)

    patch(autoencoder, "train_autoencoder", at_most_smoke_steps(autoencoder.train_autoencoder))
    patch(contrastive, "train_contrastive", at_most_smoke_steps(contrastive.train_contrastive))
    patch(trainer, "train_dino", small_head)


@contextlib.contextmanager
def offline_full_profile(work: Path, *, smoke: bool, served: list[str]) -> Iterator[None]:
    """The environment of a student's full-profile run, offline.

    ``teachkit.hub.download`` serves random weights (names recorded in ``served``);
    ``TEACHKIT_DATA`` points at the generated CIFAR files under ``work``; the working
    directory is ``work/cwd`` (chapters write ``runs/...`` there); figures are closed
    instead of shown. On CUDA, Python sees a T4's compute capability. With ``smoke``,
    ``P.choose`` returns the quick value, the official models are small stand-ins and
    the trainings are short (:func:`_short_trainings`). Everything is restored on exit.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import teachkit.hub as hub
    from teachkit.profiles import Profile

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def download(url_or_entry, **kwargs):  # a registry name, or its entry (load_state_dict)
        name = str(getattr(url_or_entry, "name", url_or_entry))
        served.append(name)
        return random_weights_file(name, work / "weights")

    (work / "weights").mkdir(parents=True, exist_ok=True)
    (work / "cwd").mkdir(parents=True, exist_ok=True)
    old_env = {k: os.environ.get(k) for k in ("TEACHKIT_DATA", "TEACHKIT_CACHE")}
    old_cwd = Path.cwd()
    try:
        os.environ["TEACHKIT_DATA"] = str(work / "data")
        os.environ["TEACHKIT_CACHE"] = str(work / "cache")
        patch(hub, "download", download)
        patch(plt, "show", lambda *a, **k: plt.close("all"))
        if torch.cuda.is_available():
            patch(torch.cuda, "get_device_capability", lambda device=None: T4_CAPABILITY)
        if smoke:
            patch(Profile, "choose", lambda self, *, quick, full: quick)
            _small_stand_ins(patch)
            _short_trainings(patch)
        os.chdir(work / "cwd")
        yield
    finally:
        os.chdir(old_cwd)
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------ one notebook
@dataclass
class CellResult:
    """One code cell of one notebook."""

    notebook: str
    cell: int  # index among the notebook's code cells
    first_line: str
    status: str  # pass, fail, oom, timeout, not run
    seconds: float | None = None
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    error: str = ""
    peak_host_gib: float | None = None  # the process's peak resident memory so far


def _first_line(src: str) -> str:
    lines = [ln.strip() for ln in src.splitlines() if ln.strip() and not ln.startswith("#")]
    return (lines[0] if lines else "")[:70]


def run_notebook(stem: str, args: argparse.Namespace, log: Path) -> None:
    """Child process: run one notebook's cells, appending one JSON line per cell to ``log``
    (a ``start`` line before each cell, so a parent that kills us knows which one ran)."""
    if args.host_mem_gib:
        limit = int(args.host_mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), 0)
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    cells = full_profile_cells(stem)
    served: list[str] = []
    namespace: dict[str, Any] = {"__name__": "__main__"}

    def write(record: dict[str, Any]) -> None:
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    with offline_full_profile(args.work_dir, smoke=args.smoke, served=served):
        for i, src in enumerate(cells):
            write({"event": "start", "notebook": stem, "cell": i, "first_line": _first_line(src)})
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            result = CellResult(stem, i, _first_line(src), "pass")
            start = time.perf_counter()
            try:
                exec(compile(src, f"{stem}[{i}]", "exec"), namespace)  # noqa: S102
                if cuda:
                    torch.cuda.synchronize()
            except out_of_memory as err:
                result.status, result.error = "oom", f"OutOfMemoryError: {str(err)[:300]}"
            except Exception as err:  # noqa: BLE001 - report every failure, keep going
                result.status = "fail"
                result.error = f"{type(err).__name__}: {str(err)[:300]}"
                tb = traceback.format_exc(limit=-3)
                print(tb, file=sys.stderr)
            result.seconds = time.perf_counter() - start
            if cuda:
                result.peak_allocated_gib = torch.cuda.max_memory_allocated() / 2**30
                result.peak_reserved_gib = torch.cuda.max_memory_reserved() / 2**30
                if result.status == "oom":
                    torch.cuda.empty_cache()
            result.peak_host_gib = peak_host_gib()
            write({"event": "done", **asdict(result)})
            mem = f" host {result.peak_host_gib:.2f} GiB"
            if result.peak_reserved_gib is not None:
                mem += f", GPU {result.peak_reserved_gib:.2f} GiB"
            print(
                f"{stem}[{i}] {result.status:<4} {result.seconds:7.1f} s{mem}  "
                f"{result.first_line}  {result.error[:120]}",
                flush=True,
            )
    write({"event": "served", "notebook": stem, "names": served})


def peak_host_gib() -> float:
    """This process's peak resident host memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------- the parent
@dataclass
class Report:
    config: dict[str, Any]
    machine: dict[str, Any]
    cells: list[CellResult] = field(default_factory=list)
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    total_s: float = 0.0


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return info


def collect(log: Path, stem: str, cells: list[str], ended: str) -> list[CellResult]:
    """The cells of ``stem`` from the child's log; cells it did not finish get ``ended``
    (the one in flight) or "not run" (the rest)."""
    done: dict[int, CellResult] = {}
    started: set[int] = set()
    if log.exists():
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("notebook") != stem:
                continue
            if rec["event"] == "start":
                started.add(rec["cell"])
            elif rec["event"] == "done":
                done[rec["cell"]] = CellResult(**{k: v for k, v in rec.items() if k != "event"})
    out = []
    for i, src in enumerate(cells):
        if i in done:
            out.append(done[i])
        else:
            status = ended if i in started else "not run"
            out.append(CellResult(stem, i, _first_line(src), status))
    return out


def render_markdown(report: Report) -> str:
    m, c = report.machine, report.config
    lines = [
        f"# Full profile under a T4's limits: {m.get('gpu', 'CPU')} ({m['date']})",
        "",
        f"torch {m['torch']}; memory cap {c['cap_gib']} GiB; fp16 where `P.precision` "
        f"applies (capability {T4_CAPABILITY[0]}.{T4_CAPABILITY[1]} shown to Python); "
        f"{'SMOKE (CPU, quick sizes, small stand-ins)' if c['smoke'] else 'full sizes'}; "
        f"{report.total_s:.0f} s in all. Times are this card's, not a T4's.",
        "",
        "| notebook | status | cells pass / run / all | seconds | peak reserved GiB "
        "| peak host GiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for stem, nb in report.notebooks.items():
        lines.append(
            f"| {stem} | {nb['status']} | {nb['passed']} / {nb['run']} / {nb['cells']} | "
            f"{nb['seconds']:.0f} | {_gib(nb['peak_reserved_gib'])} | "
            f"{_gib(nb.get('peak_host_gib'))} |"
        )
    lines += [
        "",
        "| nb | cell | first line | status | s | peak alloc GiB | peak reserved GiB "
        "| peak host GiB | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.cells:
        secs = "" if r.seconds is None else f"{r.seconds:.1f}"
        error = r.error.replace("|", "/").replace("\n", " ")[:160]
        lines.append(
            f"| {r.notebook[:2]} | {r.cell} | `{r.first_line.replace('|', '/')}` | {r.status} | "
            f"{secs} | {_gib(r.peak_allocated_gib)} | {_gib(r.peak_reserved_gib)} | "
            f"{_gib(r.peak_host_gib)} | {error} |"
        )
    return "\n".join(lines) + "\n"


def _gib(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def summarise(stem: str, cells: list[CellResult], seconds: float, served: list[str]) -> dict:
    run = [r for r in cells if r.status != "not run"]
    passed = sum(r.status == "pass" for r in cells)
    peaks = [r.peak_reserved_gib for r in cells if r.peak_reserved_gib is not None]
    host = [r.peak_host_gib for r in cells if r.peak_host_gib is not None]
    bad = sorted({r.status for r in run} - {"pass"})
    status = "PASS" if passed == len(cells) else ("NOT RUN" if not run else "/".join(bad).upper())
    return {
        "status": status,
        "cells": len(cells),
        "run": len(run),
        "passed": passed,
        "seconds": seconds,
        "peak_reserved_gib": max(peaks) if peaks else None,
        "peak_host_gib": max(host) if host else None,
        "served_weights": served,
    }


def child_command(stem: str, args: argparse.Namespace) -> list[str]:
    """This script in a fresh process, running one notebook."""
    cmd = [sys.executable, __file__, "--one", stem, "--out", str(args.out)]
    cmd += ["--work-dir", str(args.work_dir), "--cap-gib", str(args.cap_gib)]
    if args.host_mem_gib:
        cmd += ["--host-mem-gib", str(args.host_mem_gib)]
    return cmd + (["--smoke"] if args.smoke else [])


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """teachkit importable from the checkout; no GPU visible in a smoke run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # get_profile("full") must pick the CPU
    return env


def prepare_work_dir(work: Path, smoke: bool) -> None:
    """CIFAR-format files at the full profile's sizes (small ones for --smoke)."""
    if not (work / "data" / "cifar-10-batches-py" / "test_batch").exists():
        write_cifar_like(
            work / "data",
            per_train_file=1000 if smoke else 10000,
            n_test=1000 if smoke else 10000,
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.smoke and args.host_mem_gib is None:
        args.host_mem_gib = 6.0
    if args.one is not None:
        run_notebook(args.one, args, args.out / "cells.jsonl")
        return {}
    start = time.perf_counter()
    stems = select_notebooks(args.notebooks)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "cells.jsonl"
    log.unlink(missing_ok=True)
    scratch = None
    if args.work_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="teachkit-full-profile-")
        args.work_dir = Path(scratch.name)
    prepare_work_dir(args.work_dir, args.smoke)
    report = Report(
        config={
            "smoke": args.smoke,
            "cap_gib": args.cap_gib,
            "budget_s": args.budget_s,
            "notebooks": stems,
        },
        machine=machine_info(),
    )
    for k, stem in enumerate(stems):
        cells = full_profile_cells(stem)
        left = args.budget_s - (time.perf_counter() - start)
        share = 1.5 * left / (len(stems) - k)
        limit = min(left, max(args.min_notebook_s, share))
        t0 = time.perf_counter()
        ended, rc = "not run", None
        if left <= 5:
            print(f"== {stem}: not run (budget of {args.budget_s:.0f} s spent)", flush=True)
        else:
            print(f"== {stem} (limit {limit:.0f} s, {len(cells)} cells)", flush=True)
            try:
                rc = subprocess.run(child_command(stem, args), timeout=limit, env=child_env(args))
                ended = "fail"  # a cell in flight when the child died (killed, segfault)
                rc = rc.returncode
            except subprocess.TimeoutExpired:
                ended = "timeout"
                print(f"== {stem}: time limit ({limit:.0f} s)", flush=True)
        results = collect(log, stem, cells, ended)
        if rc:  # the child died (a signal: rc < 0) or could not start
            print(f"== {stem}: its process exited with {rc}", flush=True)
            why = f"the process exited with {rc}" + (" (killed)" if rc < 0 else "")
            unfinished = [r for r in results if r.status == "fail" and not r.error]
            if unfinished:
                unfinished[0].error = why + " during this cell"
            elif all(r.status == "not run" for r in results):
                results[0].status, results[0].error = "fail", why + " before its first cell"
        served = [
            name
            for line in (log.read_text().splitlines() if log.exists() else [])
            if (rec := json.loads(line)).get("event") == "served" and rec["notebook"] == stem
            for name in rec["names"]
        ]
        report.cells += results
        report.notebooks[stem] = summarise(stem, results, time.perf_counter() - t0, served)
        report.total_s = time.perf_counter() - start
        write_reports(report, args.out)
    if scratch is not None:
        scratch.cleanup()
    print(render_markdown(report))
    return {"notebooks": report.notebooks, "cells": [asdict(c) for c in report.cells]}


def write_reports(report: Report, out: Path) -> None:
    data = {
        "config": report.config,
        "machine": report.machine,
        "total_s": report.total_s,
        "notebooks": report.notebooks,
        "cells": [asdict(c) for c in report.cells],
    }
    (out / "full_profile.json").write_text(json.dumps(data, indent=1))
    (out / "full_profile.md").write_text(render_markdown(report))


if __name__ == "__main__":
    result = main()
    failed = [s for s, nb in result.get("notebooks", {}).items() if nb["status"] != "PASS"]
    sys.exit(1 if failed else 0)
