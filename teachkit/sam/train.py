"""Training the tiny SAM on shapes or critters scenes: the loop, checkpoints and resuming.

Chapter 6: SAM, encoder to decoder -- section "Training a tiny SAM" (the loop).

One step's loss -- the simulated user who clicks, the three masks of an ambiguous click,
the loss of every answer -- is :mod:`teachkit.sam.interactive_loss`. The image encoder
runs once per image per step and the whole model trains end to end (it has 0.73 M
parameters).

**Data.** Scenes come from :func:`teachkit.data.shapes.make_scenes` in chunks
(:class:`~teachkit.data.scene_chunks.SceneChunks`), fresh ones as training goes;
``holdout`` classes never appear in training, so :mod:`teachkit.sam.evaluate` can measure
seen vs unseen classes.

**Checkpoints** (:mod:`teachkit.infra.checkpoint`): model, optimiser, step, RNG states and
history go atomically to ``out_dir/checkpoint.pt`` every ``checkpoint_every`` steps; a
run restarted with the same ``out_dir`` resumes and, since data and prompts are drawn
from ``(seed, step)``, matches an uninterrupted run.

**Cost and results.** The defaults are the shipped ``sam_tiny_shapes`` run: 5,000 steps
of 4 images x 4 prompts x 3 rounds at 128 px, about 0.6 s of CPU per step; it took 48 min
on one core of a 2-core AMD EPYC shared with another job. On 200 held-out scenes it
reaches mIoU 0.60 with one point (0.67 for the best of its 3 masks), 0.69 with 3 points
and 0.70 with a box, and the same on the three classes it never saw. (The first shipped
run, 2,500 steps, reached 0.57 / 0.65 / 0.66 / 0.68.) That is below what the SAM paper's
models reach. The monitor flattened as the cosine schedule ran out (1-point mIoU 0.591 at
steps 4,500 and 5,000 on 64 scenes): a longer schedule or a larger model, on a GPU, is the
way up.

Command line (with the ``unet`` baseline of :mod:`teachkit.sam.unet`)::

    OMP_NUM_THREADS=1 python -m teachkit.train sam --steps 5000 --batch-size 4 \\
        --resolution 128 --holdout star,heart,arrow --out runs/sam --ship sam_tiny_shapes

In Python (every setting, with what to try, is a field of
:class:`~teachkit.sam.config.SamTrainConfig`)::

    history = train_sam(SamTrainConfig(steps=5000, out_dir="runs/sam"))
    history.model        # the trained Sam
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from teachkit.data.scene_chunks import SceneChunks
from teachkit.data.stream import mix_seed
from teachkit.infra.checkpoint import capture_rng_state, restore_rng_state
from teachkit.infra.hardware import pick_device, pick_precision
from teachkit.infra.run import NonFiniteLossError, StepHistory, resume_run, save_run
from teachkit.profiles import seed_everything
from teachkit.sam.build import build_sam_from_config
from teachkit.sam.config import FREE_TO_CHANGE, SamTrainConfig
from teachkit.sam.evaluate import eval_scenes, evaluate_sam
from teachkit.sam.interactive_loss import step_loss
from teachkit.sam.model import Sam
from teachkit.sam.sizes import SAM_CONFIGS

__all__ = ["SamHistory", "build_training_sam", "train_sam", "training_scenes"]


def learning_rate(step: int, cfg: SamTrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.min_lr`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def training_scenes(cfg: SamTrainConfig, device: torch.device | str = "cpu") -> SceneChunks:
    """The run's training scenes by step: ``cfg.batch_size`` fresh scenes of its dataset
    and seen classes each step, a pure function of ``(cfg.seed, step)``."""
    return SceneChunks(
        cfg.batch_size,
        chunk_size=cfg.chunk_size,
        resolution=cfg.resolution,
        seed=cfg.seed,
        classes=cfg.scene_classes,
        nest_probability=cfg.nest_probability,
        device=device,
        dataset=cfg.dataset,
    )


# ------------------------------------------------------------------------- the loop
@dataclass
class SamHistory(StepHistory):
    """What a run recorded (``history.column("loss")``: one quantity over the steps).

    Attributes:
        steps: one dict per step: step, lr, loss, focal, dice, iou_mse, iou_first (IoU of
            the first answer), iou_last (after the corrective clicks), seconds.
        evals: one dict per monitor evaluation: step and the mIoU summary.
        wall_time_s: training time summed over all sessions of the run.
        model: the trained :class:`Sam` (not saved in JSON).
    """

    evals: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    model: Sam | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "evals": self.evals, "wall_time_s": self.wall_time_s}


def build_training_sam(cfg: SamTrainConfig) -> Sam:
    """A fresh ``cfg.model`` SAM with ``img_size = cfg.resolution``, in train mode; with
    ``cfg.init``, the shipped weights of that name loaded strictly (fine-tuning)."""
    sam_cfg = dataclasses.replace(SAM_CONFIGS[cfg.model], img_size=cfg.resolution)
    model = build_sam_from_config(sam_cfg)
    if cfg.init is not None:
        from teachkit.pretrained import load_shipped

        load_shipped(cfg.init, model)
    return model.train()


def train_sam(
    config: SamTrainConfig, *, model: Sam | None = None, progress: bool = True
) -> SamHistory:
    """Train SAM with simulated interactive prompts; resume from ``config.out_dir``.

    Args:
        config: the run's settings.
        model: the SAM to train in place (its ``img_size`` must equal
            ``config.resolution``); ``None`` builds :func:`build_training_sam`.
        progress: show a tqdm bar and the monitor's lines.

    Returns:
        The :class:`SamHistory` with the trained model attached (in eval mode).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (a ``FloatingPointError``).
    """
    cfg = config
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = (model or build_training_sam(cfg)).to(device).train()
    if model.img_size != cfg.resolution:
        raise ValueError(f"model img_size {model.img_size} != resolution {cfg.resolution}")
    precision = pick_precision(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_grad_scaler)
    history = SamHistory()
    start = _resume(cfg, model, optimizer, scaler, history)
    end = cfg.steps if cfg.max_steps is None else min(cfg.steps, cfg.max_steps)
    data = training_scenes(cfg, device)
    monitor = None
    if cfg.eval_every:
        monitor = eval_scenes(
            cfg.eval_monitor_scenes, resolution=cfg.resolution, dataset=cfg.dataset
        )
    seen = cfg.seen_class_ids
    recipe = cfg.recipe  # what the step's loss reads (teachkit.sam.interactive_loss)
    session_start = time.perf_counter()
    elapsed0 = history.wall_time_s
    if progress:
        n = sum(p.numel() for p in model.parameters()) / 1e6
        tqdm.write(
            f"SAM training: {cfg.model} {n:.2f} M params, {cfg.resolution} px, {device} "
            f"{precision.name}, batch {cfg.batch_size} x {cfg.prompts_per_image} prompts x "
            f"{cfg.rounds} rounds, steps {start} -> {end} of {cfg.steps}, holdout "
            f"{list(cfg.holdout)}"
        )
    with tqdm(
        total=end, initial=start, desc="SAM", unit="step", disable=not progress, dynamic_ncols=True
    ) as bar:
        for step in range(start, end):
            t0 = time.perf_counter()
            lr = learning_rate(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator().manual_seed(mix_seed(cfg.seed, step, 1))
            scenes = data.batch(step)
            with precision.autocast(device):
                loss, stats = step_loss(model, scenes, recipe, generator)
            if not math.isfinite(stats["loss"]):
                raise NonFiniteLossError(
                    f"SAM loss is {stats['loss']} at step {step} (lr {lr:.2e}); lower --lr or "
                    f"raise --warmup-steps. The last good checkpoint is in {cfg.out_dir}."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            history.steps.append(
                {"step": step, "lr": lr, **stats, "seconds": time.perf_counter() - t0}
            )
            bar.update(1)
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}",
                iou=f"{stats['iou_first']:.2f}",
                iou_last=f"{stats['iou_last']:.2f}",
            )
            done = step + 1 == end
            if monitor is not None and ((step + 1) % cfg.eval_every == 0 or done):
                summary = evaluate_sam(model, monitor, seen_classes=seen).summary()
                history.evals.append({"step": step + 1, **summary})
                model.train()
                if progress:
                    tqdm.write(_monitor_line(step + 1, summary))
            history.wall_time_s = elapsed0 + time.perf_counter() - session_start
            if cfg.out_dir is not None and ((step + 1) % cfg.checkpoint_every == 0 or done):
                _save(cfg, model, optimizer, scaler, history, step + 1)
    history.model = model.eval()
    return history


# ------------------------------------------------------------- monitor, save, resume
def _monitor_line(step: int, s: dict[str, float]) -> str:
    parts = []
    for key in ("miou_1point", "miou_3points", "miou_box"):
        if key in s:
            seen, unseen = s.get(f"{key}_seen", s[key]), s.get(f"{key}_unseen", float("nan"))
            parts.append(f"{key[5:]} {seen:.3f} seen / {unseen:.3f} unseen")
    return f"step {step} mIoU: " + " | ".join(parts)


def _save(cfg, model, optimizer, scaler, history: SamHistory, next_step: int) -> None:
    """Write the run's checkpoint and metrics.json into ``cfg.out_dir``."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": next_step,
        "config": cfg.to_dict(),
        "rng": capture_rng_state(),
        "history": history.to_dict(),
    }
    save_run(cfg.out_dir, state, {"config": cfg.to_dict(), **history.to_dict()})


def _resume(cfg, model, optimizer, scaler, history: SamHistory) -> int:
    """Load ``out_dir``'s latest checkpoint into the run; the step to continue from.

    Changed settings other than :data:`~teachkit.sam.config.FREE_TO_CHANGE` are named in
    a warning (:func:`teachkit.infra.run.resume_run`)."""
    ckpt = resume_run(cfg.out_dir, cfg.to_dict(), free_to_change=FREE_TO_CHANGE, stacklevel=3)
    if ckpt is None:
        return 0
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    saved_history = ckpt["history"]
    history.steps, history.evals = saved_history["steps"], saved_history["evals"]
    history.wall_time_s = float(saved_history["wall_time_s"])
    return int(ckpt["step"])
