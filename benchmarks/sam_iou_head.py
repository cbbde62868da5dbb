"""Can the tiny SAM's IoU head be trusted, and does more training fix it? (issue 24)

Measures, on held-out shapes scenes (``eval_scenes``, one click at every instance's
centre, the 3 masks of each), the IoU head's calibration
(:meth:`teachkit.sam.evaluate.SamEvaluation.calibration`: correlation and mean absolute
error between predicted and true IoU) and the masks' uncertain rim: the pixels whose
logit lies between -1 and +1, which the stability score counts, per pixel of the mask's
outline. Then, with ``--head-steps N``, it retrains **only the IoU head** for N steps of
the course's recipe (:func:`teachkit.sam.interactive_loss.step_loss` on fresh training
scenes, everything else frozen) and measures again: if the head were merely
under-trained, its correlation would rise::

    OMP_NUM_THREADS=1 python benchmarks/sam_iou_head.py --head-steps 2000
    OMP_NUM_THREADS=1 python benchmarks/sam_iou_head.py --checkpoint RUN/checkpoint.pt
    python benchmarks/sam_iou_head.py --tiny          # smoke test, seconds

``--checkpoint`` measures a training run's ``checkpoint.pt`` (or ``model.pt``) instead of
the shipped ``sam_tiny_shapes``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_timing import write_json

from teachkit.data.stream import mix_seed
from teachkit.infra.checkpoint import load_checkpoint
from teachkit.infra.hardware import hardware_name
from teachkit.pretrained import load_shipped
from teachkit.sam import build_sam
from teachkit.sam.config import SamTrainConfig
from teachkit.sam.evaluate import eval_scenes, evaluate_sam, instance_queries
from teachkit.sam.geometry import mask_center, mask_iou
from teachkit.sam.interactive_loss import step_loss
from teachkit.sam.model import Sam
from teachkit.sam.train import training_scenes

HEAD = "mask_decoder.iou_prediction_head."


@torch.no_grad()
def rim_width(model: Sam, scenes, min_true_iou: float = 0.88) -> dict[str, float]:
    """Mean width in pixels of the uncertain rim (``-1 < logit <= 1``) of the good masks:
    rim pixels over outline pixels, for the first-click masks with a true IoU of at least
    ``min_true_iou``."""
    scene, inst = instance_queries(scenes)
    size = tuple(scenes.images.shape[-2:])
    widths = []
    for s in scene.unique().tolist():
        gt = scenes.masks[s, inst[scene == s]]
        emb = model.image_encoder(model.preprocess(scenes.images[s : s + 1].float()))
        coords = torch.stack([mask_center(m) for m in gt])[:, None]
        low, _ = model.decode(
            emb.expand(len(gt), -1, -1, -1),
            point_coords=coords,
            point_labels=torch.ones(len(gt), 1, dtype=torch.long),
            multimask_output=True,
        )
        logits = model.postprocess_masks(low, input_size=size, original_size=size)
        masks = logits > 0
        good = mask_iou(masks, gt[:, None]) >= min_true_iou
        rim = (logits > -1) & (logits <= 1)
        inside = F.max_pool2d((~masks).float().flatten(0, 1)[:, None], 3, 1, 1)[:, 0]
        outline = (masks.flatten(0, 1) & (inside > 0)).view_as(masks)
        for r, o in zip(rim[good], outline[good], strict=True):
            widths.append(float(r.sum()) / max(1.0, float(o.sum())))
    return {
        "good_masks": float(len(widths)),
        "rim_width_px": sum(widths) / max(1, len(widths)),
    }


def measure(model: Sam, scenes) -> dict[str, float]:
    model.eval()
    result = evaluate_sam(model, scenes)
    cal = result.calibration()
    good = result.point_ious.flatten() >= 0.88
    stab = result.point_stability.flatten()
    cal["stability_good_median"] = float(stab[good].median()) if bool(good.any()) else math.nan
    cal["stability_max"] = float(stab.max())
    cal.update(rim_width(model, scenes))
    return {k: round(v, 4) for k, v in cal.items()}


def retrain_head(model: Sam, steps: int, lr: float, seed: int = 1) -> list[float]:
    """``steps`` steps of the course's recipe that update only the IoU head (AdamW, cosine
    from ``lr``); the IoU MSE of each step."""
    cfg = SamTrainConfig(steps=max(1, steps), seed=seed, resolution=model.img_size)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(HEAD)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    data = training_scenes(cfg)
    model.train()
    mse = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        generator = torch.Generator().manual_seed(mix_seed(cfg.seed, step, 1))
        loss, stats = step_loss(model, data.batch(step), cfg.recipe, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mse.append(stats["iou_mse"])
        if (step + 1) % 200 == 0:
            print(f"  head step {step + 1}: IoU MSE {sum(mse[-200:]) / 200:.4f}", flush=True)
    for p in model.parameters():
        p.requires_grad = True
    return mse


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a run's checkpoint.pt or model.pt")
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes (100)")
    parser.add_argument("--head-steps", type=int, default=0, help="retrain only the head")
    parser.add_argument("--lr", type=float, default=3e-3, help="the head's learning rate")
    parser.add_argument("--tiny", action="store_true", help="4 scenes, 4 head steps")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.tiny:
        args.scenes, args.head_steps = 4, min(args.head_steps, 4) or 4
    model = build_sam("vit_tiny_shapes")
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        model.load_state_dict(state.get("model", state))
        source = args.checkpoint
    else:
        load_shipped("sam_tiny_shapes", model)
        source = "sam_tiny_shapes"
    scenes = eval_scenes(args.scenes, resolution=model.img_size)
    result = {"model": source, "scenes": args.scenes, "before": measure(model, scenes)}
    print(f"{source}: {result['before']}", flush=True)
    if args.head_steps:
        start = time.perf_counter()
        mse = retrain_head(model, args.head_steps, args.lr)
        result["head_steps"] = args.head_steps
        result["head_seconds"] = round(time.perf_counter() - start, 1)
        result["head_mse_last_200"] = round(sum(mse[-200:]) / len(mse[-200:]), 4)
        result["after"] = measure(model, scenes)
        print(f"after {args.head_steps} steps of the head alone: {result['after']}")
    result["hardware"] = hardware_name(torch.device("cpu"))
    result["date"] = time.strftime("%Y-%m-%d")
    write_json(Path(args.out) if args.out else None, result)
    return result


if __name__ == "__main__":
    main()
