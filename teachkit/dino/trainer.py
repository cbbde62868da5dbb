"""Training DINO: the loop of Algorithm 1, with everything a real run needs around it.

One step (DINO paper, Algorithm 1; official ``train_one_epoch``) is
:func:`teachkit.dino.step.dino_step`, which Chapter 3 checks against its twenty-line loop::

    crops = multi_crop(images)                       # 2 global + n local views
    t = teacher(crops[:2]); s = student(crops)        # one backbone pass per resolution
    loss = H(centre_sharpen(t), s) over view pairs    # teachkit.dino.loss
    loss.backward(); clip; freeze last layer (epoch 0); optimiser.step()
    teacher <- EMA(teacher, student)                  # teachkit.dino.teacher

and around it: per-step schedules (lr, weight decay, teacher momentum, teacher
temperature), mixed precision (:func:`teachkit.infra.hardware.pick_precision`), multi-crop
augmentation on the device (:class:`~teachkit.dino.batched_augment.BatchedMultiCrop`),
multi-process training under ``torchrun`` (:mod:`teachkit.infra.distributed`), atomic
checkpoints with automatic resume under the resume policy of :mod:`teachkit.infra.run`, a tqdm
bar, a per-step history, a per-epoch k-NN monitor and a collapse guard
(:mod:`teachkit.dino.monitor`).

Example::

    from teachkit.data.shapes import ShapesStream
    cfg = DINOConfig(arch="vit_nano", patch_size=4, out_dim=1024, epochs=2,
                     steps_per_epoch=50, batch_size=64, out_dir="runs/dino")
    history = train_dino(cfg, ShapesStream(64, seed=0))
    history.teacher.backbone        # the trained backbone to evaluate

**Data.** ``data`` is any iterable of uint8 (or float in [0, 1]) image batches
``(B, 3, H, W)``, or of ``(images, labels)`` tuples, or of objects with ``.images``
(:class:`teachkit.data.shapes.ShapesStream`). It may be infinite (then set
``steps_per_epoch``). A source with ``at_step(step)`` (``ShapesStream``,
:class:`ImageBatches`) restarts exactly where a resumed run left off; augmentation draws
come from a generator seeded by ``(seed, step)``, so a resumed run matches an
uninterrupted one. Under ``torchrun`` each process gets its own share of the batch
(``ImageBatches(..., rank=, world_size=)``). ``augment=`` replaces the built-in
multi-crop augmentation with any function ``(images, step) -> crops``.

**Cost.** Measured on 2 shared CPU cores (load ~3): the quick profile (ViT-nano/4,
32 px, 2 + 4 crops, batch 64, K = 1024) takes about 1.8 s per step with
``torch.set_num_threads(1)`` and 6 s with two threads fighting other processes; most
of it is the ViT, the batched augmentation is about 0.08 s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from teachkit.data.stream import mix_seed
from teachkit.dino.batched_augment import BatchedMultiCrop
from teachkit.dino.config import FREE_TO_CHANGE, DINOConfig
from teachkit.dino.head import DINOHead, MultiCropWrapper
from teachkit.dino.inputs import batches_from, check_run_inputs
from teachkit.dino.loss import DINOLoss, DINOLossOutput
from teachkit.dino.monitor import (
    knn_monitor,
    non_finite_message,
    uniform_collapse_message,
)
from teachkit.dino.schedules import (
    cosine_schedule,
    get_params_groups,
    scaled_lr,
    teacher_temp_schedule,
)
from teachkit.dino.step import _region, dino_step
from teachkit.dino.teacher import build_teacher
from teachkit.infra import distributed as dist
from teachkit.infra.checkpoint import capture_rng_state, restore_rng_state
from teachkit.infra.compile_fallback import CompiledOrEager
from teachkit.infra.hardware import BF16, FP16, FP32, Precision, pick_precision
from teachkit.infra.run import (
    NonFiniteLossError,
    StepHistory,
    check_same_run,
    recorded_run,
    resume_run,
    save_run,
    write_metrics,
)
from teachkit.models.registry import build_backbone
from teachkit.profiles import seed_everything

__all__ = [
    "Augment",
    "History",
    "RUN_SETTINGS",
    "UniformCollapseError",
    "train_dino",
]

STEP_STATS: tuple[str, ...] = ("loss", "teacher_entropy", "batch_entropy", "kl", "center_norm")
#: ``callback(kind, record)``: kind is "step" or "epoch"; return True to stop training.
Callback = Callable[[str, dict[str, float]], "bool | None"]
#: ``augment(images, step) -> crops``: the views of one batch (see :func:`train_dino`).
Augment = Callable[[Tensor, int], "list[Tensor]"]


class UniformCollapseError(RuntimeError):
    """The teacher's outputs stayed uniform for a whole epoch after the warm-up.

    Raised after the checkpoint of that epoch is written; the message names the epoch,
    the entropies and what to change (``DINOConfig.collapse_guard`` turns the check off).
    """


@dataclass
class History(StepHistory):
    """What a run recorded.

    Attributes:
        steps: one dict per step: step, epoch, loss, teacher_entropy, batch_entropy, kl,
            center_norm, lr, wd, momentum, teacher_temp (averaged over processes).
        epochs: one dict per epoch: epoch, step, mean loss, and knn_top1 / knn_top5
            when the k-NN monitor ran.
        student, teacher: the trained :class:`MultiCropWrapper` modules (not saved in
            JSON); evaluate ``teacher.backbone`` as the paper does.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    student: nn.Module | None = field(default=None, repr=False)
    teacher: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"steps": self.steps, "epochs": self.epochs}


