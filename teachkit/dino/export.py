"""Ship a finished DINO run: its teacher backbone as a pretrained checkpoint, with a card.

"Pretrained first" (Chapter 3): the command line trains for longer than a notebook can,
and this module turns the run's output directory (``checkpoint.pt``, ``metrics.json``)
into a shipped checkpoint (:mod:`teachkit.pretrained`) whose model card records the
command, hardware, wall time, the metric history and results measured on a fixed split:

* k-NN top-1 of the trained teacher backbone, of the *same network at its random
  initialisation* (the run's seed rebuilds it exactly) and of raw pixels;
* for ViTs, the Jaccard index of thresholded last-block CLS attention against the object
  masks (Chapter 4).

Command line::

    python -m teachkit.train ship --run /tmp/runs/dino_vit --name dino_vit_nano_shapes \\
        --description "..."

``--history-only`` ships the card alone (the ablation runs, whose curves are the lesson).
"""

from __future__ import annotations

import json
import shlex
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from teachkit.dino.config import DINOConfig
from teachkit.infra.checkpoint import CHECKPOINT_NAME, load_latest_file
from teachkit.infra.run import METRICS_NAME, portable_command
from teachkit.infra.weights import load_strict
from teachkit.models.registry import build_backbone
from teachkit.pretrained import ModelCard, check_shipped_name, save_card, save_shipped
from teachkit.profiles import seed_everything

__all__ = ["build_run_backbone", "evaluate_backbone", "load_run", "ship_run"]

#: Curves kept in a card, subsampled to at most this many points.
_HISTORY_POINTS = 200
_STEP_CURVES = ("loss", "teacher_entropy", "batch_entropy", "kl", "momentum", "teacher_temp")


def build_run_backbone(config: DINOConfig) -> nn.Module:
    """The run's backbone at its random initialisation (the seed the trainer used).

    The trainer seeds with ``config.seed`` before building the student, so this is
    exactly the network training started from.
    """
    seed_everything(config.seed)
    return build_backbone(
        config.arch,
        patch_size=config.patch_size,
        img_size=config.crops.global_size,
        conv_stem=config.conv_stem,
    ).eval()


def load_run(run_dir: str | Path) -> tuple[nn.Module, DINOConfig, dict[str, Any]]:
    """The trained teacher backbone, the config and ``metrics.json`` of a run directory.

    The checkpoint is read as a resumed run reads it
    (:func:`~teachkit.infra.checkpoint.load_latest_file`): ``checkpoint.pt``, or
    ``checkpoint.pt.prev`` with a warning when the newest is missing or unreadable; the
    metrics then keep the steps and epochs that checkpoint holds, so the card's history
    ends where its weights do.

    Raises:
        FileNotFoundError: ``metrics.json`` or every checkpoint is missing.
        ValueError: ``metrics.json`` is not JSON (or not an object), no checkpoint can
            be read, or the one read holds no DINO run (no config or teacher, a config
            or teacher that does not fit); the message names the file.
    """
    run_dir = Path(run_dir)
    ckpt_path, metrics_path = run_dir / CHECKPOINT_NAME, run_dir / METRICS_NAME
    prev = ckpt_path.with_name(ckpt_path.name + ".prev")
    for path in (ckpt_path, metrics_path):
        if not path.is_file() and not (path == ckpt_path and prev.is_file()):
            raise FileNotFoundError(f"{path} is missing: is {run_dir} a DINO run directory?")
    metrics = _read_metrics(metrics_path)
    found = load_latest_file(run_dir, stacklevel=3)
    if found is None:
        raise ValueError(
            f"no readable checkpoint in {run_dir}: {ckpt_path} and {prev} could not be loaded "
            "(the warnings say why); the run cannot be shipped"
        )
    ckpt, path = found
    if path != ckpt_path:
        warnings.warn(
            f"{ckpt_path} is missing or unreadable: shipping the checkpoint before it, {path} "
            f"(step {ckpt.get('step') if isinstance(ckpt, dict) else '?'})",
            stacklevel=2,
        )
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("teacher"), dict) or (
        "config" not in ckpt
    ):
        raise ValueError(f"{path} is not a DINO checkpoint: it holds no 'config' and 'teacher'")
    try:
        config = DINOConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: its config is not a DINOConfig ({err})") from None
    backbone = build_run_backbone(config)
    prefix = "backbone."
    state = {k[len(prefix) :]: v for k, v in ckpt["teacher"].items() if k.startswith(prefix)}
    load_strict(backbone, state, source=f"the teacher backbone in {path}")
    if path != ckpt_path and isinstance(ckpt.get("history"), dict):
        metrics = {**metrics, **ckpt["history"]}
    return backbone.eval(), config, metrics


