"""Training the tiny SAM on shapes scenes: losses, the simulated user, the loop.

Chapter 6: SAM, encoder to decoder -- section "Training a tiny SAM" (the loss, a simulated
user, the loop).

SAM is trained like a user would use it (SAM paper, Sec. 3 and App. A "Training
algorithm"). For each image of a batch and each of a few of its instances:

1. **First prompt**: with probability ``box_probability`` the instance's box, jittered
   by ~10 % of its side (std, at most ``box_noise_max`` pixels); otherwise one positive
   point drawn uniformly inside the instance's *visible* mask.
2. **SAM answers**. A single point is ambiguous, so SAM returns 3 masks and only the one
   with the lowest loss is trained (:func:`select_min_loss`): each output slot becomes
   free to specialise (part / whole / ...). A box is not ambiguous: 1 mask.
3. **Corrective clicks** (``rounds - 1`` times): a point is drawn uniformly in the
   *error region* of the current answer -- positive if it lands on a missed pixel
   (false negative), negative if it lands on a leaked one (false positive)
   (:func:`sample_error_point`); the previous low-res *logits* (not thresholded) are
   fed back as the mask prompt; SAM answers with 1 mask.
4. **Loss** of every answer: ``20 * focal + 1 * dice`` (:func:`focal_loss`,
   :func:`dice_loss`) against the instance's visible mask, plus the MSE between the
   predicted IoU and the actual IoU of each mask (:func:`iou_prediction_loss`); the IoU
   head is what ranks the 3 masks at inference time.

The image encoder runs **once per image per step**; every prompt and every round of
that image reuse its embedding, which is what makes interactive training affordable.
The whole model trains end to end (it has 0.73 M parameters).

**Ambiguity of nested shapes.** A click on a small shape drawn inside a big one is
supervised with the small shape's visible mask. The whole (big shape with the small one
in it) is an equally sensible answer, which a user might have meant; SAM's multimask
output exists for exactly this. With the default ``whole_target_probability = 0`` the
training signal for such a click is always the part, so the mIoU against visible masks
is what the model optimises; raise it (0.3-0.5) to supervise a share of those clicks
with the whole instead and watch the three slots split into part and whole
(:func:`teachkit.sam.evaluate.ambiguity_example` draws the figure).

**Data.** Scenes come from :func:`teachkit.data.shapes.make_scenes` in chunks
(:class:`~teachkit.data.scene_chunks.SceneChunks`), fresh ones as training goes;
``holdout`` classes never appear in training, so :mod:`teachkit.sam.evaluate` can measure
seen vs unseen classes.

**Checkpoints** (:mod:`teachkit.checkpoint`): model, optimiser, step, RNG states and
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
from torch import Tensor
from tqdm.auto import tqdm

from teachkit.checkpoint import capture_rng_state, restore_rng_state
from teachkit.data.scene_chunks import SceneChunks
from teachkit.data.shapes import SceneBatch
from teachkit.data.stream import mix_seed
from teachkit.profiles import pick_device, pick_precision, seed_everything
from teachkit.run import NonFiniteLossError, StepHistory, resume_run, save_run
from teachkit.sam.build import SAM_CONFIGS, build_sam_from_config
from teachkit.sam.config import FREE_TO_CHANGE, SamTrainConfig
from teachkit.sam.evaluate import eval_scenes, evaluate_sam
from teachkit.sam.geometry import mask_iou, masks_to_boxes
from teachkit.sam.losses import dice_loss, focal_loss, iou_prediction_loss, select_min_loss
from teachkit.sam.model import Sam
from teachkit.sam.prompting import jitter_boxes, sample_error_point, sample_point_in_mask

__all__ = [
    "SamHistory",
    "build_training_sam",
    "dice_loss",
    "focal_loss",
    "iou_prediction_loss",
    "jitter_boxes",
    "sample_error_point",
    "sample_point_in_mask",
    "select_min_loss",
    "train_sam",
]


# ------------------------------------------------------------------- one training step
@dataclass
class _Prompted:
    """The instances prompted in one step: which image, and the target mask."""

    image: Tensor  # P   index into the batch
    target: Tensor  # P x H x W bool
    clicked: Tensor  # P x H x W bool, where the first click may land (the visible part)


def _choose_instances(
    scenes: SceneBatch, cfg: SamTrainConfig, generator: torch.Generator
) -> _Prompted:
    """``prompts_per_image`` instances of every image (with replacement), and their targets."""
    b, k = scenes.labels.shape
    area = scenes.masks.flatten(2).sum(-1)
    ok = (area >= cfg.min_area) & (scenes.labels >= 0)
    ok = torch.where(ok.any(1, keepdim=True), ok, area > 0)  # tiny scenes: any visible one
    weight = ok.float().cpu()
    inst = torch.multinomial(weight, cfg.prompts_per_image, replacement=True, generator=generator)
    device = scenes.masks.device
    image = torch.arange(b).repeat_interleave(cfg.prompts_per_image).to(device)
    inst = inst.flatten().to(device)
    visible = scenes.masks[image, inst]
    target = visible
    if cfg.whole_target_probability > 0:
        nested = scenes.parents[:, 1] == 0
        in_pair = nested[image] & (inst <= 1)
        whole = scenes.masks[image, 0] | scenes.masks[image, 1]
        coin = torch.rand(len(image), generator=generator).to(device) < cfg.whole_target_probability
        target = torch.where((in_pair & coin).view(-1, 1, 1), whole, visible)
    return _Prompted(image, target, visible)


def _interactive_loss(
    model: Sam,
    embeddings: Tensor,
    targets: Tensor,
    cfg: SamTrainConfig,
    generator: torch.Generator,
    *,
    first_points: Tensor | None = None,
    boxes: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``cfg.rounds`` prompting rounds for P prompts; summed losses and statistics.

    Args:
        embeddings: ``P x C x g x g`` (one per prompt; shared per image by indexing).
        targets: ``P x H x W`` bool.
        first_points: ``P x 2`` positive first clicks, or ``None`` with ``boxes``.
        boxes: ``P x 4`` first box prompts (kept in every round), or ``None``.
    """
    size = tuple(targets.shape[-2:])
    p = targets.shape[0]
    rows = torch.arange(p, device=targets.device)
    coords = labels = mask_input = None
    if first_points is not None:
        coords = first_points[:, None]
        labels = torch.ones(p, 1, dtype=torch.long, device=targets.device)
    sums = {
        name: targets.new_zeros((), dtype=torch.float32)
        for name in ("loss", "focal", "dice", "iou_mse")
    }
    ious: list[Tensor] = []
    for r in range(cfg.rounds):
        multimask = r == 0 and boxes is None
        low, iou_pred = model.decode(
            embeddings,
            point_coords=coords,
            point_labels=labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask,
        )
        logits = model.postprocess_masks(low, input_size=size, original_size=size)
        t = targets.unsqueeze(1)
        focal = focal_loss(logits, t, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        dice = dice_loss(logits, t)
        mask_loss, best = select_min_loss(cfg.focal_weight * focal + cfg.dice_weight * dice)
        iou_mse = iou_prediction_loss(iou_pred, logits, targets).mean(dim=1)
        sums["loss"] = sums["loss"] + (mask_loss + cfg.iou_weight * iou_mse).sum()
        sums["focal"] = sums["focal"] + focal[rows, best].detach().sum()
        sums["dice"] = sums["dice"] + dice[rows, best].detach().sum()
        sums["iou_mse"] = sums["iou_mse"] + iou_mse.detach().sum()
        # The answer a user would see: the mask SAM itself ranks first (App. A).
        keep = iou_pred.argmax(dim=1) if multimask else torch.zeros_like(rows)
        pred = logits[rows, keep].detach() > model.mask_threshold
        ious.append(mask_iou(pred, targets))
        if r + 1 < cfg.rounds:
            xy, lab = sample_error_point(pred, targets, generator)
            coords = xy[:, None] if coords is None else torch.cat([coords, xy[:, None]], 1)
            labels = lab[:, None] if labels is None else torch.cat([labels, lab[:, None]], 1)
            mask_input = low[rows, keep].detach().unsqueeze(1)
    sums["iou_first"] = ious[0].sum()
    sums["iou_last"] = ious[-1].sum()
    return sums["loss"], sums


def _sam_loss(
    model: Sam, scenes: SceneBatch, cfg: SamTrainConfig, generator: torch.Generator
) -> tuple[Tensor, dict[str, float]]:
    """The loss of one step: encode each image once, prompt several instances each."""
    device = model.device
    prompted = _choose_instances(scenes, cfg, generator)
    embeddings = model.image_encoder(model.preprocess(scenes.images.to(device).float()))
    embeddings = embeddings[prompted.image.to(device)]
    targets = prompted.target.to(device)
    n = targets.shape[0]
    n_box = int(round(n * cfg.box_probability))
    total, stats = None, {}
    groups = []
    if n - n_box:
        pts = sample_point_in_mask(prompted.clicked[: n - n_box].to(device), generator)
        groups.append((slice(0, n - n_box), {"first_points": pts}))
    if n_box:
        boxes = masks_to_boxes(prompted.target[n - n_box :]).float().to(device)
        boxes = jitter_boxes(
            boxes,
            noise=cfg.box_noise,
            max_pixels=cfg.box_noise_max,
            size=cfg.resolution,
            generator=generator,
        )
        groups.append((slice(n - n_box, n), {"boxes": boxes}))
    for sl, prompt in groups:
        loss, sums = _interactive_loss(model, embeddings[sl], targets[sl], cfg, generator, **prompt)
        total = loss if total is None else total + loss
        for name, value in sums.items():
            stats[name] = stats.get(name, 0.0) + float(value.detach())
    per_answer = n * cfg.rounds
    stats = {
        name: v / (n if name.startswith("iou_") and name != "iou_mse" else per_answer)
        for name, v in stats.items()
    }
    return total / per_answer, stats


def learning_rate(step: int, cfg: SamTrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.min_lr`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


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
    data = SceneChunks(
        cfg.batch_size,
        chunk_size=cfg.chunk_size,
        resolution=cfg.resolution,
        seed=cfg.seed,
        classes=cfg.seen_classes if cfg.dataset == "shapes" else None,
        nest_probability=cfg.nest_probability,
        device=device,
        dataset=cfg.dataset,
    )
    monitor = None
    if cfg.eval_every:
        monitor = eval_scenes(
            cfg.eval_monitor_scenes, resolution=cfg.resolution, dataset=cfg.dataset
        )
    seen = cfg.seen_class_ids
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
                loss, stats = _sam_loss(model, scenes, cfg, generator)
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
    a warning (:func:`teachkit.run.resume_run`)."""
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
