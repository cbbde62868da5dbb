"""The step loop of the one-go trainers (autoencoder, contrastive, supervised), resumable.

Each of those trainers is a loss on a batch; everything around it is the same: AdamW
with a one-cycle schedule, a progress bar, the non-finite-loss stop, and, when given a
folder, an atomic checkpoint every few steps from which a re-run of the same call
resumes (:mod:`teachkit.infra.checkpoint`), so a Colab disconnect loses minutes. The
resumed run continues the data stream at its step (``stream.at_step``) and the random
generator from its saved state, so it matches an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from teachkit.infra.checkpoint import load_latest, save_checkpoint
from teachkit.infra.optim import one_cycle_adamw
from teachkit.infra.run import check_finite_loss

__all__ = ["StepLosses", "run_steps"]


class StepLosses(list):
    """The loss of every step (a list of floats) and the run's wall time in seconds,
    summed over its resumed parts."""

    wall_time_s: float = 0.0


def run_steps(
    model: nn.Module,
    loss_fn: Callable[[object], torch.Tensor],
    batches: Iterable,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    trainer: str,
    generator: torch.Generator | None = None,
    out_dir: str | Path | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
) -> StepLosses:
    """Minimise ``loss_fn(batch)`` for ``steps`` batches of ``batches``.

    Args:
        model: trained in place (``train()`` during the loop, ``eval()`` after).
        loss_fn: the trainer's loss of one batch, a scalar tensor.
        batches: an endless iterable; to resume, a stream with ``at_step(step)``.
        steps: optimisation steps of the one-cycle schedule.
        trainer: the trainer's name, for the progress bar and error messages.
        generator: the trainer's own random generator (augmentations), saved and restored.
        out_dir: where ``checkpoint.pt`` is written every ``checkpoint_every`` steps and at
            the end, and resumed from; ``None``: no checkpoint.

    Raises:
        ValueError: a bad ``checkpoint_every``, a checkpoint of another run (its ``steps``
            differ), or resuming on ``batches`` that cannot start at a step.
        NonFiniteLossError: the loss became NaN or infinite (:mod:`teachkit.infra.run`).
    """
    if checkpoint_every <= 0:
        raise ValueError(
            f"checkpoint_every must be a positive number of steps, got {checkpoint_every}"
        )
    opt, sched = one_cycle_adamw(model, lr=lr, steps=steps, weight_decay=weight_decay)
    losses, start, spent = StepLosses(), 0, 0.0
    state = load_latest(out_dir) if out_dir is not None else None
    if state is not None:
        if state.get("trainer") != trainer or state.get("steps") != steps:
            raise ValueError(
                f"{out_dir} holds a checkpoint of a {state.get('trainer')} run of "
                f"{state.get('steps')} steps, not of this {trainer} run of {steps}: "
                "use another --out or the same settings"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if generator is not None:
            generator.set_state(state["generator"])
        losses.extend(state["losses"])
        start, spent = int(state["step"]), float(state["wall_time_s"])
        if start < steps:
            if not hasattr(batches, "at_step"):
                raise ValueError(
                    f"resuming the {trainer} run at step {start} needs a stream that can "
                    "start there (with at_step(step)), got " + type(batches).__name__
                )
            batches = batches.at_step(start)
    model.train()

    def save(step: int, seconds: float) -> None:
        save_checkpoint(
            {
                "trainer": trainer,
                "steps": steps,
                "step": step,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": generator.get_state() if generator is not None else None,
                "losses": list(losses),
                "wall_time_s": seconds,
            },
            Path(out_dir) / "checkpoint.pt",
        )

    t0 = time.perf_counter()
    it = iter(batches)
    for step in tqdm(range(start, steps), desc=trainer, disable=not progress,
                     initial=start, total=steps):
        loss = loss_fn(next(it))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        check_finite_loss(losses[-1], step=step, trainer=trainer, lr=lr)
        done = step + 1
        if out_dir is not None and (done % checkpoint_every == 0 or done == steps):
            save(done, spent + time.perf_counter() - t0)
    model.eval()
    losses.wall_time_s = spent + time.perf_counter() - t0
    return losses