def _read_metrics(path: Path) -> dict[str, Any]:
    """``metrics.json`` as a dict; a ValueError naming it when it is not JSON's object."""
    try:
        metrics = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); the run cannot be shipped") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(metrics).__name__}")
    return metrics


def evaluate_backbone(
    backbone: nn.Module,
    *,
    random_init: nn.Module | None = None,
    dataset: str = "shapes",
    shortcuts: bool = False,
    n_train: int = 5000,
    n_test: int = 1000,
    resolution: int = 32,
    seed: int = 0,
    data_variant: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """k-NN top-1 (%) of ``backbone``, ``random_init`` and raw pixels on a fixed split.

    The split is ``procedural_splits(dataset, n_train, n_test, seed=seed)`` of a procedural
    dataset, ``"shapes"`` or ``"critters"`` (the chapters use seed 0); ``data_variant``
    (``CrittersConfig`` fields, as ``python -m teachkit.train dino --critters-*`` records them)
    draws the split of that critters variant. For a ViT
    (``get_last_selfattention``) the card also gets the attention Jaccard (best head,
    merged heads, and the heads' average map, also for ``random_init``) over the test
    images and their object masks.
    """
    from teachkit.attention import attention_jaccard
    from teachkit.data.datasets import procedural_splits
    from teachkit.knn import extract_features, knn_accuracy, pixel_features
    from teachkit.preprocess import imagenet_preprocess

    config = None
    if data_variant:
        from teachkit.data.critters import CrittersConfig

        config = CrittersConfig(**data_variant)
    train, test = procedural_splits(
        dataset,
        n_train,
        n_test,
        resolution=resolution,
        seed=seed,
        shortcuts=shortcuts,
        config=config,
    )

    def knn(features) -> float:
        bank, queries = features(train.images), features(test.images)
        return round(float(knn_accuracy(bank, train.labels, queries, test.labels)["top1"]), 2)

    def of(model: nn.Module):
        return lambda x: extract_features(model, x, progress=False)

    results = {
        "knn_top1_percent": knn(of(backbone)),
        "pixels_knn_top1_percent": knn(pixel_features),
    }
    if random_init is not None:
        results["random_init_knn_top1_percent"] = knn(of(random_init))
    if callable(getattr(backbone, "get_last_selfattention", None)):
        inputs = imagenet_preprocess(test.images)
        scores = attention_jaccard(backbone, inputs, test.masks, progress=False)
        results["attention_jaccard_best_head"] = round(scores["best_head"], 3)
        results["attention_jaccard_merged"] = round(scores["merged"], 3)
        results["attention_jaccard_head_average"] = round(scores["head_average"], 3)
        if random_init is not None:
            scores = attention_jaccard(random_init, inputs, test.masks, progress=False)
            results["random_init_attention_jaccard_head_average"] = round(scores["head_average"], 3)
    return results


def _start_name(init: object) -> str:
    """The shipped model a run started from, as ``run_info["init"]`` records it (its
    name, or a dict whose ``"name"`` is it); ``""`` for none."""
    if isinstance(init, dict):
        return str(init.get("name") or "")
    return str(init or "")


def _subsample(rows: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, list[float]]:
    stride = max(1, len(rows) // _HISTORY_POINTS)
    picked = rows[::stride]
    out = {"step": [int(r["step"]) for r in picked]}
    for key in keys:
        if picked and key in picked[0]:
            out[key] = [round(float(r[key]), 5) for r in picked]
    return out


def _scheduled_steps(config: DINOConfig) -> int | None:
    """Steps the run's schedules span, when an epoch has a fixed length (streams)."""
    spe = config.steps_per_epoch
    return None if spe is None else config.epochs * spe


def _with_max_steps(command: str, steps: int) -> str:
    """``command`` with ``--max-steps steps``, replacing any ``--max-steps`` it had.

    >>> _with_max_steps("python -m teachkit.train dino --max-steps 5 --lr 1", 200)
    'python -m teachkit.train dino --lr 1 --max-steps 200'
    """
    words, out, skip = shlex.split(command), [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--max-steps":
            skip = True
        elif not word.startswith("--max-steps="):
            out.append(word)
    return shlex.join([*out, "--max-steps", str(steps)])


def ship_run(
    run_dir: str | Path,
    name: str,
    description: str,
    *,
    command: str | None = None,
    hardware: str | None = None,
    wall_time_s: float | None = None,
    history_only: bool = False,
    directory: Path | None = None,
    n_train: int = 5000,
    n_test: int = 1000,
) -> ModelCard:
    """Evaluate a finished run and write ``NAME.pt`` (unless ``history_only``) and its card.

    ``command``, ``hardware`` and ``wall_time_s`` default to what the run recorded in
    ``metrics.json`` (runs started before the trainer recorded them must pass them).
    A run that stopped before its schedule's end (``--max-steps``, or a copy of a run
    still in progress) is shipped as it stands, and its card says so: its command gets
    ``--max-steps N``, which reproduces it, and its data line reads "N of T scheduled
    steps".
    The results are measured on ``procedural_splits(dataset, n_train, n_test, seed=0)`` of
    the dataset the run trained on (``metrics.json`` records it; shapes for older runs).

    Raises:
        ValueError: ``name`` is not a plain file name
            (:func:`teachkit.pretrained.check_shipped_name`: nothing outside the shipped
            folder is ever written), checked before anything is evaluated; a
            ``metrics.json`` or checkpoint that cannot be read (:func:`load_run`).
    """
    check_shipped_name(name)
    backbone, config, metrics = load_run(run_dir)
    run = metrics.get("run", {})
    epochs = metrics.get("epochs", [])
    command = command or run.get("command")
    command = portable_command(command, name) if command else command
    done = len(metrics.get("steps", []))
    scheduled = _scheduled_steps(config)
    stopped = scheduled is not None and 0 < done < scheduled
    if stopped and command:  # the schedule ran on past this point: the card names the stop
        command = _with_max_steps(command, done)
    hardware = hardware or run.get("hardware")
    if wall_time_s is None and epochs:
        wall_time_s = epochs[-1].get("elapsed_s")
    missing = [
        k
        for k, v in {"command": command, "hardware": hardware, "wall_time_s": wall_time_s}.items()
        if not v
    ]
    if missing:
        raise ValueError(f"{run_dir}/metrics.json does not record {missing}; pass them")
    shortcuts = bool(run.get("shortcuts", False))
    dataset = run.get("dataset") or "shapes"
    variant = run.get("data_variant") or {}
    results = evaluate_backbone(
        backbone,
        random_init=build_run_backbone(config),
        dataset=dataset,
        shortcuts=shortcuts,
        data_variant=variant,
        n_train=n_train,
        n_test=n_test,
        resolution=config.crops.global_size,
    )
    last = metrics["steps"][-1] if metrics.get("steps") else {}
    for key in ("teacher_entropy", "batch_entropy", "kl"):
        if key in last:
            results[f"final_{key}"] = round(float(last[key]), 4)
    history = _subsample(metrics.get("steps", []), _STEP_CURVES)
    history.update(
        {f"epoch_{k}": [e.get(k) for e in epochs] for k in ("step", "knn_top1") if epochs}
    )
    flag = ", shortcuts=True" if shortcuts else ""
    if variant:
        flag += ", config=CrittersConfig(" + ", ".join(f"{k}={v}" for k, v in variant.items()) + ")"
    length = f"{done} steps"
    if stopped:
        length = f"{done} of {scheduled} scheduled steps (stopped by --max-steps)"
    data = (
        f"{dataset} stream (fresh {config.crops.global_size} px images{flag}), batch "
        f"{config.batch_size}, {length}; evaluated on "
        f"{dataset}_splits({n_train}, {n_test}, seed=0{flag})"
    )
    card = ModelCard(
        name=name,
        description=description,
        command=command,
        seed=config.seed,
        data=data,
        hardware=hardware,
        wall_time_s=round(float(wall_time_s), 1),
        results=results,
        history=history,
        created=time.strftime("%Y-%m-%d"),
        config={
            **config.to_dict(),
            "out_dir": None,
            "device": None,
            **({"max_steps": done} if stopped else {}),
        },
        data_variant=dict(variant),
        init=_start_name(run.get("init")),
    )
    if history_only:
        save_card(card, directory)
    else:
        save_shipped(backbone, card, directory)
    return card