#: The facts of ``run_info`` that make a run what it is: the data it trains on and the
#: shipped model it started from. A run resumes only with the values it recorded in
#: ``metrics.json`` (a fact either side does not record is not compared).
RUN_SETTINGS: tuple[str, ...] = ("dataset", "shortcuts", "data_variant", "init")


def _run_settings(run_info: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUN_SETTINGS` that ``run_info`` records, ``init`` as the start's name
    (it may be recorded as ``{"name": ..., "command": ...}``; ``None``: no start)."""
    settings = {name: run_info[name] for name in RUN_SETTINGS if name in run_info}
    if isinstance(settings.get("init"), dict):
        settings["init"] = settings["init"].get("name")
    return settings


def _resolve_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        return pick_precision(device)
    return {"fp32": FP32, "bf16": BF16, "fp16": FP16}[name]


def train_dino(
    config: DINOConfig,
    data: Iterable[Any],
    *,
    backbone: nn.Module | None = None,
    eval_data: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    run_info: dict[str, Any] | None = None,
    augment: Augment | None = None,
) -> History:
    """Train a DINO student and its momentum teacher; resume from ``config.out_dir``.

    Args:
        config: the run's settings (:class:`DINOConfig`).
        data: iterable of image batches (see the module docstring); each process of a
            torchrun job passes its own share.
        backbone: the student backbone (``embed_dim`` attribute, ``forward(x) -> (B, D)``);
            ``None`` builds ``config.arch``. It is trained in place.
        eval_data: ``(train_images, train_labels, test_images, test_labels)`` for the
            per-epoch weighted k-NN monitor on the teacher backbone (uint8 images).
        callbacks: ``callback(kind, record)`` after every logged step (kind "step") and
            every epoch (kind "epoch"); returning True stops training after a checkpoint.
            Under torchrun they run on every process and must decide alike.
        progress: show the tqdm bar and per-epoch lines (main process only).
        run_info: facts about the run kept in ``metrics.json`` under ``"run"`` (the
            command line stores its command, dataset and shortcuts switch there). Those
            of :data:`RUN_SETTINGS` (``dataset``, ``shortcuts``, ``data_variant``,
            ``init``) cannot change when a run resumes; one not given is kept from the
            run's ``metrics.json``.
        augment: ``augment(images, step) -> crops`` instead of the built-in multi-crop
            augmentation (:class:`~teachkit.dino.batched_augment.BatchedMultiCrop` of
            ``config.crops``, drawn from ``(seed, step)``). ``images`` is this process's
            batch ``(B, 3, H, W)`` as ``data`` yields it (uint8, or float in [0, 1]), on
            the training device; ``step`` is the global step (from 0), so crops drawn
            from it repeat exactly on resume. It returns a list of normalised float
            crops, the two global views first (``(B, 3, G, G)`` each; only these reach
            the teacher), then the local views (``(B, 3, L, L)``). Use it to try another
            augmentation, or to time the step alone on fixed crops.

    Returns:
        The :class:`History`, with the trained ``student`` and ``teacher`` attached.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the message names the step and
            the likely causes).
        ValueError: a run resumed with other :data:`RUN_SETTINGS` than it recorded (the
            message names each, with both values); a malformed config, backbone or data
            batch. What can be checked
            before the first step is: an ``out_dir`` that is a file (or under one),
            ``eval_data`` of the wrong shapes or with fewer bank images than
            ``config.knn_k``, a first batch of float images outside [0, 1].
    """
    check_run_inputs(config, eval_data)
    if not (hasattr(data, "__iter__") or hasattr(data, "__getitem__")):
        raise ValueError(f"data must be an iterable of image batches; got {type(data).__name__}")
    if not all(callable(cb) for cb in callbacks):
        raise ValueError("callbacks must be functions callback(kind, record)")
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a function (images, step) -> crops; got {augment!r}")
    run = _Run(config, data, backbone, eval_data, callbacks, progress, run_info, augment)
    return run.train()


class _Run:
    """The state of one training run; :func:`train_dino` is its public face."""

    def __init__(
        self,
        cfg: DINOConfig,
        data: Iterable[Any],
        backbone: nn.Module | None,
        eval_data: tuple[Tensor, ...] | None,
        callbacks: Sequence[Callback],
        progress: bool,
        run_info: dict[str, Any] | None = None,
        augment: Augment | None = None,
    ) -> None:
        self.cfg, self.data, self.eval_data, self.callbacks = cfg, data, eval_data, callbacks
        self.run_info = dict(run_info or {})
        # training wall time: this session's clock minus k-NN monitors, plus earlier sessions
        self._session_start, self._elapsed_before, self._monitor_s = time.perf_counter(), 0.0, 0.0
        self.world, self.rank = dist.world_size(), dist.rank()
        self.main = dist.is_main_process()
        self.progress = progress and self.main
        self.device = dist.device_for_process(cfg.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = _resolve_precision(cfg.precision, self.device)
        seed_everything(cfg.seed)  # identical initial weights on every process
        self.student, self.teacher = self._build_models(backbone)
        seed_everything(cfg.seed + self.rank)  # per-process stochastic depth
        self.student_ddp = self._wrap_distributed()
        self.student_fwd = CompiledOrEager(self.student_ddp, cfg.compile)
        self.teacher_fwd = CompiledOrEager(self.teacher, cfg.compile)
        self.loss_fn = DINOLoss(
            cfg.out_dim,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
            centering=cfg.centering,
            check_finite=False,  # no sync per step: _flush stops on a non-finite loss
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            get_params_groups(self.student),
            lr=0.0,
            fused=True if self.device.type == "cuda" else None,
        )
        # fp16 (a T4): start the loss scale at 2**8, not 2**16. Gradients before the head's
        # L2 normalisation reach ~1e2 at initialisation, so 2**16 overflows and the first
        # ~7 steps would be skipped while the scaler backs off.
        self.scaler = torch.amp.GradScaler(
            self.device.type, init_scale=2.0**8, enabled=self.precision.use_grad_scaler
        )
        self.custom_augment = augment
        self.augment = BatchedMultiCrop(cfg.crops) if augment is None else None
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self._build_schedules()
        self.history = History()
        self._collapse: str | None = None  # the message, once uniform collapse is seen

    # ---- setup ------------------------------------------------------------------------
    def _build_models(self, backbone: nn.Module | None) -> tuple[nn.Module, nn.Module]:
        cfg = self.cfg
        fresh_backbone = None
        if backbone is None:
            kw = {
                "patch_size": cfg.patch_size,
                "img_size": cfg.crops.global_size,
                "conv_stem": cfg.conv_stem,
            }
            backbone = build_backbone(cfg.arch, drop_path_rate=cfg.drop_path_rate, **kw)
            fresh_backbone = build_backbone(cfg.arch, drop_path_rate=0.0, **kw)
        embed_dim = getattr(backbone, "embed_dim", None)
        if not isinstance(embed_dim, int):
            raise ValueError(
                f"the backbone ({type(backbone).__name__}) needs an integer "
                "attribute embed_dim, the size D of its (B, D) features"
            )

        def head() -> DINOHead:
            return DINOHead(
                embed_dim,
                cfg.out_dim,
                use_bn=cfg.use_bn_in_head,
                norm_last_layer=cfg.norm_last_layer,
                hidden_dim=cfg.hidden_dim,
                bottleneck_dim=cfg.bottleneck_dim,
            )

        student = MultiCropWrapper(backbone, head())
        fresh = MultiCropWrapper(fresh_backbone, head()) if fresh_backbone is not None else None
        teacher = build_teacher(student, fresh=fresh)
        student, teacher = student.to(self.device), teacher.to(self.device)
        if cfg.channels_last:  # 4-d conv weights only; the views keep their layout
            student, teacher = (m.to(memory_format=torch.channels_last) for m in (student, teacher))
        return student, teacher

    def _wrap_distributed(self) -> nn.Module:
        if self.world == 1:
            return self.student
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.student.modules())
        # Batch statistics over the global batch, as the official code. SyncBatchNorm
        # needs GPUs: on CPU processes BatchNorm stays per process.
        if has_bn and self.device.type == "cuda":
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.student, device_ids=ids)

    def _steps_per_epoch(self) -> int:
        if self.cfg.steps_per_epoch is not None:
            return self.cfg.steps_per_epoch
        try:
            n = len(self.data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(
                "data has no length (an endless stream?): set config.steps_per_epoch"
            ) from None
        if n < 1:
            raise ValueError("data is empty: no batches to train on")
        return n

    def _build_schedules(self) -> None:
        cfg, spe, total = self.cfg, self.steps_per_epoch, self.total_steps
        peak = scaled_lr(cfg.lr, cfg.batch_size * self.world)
        self.lr = cosine_schedule(peak, cfg.min_lr, total, cfg.warmup_epochs * spe)
        self.wd = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total)
        self.momentum = cosine_schedule(cfg.momentum_teacher, cfg.momentum_teacher_end, total)
        self.teacher_temp = teacher_temp_schedule(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs, cfg.epochs
        )

    # ---- the loop ---------------------------------------------------------------------
    def train(self) -> History:
        cfg, spe = self.cfg, self.steps_per_epoch
        start = self._resume()
        if self.history.epochs:
            self._elapsed_before = float(self.history.epochs[-1].get("elapsed_s", 0.0))
        self._session_start = time.perf_counter()
        end = self.total_steps if cfg.max_steps is None else min(self.total_steps, cfg.max_steps)
        self._announce(start, end)
        batches = batches_from(self.data, start, batch_size=cfg.batch_size, steps_per_epoch=spe)
        pending: list[Tensor] = []
        stop = False
        with tqdm(
            total=end,
            initial=start,
            desc="DINO",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        ) as bar:
            for step in range(start, end):
                with _region("data"):
                    images = next(batches)
                out = self._step(step, images)
                with _region("stats"):
                    pending.append(
                        torch.stack([getattr(out, k).detach().float() for k in STEP_STATS])
                    )
                bar.update(1)
                done = step + 1 == end
                epoch_end = (step + 1) % spe == 0
                save = cfg.out_dir is not None and ((step + 1) % cfg.checkpoint_every == 0 or done)
                flush = (step + 1) % cfg.log_every == 0 or done or epoch_end or save
                if flush:
                    with _region("flush"):
                        stop = self._flush(pending, step, bar) or stop
                    pending = []
                if epoch_end:
                    stop = self._end_epoch(step) or stop
                if flush:  # callbacks ran: let every process agree
                    stop = self._agree(stop)
                if cfg.out_dir is not None and (save or stop):
                    self._save(step + 1)
                if stop:
                    break
        self._write_metrics()
        self.history.student, self.history.teacher = self.student, self.teacher
        if self._collapse is not None:
            raise UniformCollapseError(self._collapse)
        return self.history

    def _step(self, step: int, images: Tensor) -> DINOLossOutput:
        cfg = self.cfg
        epoch = step // self.steps_per_epoch
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = float(self.lr[step])
            if i == 0:  # only the first group is decayed
                group["weight_decay"] = float(self.wd[step])
        return dino_step(
            self.student,
            self.teacher,
            self.loss_fn,
            self.optimizer,
            self._augment(images, step),
            teacher_temp=float(self.teacher_temp[epoch]),
            momentum=float(self.momentum[step]),
            clip_grad=cfg.clip_grad,
            epoch=epoch,
            freeze_last_layer=cfg.freeze_last_layer,
            scaler=self.scaler,
            autocast=lambda: self.precision.autocast(self.device),
            student_forward=self.student_fwd,
            teacher_forward=self.teacher_fwd,
        )

    def _augment(self, images: Tensor, step: int) -> list[Tensor]:
        """Crops of this process's images; draws for the global batch from (seed, step)."""
        images = images.to(self.device, non_blocking=True)
        if self.custom_augment is not None:
            with _region("augment"):
                crops = self.custom_augment(images, step)
            if not isinstance(crops, (list, tuple)) or len(crops) < 2:
                raise ValueError(
                    "augment(images, step) must return a list of crops, the two global "
                    f"views first; got {type(crops).__name__}"
                    + (f" of {len(crops)}" if isinstance(crops, (list, tuple)) else "")
                )
            return list(crops)
        b = images.shape[0]
        with _region("augment_draw"):  # on the host, from (seed, step)
            g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step))
            params = self.augment.sample_params(
                b * self.world, generator=g, image_size=tuple(images.shape[-2:])
            )
            if self.world > 1:  # this process's share of the global batch's draws
                params = [p.slice(self.rank * b, (self.rank + 1) * b) for p in params]
        with _region("augment"):
            return self.augment(images, params=params)

    # ---- logging, monitoring, stopping --------------------------------------------------
    def _flush(self, pending: list[Tensor], last_step: int, bar: tqdm) -> bool:
        """Read the pending steps' metrics back (one sync); check them; run callbacks."""
        rows = dist.all_reduce_mean(torch.stack(pending)).cpu().tolist()
        stop = False
        for i, row in enumerate(rows):
            s = last_step - len(rows) + 1 + i
            record = {
                "step": s,
                "epoch": s // self.steps_per_epoch,
                **dict(zip(STEP_STATS, row, strict=True)),
                "lr": float(self.lr[s]),
                "wd": float(self.wd[s]),
                "momentum": float(self.momentum[s]),
                "teacher_temp": float(self.teacher_temp[s // self.steps_per_epoch]),
            }
            if not math.isfinite(record["loss"]):
                raise NonFiniteLossError(non_finite_message(record, self.cfg, self.precision.name))
            self.history.steps.append(record)
            stop = self._callback("step", record) or stop
        last = self.history.steps[-1]
        bar.set_postfix(
            loss=f"{last['loss']:.3f}",
            H_t=f"{last['teacher_entropy']:.2f}",
            H_batch=f"{last['batch_entropy']:.2f}",
            lr=f"{last['lr']:.1e}",
        )
        return stop

    def _callback(self, kind: str, record: dict[str, float]) -> bool:
        return any([bool(cb(kind, record)) for cb in self.callbacks])

    def _agree(self, stop: bool) -> bool:
        """Every process stops when one wants to (a no-op in one process)."""
        if self.world == 1:
            return stop
        flag = torch.tensor([float(stop)], device=self.device)
        return bool(dist.all_reduce_mean(flag).item() > 0)

    def _end_epoch(self, step: int) -> bool:
        epoch = step // self.steps_per_epoch
        losses = [r["loss"] for r in self.history.steps if r["epoch"] == epoch]
        record: dict[str, float] = {
            "epoch": epoch,
            "step": step + 1,
            "loss": float(np.mean(losses)) if losses else math.nan,
            "elapsed_s": round(self._training_seconds(), 1),
        }
        last_epoch = step + 1 == self.total_steps
        if (
            self.eval_data is not None
            and self.main
            and ((epoch + 1) % self.cfg.knn_every == 0 or last_epoch)
        ):
            monitor_start = time.perf_counter()
            record.update(
                knn_monitor(
                    self.teacher.backbone,
                    self.eval_data,
                    crops=self.cfg.crops,
                    k=self.cfg.knn_k,
                    device=self.device,
                    precision=self.precision,
                )
            )
            self._monitor_s += time.perf_counter() - monitor_start
        self.history.epochs.append(record)
        self._collapse = uniform_collapse_message(self.history.steps, epoch, self.cfg)
        if self.progress:
            knn = f", k-NN top-1 {record['knn_top1']:.1f} %" if "knn_top1" in record else ""
            last = self.history.steps[-1]
            tqdm.write(
                f"epoch {epoch}: loss {record['loss']:.3f} (collapse: ln K = "
                f"{math.log(self.cfg.out_dim):.2f}), teacher entropy "
                f"{last['teacher_entropy']:.2f}, batch entropy "
                f"{last['batch_entropy']:.2f}{knn}"
            )
        return self._callback("epoch", record) or self._collapse is not None

    def _training_seconds(self) -> float:
        """Wall time spent training, over resumed sessions, k-NN monitors excluded."""
        return self._elapsed_before + time.perf_counter() - self._session_start - self._monitor_s

    def _announce(self, start: int, end: int) -> None:
        if not self.progress:
            return
        cfg, c = self.cfg, self.cfg.crops
        n_params = sum(p.numel() for p in self.student.backbone.parameters()) / 1e6
        resumed = f" (resumed at step {start})" if start else ""
        tqdm.write(
            f"DINO: {type(self.student.backbone).__name__} {n_params:.2f} M params | "
            f"{self.device} {self.precision.name} | views 2 x {c.global_size} px + "
            f"{c.local_crops_number} x {c.local_size} px | K = {cfg.out_dim} | batch "
            f"{cfg.batch_size} x {self.world} | steps {start} -> {end} of "
            f"{self.total_steps}{resumed}\n"
            f"A fully collapsed model (uniform teacher) scores loss = ln K = "
            f"{math.log(cfg.out_dim):.2f}; learning shows as teacher entropy falling "
            f"while batch entropy stays high."
        )

    # ---- checkpoints ------------------------------------------------------------------
    def _save(self, next_step: int) -> None:
        rng = capture_rng_state()
        rngs = [rng]
        if self.world > 1:
            rngs = [None] * self.world
            torch.distributed.all_gather_object(rngs, rng)
        if not self.main:
            return
        state = {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "dino_loss": self.loss_fn.state_dict(),
            "step": next_step,
            "epoch": next_step // self.steps_per_epoch,
            "config": self.cfg.to_dict(),
            "rng": rngs,
            "history": self.history.to_dict(),
        }
        save_run(self.cfg.out_dir, state, self._metrics())

    def _metrics(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "run": self.run_info, **self.history.to_dict()}

    def _write_metrics(self) -> None:
        if self.main and self.cfg.out_dir is not None:
            write_metrics(self.cfg.out_dir, self._metrics())

    def _resume(self) -> int:
        """Load the latest checkpoint of out_dir (if any); the step to continue from.
        Changed settings other than :data:`~teachkit.dino.config.FREE_TO_CHANGE` are
        named in a warning (:func:`teachkit.infra.run.resume_run`); a changed
        :data:`RUN_SETTINGS` fact is an error, and one this session does not give is
        kept from ``metrics.json``."""
        ckpt = resume_run(
            self.cfg.out_dir, self.cfg.to_dict(), free_to_change=FREE_TO_CHANGE, stacklevel=4
        )
        if ckpt is None:
            return 0
        saved = recorded_run(self.cfg.out_dir)
        check_same_run(
            self.cfg.out_dir, _run_settings(saved), _run_settings(self.run_info), RUN_SETTINGS
        )
        for name in RUN_SETTINGS:  # what this session does not say, the run recorded
            if name in saved and name not in self.run_info:
                self.run_info[name] = saved[name]
        try:
            self.student.load_state_dict(ckpt["student"])
            self.teacher.load_state_dict(ckpt["teacher"])
        except RuntimeError as err:
            raise ValueError(
                f"the checkpoint in {self.cfg.out_dir} was written for another "
                f"model; use a new out_dir. ({err})"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.loss_fn.load_state_dict(ckpt["dino_loss"])
        rngs = ckpt["rng"]
        restore_rng_state(rngs[self.rank] if len(rngs) == self.world else rngs[0])
        self.history = History(steps=ckpt["history"]["steps"], epochs=ckpt["history"]["epochs"])
        return int(ckpt["step"])
