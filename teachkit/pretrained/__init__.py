"""Small checkpoints shipped with teachkit, each beside its model card.

"Pretrained first": a two-minute CPU run is too short to show what a method learns,
so the quick profile loads checkpoints that ``python -m teachkit.train`` trained for
longer, and each notebook still runs a short live training. A model card
(``NAME.json``, rendered as ``NAME.md``) records the exact command, seed, data,
hardware, wall time, the measured results and the metric history. Some cards ship
without weights (``save_card``): the ablation runs of Chapter 3, whose curves are the
lesson.

Weights are stored in float16 to keep the files small (< 10 MB each) and loaded back
into the model's dtype by the strict loader, :func:`teachkit.infra.weights.load_strict`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from teachkit.infra.run import portable_command, write_metrics
from teachkit.infra.weights import load_strict, read_state_dict

__all__ = ["ModelCard", "SHIPPED_DIR", "available", "cards", "check_shipped_name", "finish_run",
           "load_card", "load_shipped", "load_or_train", "save_card", "save_shipped"]

SHIPPED_DIR = Path(__file__).parent

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class ModelCard:
    """What a shipped checkpoint is and how it was made.

    Attributes:
        name: the file stem (``NAME.pt``).
        description: one sentence.
        command: the exact command that trained it.
        seed: the training seed.
        data: what it trained on.
        hardware: where it trained (CPU model and cores, or GPU name).
        wall_time_s: training time in seconds.
        results: measured results, e.g. ``{"knn_top1": 71.3}``, with units in the key.
        history: metric curves (lists), subsampled.
        created: date of training (YYYY-MM-DD).
        config: the training configuration (e.g. ``DINOConfig.to_dict()``), enough to
            rebuild the model.
        data_variant: for a model trained on a critters variant, its ``CrittersConfig``
            fields (``{}``: the dataset's defaults); the results are measured on it.
        init: the shipped model whose weights training started from (fine-tuning or a
            second stage on other data; its own card tells how it was made), or ``""``
            for a run from a random initialisation. ``command`` and ``wall_time_s`` are
            this stage's.
    """

    name: str
    description: str
    command: str
    seed: int
    data: str
    hardware: str
    wall_time_s: float
    results: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    created: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    data_variant: dict[str, Any] = field(default_factory=dict)
    init: str = ""

    def summary(self) -> str:
        """A few lines for a notebook: what was loaded and how it was trained."""
        res = ", ".join(f"{k} = {v:g}" for k, v in self.results.items())
        return (
            f"{self.name}: {self.description}\n"
            f"  trained by: {self.command}\n"
            f"  on {self.hardware}, {self.wall_time_s / 60:.1f} min, seed {self.seed}"
            + (f"\n  measured: {res}" if res else "")
        )

    def to_markdown(self) -> str:
        rows = "\n".join(f"| {k} | {v:g} |" for k, v in self.results.items())
        return (
            f"# Model card: {self.name}\n\n{self.description}\n\n"
            f"- **Command**: `{self.command}`\n"
            + (f"- **Started from**: `{self.init}` (its card tells how it was made)\n"
               if self.init else "")
            + f"- **Seed**: {self.seed}\n"
            f"- **Data**: {self.data}\n- **Hardware**: {self.hardware}\n"
            f"- **Wall time**: {self.wall_time_s:.0f} s\n- **Date**: {self.created}\n\n"
            f"## Measured results\n\n| metric | value |\n| --- | --- |\n{rows}\n\n"
            "The metric history is in the JSON file beside this one.\n"
        )


def available() -> list[str]:
    """Names of the shipped checkpoints (weights and card)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.pt"))


def cards() -> list[str]:
    """Names of all shipped model cards, with or without weights."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))


def check_shipped_name(name: object, what: str = "checkpoint name") -> str:
    """``name`` if it can be the file stem of a shipped checkpoint, else a ValueError
    that calls it ``what`` (a command line passes its flag, ``"--ship"``).

    A name becomes ``NAME.pt``, ``NAME.json`` and ``NAME.md`` in the shipped folder, so
    it must be a plain name: letters, digits, ``_``, ``.`` and ``-`` only, not starting
    with ``.``. A path (``../../x``, ``a/b``), an empty name or a hidden one would write
    outside the folder, or where no one looks.
    """
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name.startswith("."):
        raise ValueError(
            f"{what} {name!r} must be a plain file name: letters, digits, '_', '.' "
            "and '-' only, not starting with '.' (no '/', no '..', not empty), e.g. "
            "'dino_vit_nano_critters'"
        )
    return name


def _path(name: str, suffix: str) -> Path:
    if name not in available():
        raise ValueError(f"no shipped checkpoint {name!r}; available: {available()}")
    return SHIPPED_DIR / f"{name}{suffix}"


def load_card(name: str) -> ModelCard:
    """The model card of a shipped checkpoint or of a weightless run (:func:`cards`)."""
    if name not in cards():
        raise ValueError(f"no shipped model card {name!r}; available: {cards()}")
    return ModelCard(**json.loads((SHIPPED_DIR / f"{name}.json").read_text()))


def load_shipped(name: str, model: nn.Module) -> ModelCard:
    """Load shipped weights into ``model`` strictly and return its card.

    Every key must match in name and shape (:func:`teachkit.infra.weights.load_strict`); the
    float16 weights are cast to the model's dtypes, and ``model`` is left in eval mode.

    Raises:
        ValueError: no checkpoint ``name`` is shipped, or it does not fit ``model`` (the
            message lists the missing and unexpected keys and the shape mismatches).
    """
    state = read_state_dict(_path(name, ".pt"), prefixes=())
    load_strict(model, state, source=f"checkpoint {name!r}")
    model.eval()
    return load_card(name)


def save_shipped(model: nn.Module, card: ModelCard, directory: Path | None = None) -> Path:
    """Write ``NAME.pt`` (float tensors as float16), ``NAME.json`` and ``NAME.md``.

    Raises:
        ValueError: ``card.name`` is not a plain name (:func:`check_shipped_name`);
            nothing is written.
    """
    check_shipped_name(card.name)
    directory = Path(directory or SHIPPED_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if v.is_floating_point() else v).clone()
        for k, v in model.state_dict().items()
    }
    path = directory / f"{card.name}.pt"
    torch.save(state, path)
    save_card(card, directory)
    return path


def save_card(card: ModelCard, directory: Path | None = None) -> Path:
    """Write ``NAME.json`` and ``NAME.md`` only: a run shipped for its metric history.

    Raises:
        ValueError: ``card.name`` is not a plain name (:func:`check_shipped_name`).
    """
    check_shipped_name(card.name)
    directory = Path(directory or SHIPPED_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{card.name}.json").write_text(json.dumps(asdict(card), indent=1))
    (directory / f"{card.name}.md").write_text(card.to_markdown())
    return directory / f"{card.name}.json"


def finish_run(
    out_dir: str | Path,
    model: nn.Module,
    card: ModelCard,
    metrics: dict[str, Any],
    *,
    method: str,
    ship: bool,
) -> ModelCard:
    """The end of every training command that trains in one go (``sam``, ``unet``,
    ``autoencoder``, ``contrastive``, ``supervised``; DINO runs are shipped from their
    folder by ``ship``, which measures them first).

    Writes ``model.pt`` and ``metrics.json`` into ``out_dir``; with ``ship``, also the
    fp16 weights and the card into :data:`SHIPPED_DIR`, the card's command naming
    ``runs/NAME`` instead of this machine's folder (:func:`~teachkit.infra.run.portable_command`).
    Prints the card's summary.

    ``metrics.json`` has one schema: ``{"method": method, "card": {...}, **metrics}``.

    Returns:
        The card as written.
    """
    out_dir = Path(out_dir)
    if ship:
        card = replace(card, command=portable_command(card.command, card.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    write_metrics(out_dir, {"method": method, "card": asdict(card), **metrics})
    if ship:
        save_shipped(model.cpu(), card)
    print(card.summary())
    return card


def load_or_train(
    name: str,
    model: nn.Module,
    *,
    train: Callable[[nn.Module], Any],
    use_shipped: bool = True,
) -> tuple[nn.Module, ModelCard]:
    """The shipped checkpoint if there is one (and ``use_shipped``), else ``train(model)``.

    Returns:
        The model (in eval mode) and its card; for a model trained here the card
        records this run's wall time.
    """
    if use_shipped and name in available():
        return model, load_shipped(name, model)
    start = time.perf_counter()
    train(model)
    model.eval()
    card = ModelCard(
        name=name, description="trained in this session", command="load_or_train(...)",
        seed=torch.initial_seed(), data="see notebook",
        hardware=str(next(model.parameters()).device),
        wall_time_s=time.perf_counter() - start, created=time.strftime("%Y-%m-%d"),
    )
    return model, card
