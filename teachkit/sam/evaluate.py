"""Measuring promptable segmentation: mIoU with 1 point, k points and a box, seen vs unseen.

Chapter 6: SAM, encoder to decoder -- section "Training a tiny SAM: how good is it, and on what?".

The protocol follows the SAM paper (Sec. 7.1 and App. D.1) and RITM, scaled down to the
shapes scenes (:func:`teachkit.data.shapes.make_scenes`):

* every instance of every held-out scene whose visible mask has at least ``min_area``
  pixels is one query; its ground truth is its **visible** mask;
* **1 point**: a positive click at the instance's *centre* -- the pixel farthest from
  its boundary (a deterministic stand-in for a user's first click). SAM answers with 3
  masks; we score the one it ranks first (highest predicted IoU) and, separately, the
  best of the three (the "oracle" of the paper);
* **k points**: after each answer, the next click goes to the centre of the largest
  error: a positive click if that pixel is a false negative (missed object), a negative
  click if it is a false positive (leaked background). The previous low-res logits are
  fed back as the mask prompt and SAM answers with a single mask;
* **box**: the tight box of the visible mask, single-mask output;
* **mIoU** is the mean over queries of the IoU between the predicted and the true mask.

Classes held out of training (:data:`~teachkit.sam.config.SamTrainConfig.holdout`) are
reported apart ("unseen"): a class-agnostic model should segment them almost as well.
:func:`teachkit.sam.unet.evaluate_unet` measures the class-aware baseline on the same
instances; it gets no prompt, and it cannot *name* an unseen class at all.

    >>> scenes = eval_scenes(200, resolution=128)          # fixed seed, all 10 classes
    >>> result = evaluate_sam(sam, scenes, seen_classes=seen)
    >>> result.summary()["miou_1point_seen"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from teachkit.data.datasets import SCENE_DATASETS
from teachkit.data.shapes import CLASSES, SceneBatch, make_scenes
from teachkit.sam.geometry import mask_center, mask_iou, masks_to_boxes, stability_score
from teachkit.sam.model import Sam

__all__ = [
    "EVAL_SEED",
    "AmbiguityExample",
    "SamEvaluation",
    "ambiguity_example",
    "eval_scenes",
    "evaluate_sam",
    "instance_queries",
    "error_region_click",
]

#: Seed of the held-out evaluation scenes; training draws its scenes from other seeds.
EVAL_SEED = 7_777_777


# ----------------------------------------------------------------- deterministic clicks
def error_region_click(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The next corrective click for one mask: the centre of the error region.

    The error region is ``pred XOR target``. Its deepest pixel becomes the click: label
    1 (positive) where the object was missed (false negative), label 0 (negative) where
    the mask leaked (false positive).

    Args:
        pred: ``H x W`` bool, the current answer.
        target: ``H x W`` bool, the true mask.

    Returns:
        ``(xy, label)``: a ``2`` float tensor (x, y) and 1, 0 -- or -1 (a padding point
        that the prompt encoder ignores) when the answer is already perfect.
    """
    error = pred ^ target
    if not bool(error.any()):
        return torch.zeros(2), -1
    xy = mask_center(error)
    x, y = (int(v) for v in xy)
    return xy, int(bool(target[y, x]))


# -------------------------------------------------------------------------- the data
def eval_scenes(
    n: int = 200,
    *,
    resolution: int = 128,
    seed: int = EVAL_SEED,
    dataset: str = "shapes",
    **scene_kwargs,
) -> SceneBatch:
    """The fixed held-out scenes: ``make_scenes(n, resolution=..., seed=EVAL_SEED)``, or
    the scenes of another dataset of :data:`~teachkit.data.datasets.SCENE_DATASETS`
    (``"critters"``: ``make_critter_scenes``) with the same arguments.

    All ten classes appear, so seen and unseen classes are measured on the same images.
    """
    if dataset not in SCENE_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(SCENE_DATASETS)}")
    return SCENE_DATASETS[dataset].scenes(n, resolution=resolution, seed=seed, **scene_kwargs)


def instance_queries(scenes: SceneBatch, min_area: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluated instances: ``(scene index, instance index)`` of every instance with at
    least ``min_area`` visible pixels (two ``Q`` int64 tensors)."""
    area = scenes.masks.flatten(2).sum(-1)
    scene, inst = ((area >= min_area) & (scenes.labels >= 0)).nonzero(as_tuple=True)
    return scene, inst


def _nested_flags(scenes: SceneBatch, scene: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
    """Whether each query is the child, or the parent, of a nested pair."""
    child = scenes.parents[scene, inst] >= 0
    is_parent = (scenes.parents[scene] == inst.unsqueeze(1)).any(dim=1)
    return child | is_parent


def _split_keys(
    values: dict[str, torch.Tensor], labels: torch.Tensor, seen: Sequence[int] | None
) -> dict[str, float]:
    """``{name}`` means, plus ``{name}_seen`` / ``{name}_unseen`` when ``seen`` is given
    (an empty group is left out)."""
    out = {name: float(v.mean()) if v.numel() else float("nan") for name, v in values.items()}
    if seen is None:
        return out
    is_seen = torch.isin(labels, torch.tensor(list(seen), dtype=labels.dtype))
    for name, v in values.items():
        for suffix, keep in (("seen", is_seen), ("unseen", ~is_seen)):
            if bool(keep.any()):
                out[f"{name}_{suffix}"] = float(v[keep].mean())
    return out


# ------------------------------------------------------------------------------ SAM
@dataclass
class SamEvaluation:
    """Per-query IoUs of :func:`evaluate_sam` (Q queries = evaluated instances).

    Attributes:
        labels: ``Q`` class index of each query instance.
        nested: ``Q`` bool, the instance is the child or the parent of a nested pair.
        point: ``Q`` IoU of the top-ranked of the 3 masks after the first click.
        point_oracle: ``Q`` IoU of the best of the 3 masks after the first click.
        clicks: ``Q x k`` IoU after click 1..k (column 0 equals ``point``).
        box: ``Q`` IoU with the tight-box prompt.
        seen_classes: class indices seen in training (``None``: no split).
        point_scores: ``Q x 3`` the IoU head's predicted IoU of each of the 3 masks of
            the first click (what ranks them, and what the automatic mask generator
            thresholds).
        point_ious: ``Q x 3`` the true IoU of each of those masks.
        point_stability: ``Q x 3`` their stability scores (logit offset 1, as the
            generator's).
    """

    labels: torch.Tensor
    nested: torch.Tensor
    point: torch.Tensor
    point_oracle: torch.Tensor
    clicks: torch.Tensor
    box: torch.Tensor
    seen_classes: tuple[int, ...] | None = None
    point_scores: torch.Tensor | None = None
    point_ious: torch.Tensor | None = None
    point_stability: torch.Tensor | None = None

    def calibration(self) -> dict[str, float]:
        """Can the IoU head be trusted? Over the ``3 Q`` masks of the first clicks:

        ``masks``; ``correlation`` (Pearson) and ``mean_abs_error`` between predicted and
        true IoU; ``stability_correlation`` between stability score and true IoU (nan
        where a column is constant); ``true_at_least_0.88``, the masks good enough for the
        official predicted-IoU threshold, and ``passes_official``, the masks with
        predicted IoU > 0.88 and stability >= 0.95 (the generator's defaults).

        Raises:
            ValueError: the evaluation holds no first-click scores or no query.
        """
        if self.point_scores is None or self.point_ious is None or self.point_stability is None:
            raise ValueError("this evaluation has no first-click scores; run evaluate_sam")
        pred, true = self.point_scores.flatten().double(), self.point_ious.flatten().double()
        stab = self.point_stability.flatten().double()
        if pred.numel() == 0:
            raise ValueError("the evaluation has no query (no instance of >= min_area pixels)")

        def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
            a, b = a - a.mean(), b - b.mean()
            return float((a * b).sum() / (a.norm() * b.norm()))

        return {
            "masks": float(pred.numel()),
            "correlation": pearson(pred, true),
            "mean_abs_error": float((pred - true).abs().mean()),
            "stability_correlation": pearson(stab, true),
            "true_at_least_0.88": float((true >= 0.88).sum()),
            "passes_official": float(((pred > 0.88) & (stab >= 0.95)).sum()),
        }

    def summary(self) -> dict[str, float]:
        """mIoUs: ``miou_1point``, ``miou_1point_oracle``, ``miou_{k}points``, ``miou_box``,
        each also ``_seen`` / ``_unseen``, plus ``miou_1point_nested`` and ``queries``."""
        k = self.clicks.shape[1]
        values = {
            "miou_1point": self.point,
            "miou_1point_oracle": self.point_oracle,
            f"miou_{k}points": self.clicks[:, -1],
            "miou_box": self.box,
        }
        out = _split_keys(values, self.labels, self.seen_classes)
        if bool(self.nested.any()):
            out["miou_1point_nested"] = float(self.point[self.nested].mean())
        out["queries"] = float(self.labels.numel())
        return out

    def per_class(self, names: Sequence[str] = CLASSES) -> dict[str, float]:
        """1-point mIoU per class name (classes with at least one query); ``names`` are
        the dataset's class names (shapes' by default)."""
        return {
            names[c]: float(self.point[self.labels == c].mean())
            for c in sorted(set(self.labels.tolist()))
        }


def _upsampled(model: Sam, low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits ``Q x M x 4g x 4g`` -> logits ``Q x M x H x W`` of the image."""
    return model.postprocess_masks(low_res, input_size=size, original_size=size)


def _check_resolution(model: Sam, scenes: SceneBatch) -> tuple[int, int]:
    h, w = scenes.images.shape[-2:]
    if (h, w) != (model.img_size, model.img_size):
        raise ValueError(
            f"scenes are {h} x {w} but the model takes {model.img_size} x {model.img_size} "
            "images; draw the scenes at the model's img_size"
        )
    return int(h), int(w)


@torch.no_grad()
def _evaluate_batch(
    model: Sam, images: torch.Tensor, gt: torch.Tensor, owner: torch.Tensor, clicks: int
) -> tuple[torch.Tensor, ...]:
    """IoUs for Q queries ``gt`` (``Q x H x W``) on images ``owner`` (``Q``) of ``images``:
    the fields of :class:`SamEvaluation` from ``point`` to ``box``, then ``point_scores``,
    ``point_ious`` and ``point_stability``."""
    size = tuple(gt.shape[-2:])
    dev = model.device
    emb = model.image_encoder(model.preprocess(images.to(dev).float()))[owner.to(dev)]
    gt = gt.to(dev)
    q = gt.shape[0]
    rows = torch.arange(q, device=dev)
    coords = torch.stack([mask_center(m) for m in gt]).to(dev)[:, None]
    labels = torch.ones(q, 1, dtype=torch.long, device=dev)
    low, score = model.decode(emb, point_coords=coords, point_labels=labels, multimask_output=True)
    logits = _upsampled(model, low, size)
    masks = logits > model.mask_threshold
    stability = stability_score(logits, model.mask_threshold, 1.0)
    ious = mask_iou(masks, gt[:, None])
    top = score.argmax(dim=1)
    oracle = ious.max(dim=1).values
    history = [ious[rows, top]]
    prev, pred = low[rows, top][:, None], masks[rows, top]
    for _ in range(clicks - 1):
        nxt = [error_region_click(p, t) for p, t in zip(pred, gt, strict=True)]
        coords = torch.cat([coords, torch.stack([xy for xy, _ in nxt]).to(dev)[:, None]], 1)
        new_labels = torch.tensor([lab for _, lab in nxt], device=dev)[:, None]
        labels = torch.cat([labels, new_labels], 1)
        prev, _ = model.decode(
            emb, point_coords=coords, point_labels=labels, mask_input=prev, multimask_output=False
        )
        pred = _upsampled(model, prev, size)[:, 0] > model.mask_threshold
        history.append(mask_iou(pred, gt))
    boxes = masks_to_boxes(gt).float()
    low, _ = model.decode(emb, boxes=boxes, multimask_output=False)
    box = mask_iou(_upsampled(model, low, size)[:, 0] > model.mask_threshold, gt)
    return history[0], oracle, torch.stack(history, dim=1), box, score, ious, stability


def evaluate_sam(
    model: Sam,
    scenes: SceneBatch,
    *,
    seen_classes: Sequence[int] | None = None,
    clicks: int = 3,
    min_area: int = 16,
    batch_size: int = 16,
    progress: bool = False,
) -> SamEvaluation:
    """Prompt ``model`` on every instance of ``scenes``: 1 point, ``clicks`` points, a box.

    The image encoder runs once per scene; all prompts of a scene reuse its embedding.

    Args:
        model: a :class:`Sam` whose ``img_size`` equals the scenes' resolution.
        scenes: e.g. :func:`eval_scenes`.
        seen_classes: class indices seen in training; the summary then splits every
            mIoU into ``_seen`` and ``_unseen``.
        clicks: points of the iterative protocol (>= 1; 3 in the course's table).
        min_area: instances with fewer visible pixels are skipped (a sliver left by
            occlusion is no fair query).
        batch_size: scenes encoded at once.
        progress: show a tqdm bar.

    Returns:
        A :class:`SamEvaluation`; ``.summary()`` gives the mIoU table.
    """
    if clicks < 1:
        raise ValueError(f"clicks must be >= 1, got {clicks}")
    _check_resolution(model, scenes)
    was_training = model.training
    model.eval()
    scene, inst = instance_queries(scenes, min_area)
    parts: list[tuple[torch.Tensor, ...]] = []
    starts = range(0, len(scenes), batch_size)
    for start in tqdm(starts, desc="SAM eval", unit="batch", disable=not progress):
        sel = (scene >= start) & (scene < start + batch_size)
        if not bool(sel.any()):
            continue
        gt = scenes.masks[scene[sel], inst[sel]]
        images = scenes.images[start : start + batch_size]
        parts.append(_evaluate_batch(model, images, gt, scene[sel] - start, clicks))
    model.train(was_training)
    point, oracle, history, box, scores, ious, stability = (
        torch.cat([p[i].float().cpu() for p in parts]) for i in range(7)
    )
    return SamEvaluation(
        labels=scenes.labels[scene, inst].cpu(),
        nested=_nested_flags(scenes, scene, inst).cpu(),
        point=point,
        point_oracle=oracle,
        clicks=history,
        box=box,
        seen_classes=None if seen_classes is None else tuple(int(c) for c in seen_classes),
        point_scores=scores,
        point_ious=ious,
        point_stability=stability,
    )


# --------------------------------------------------------------------- ambiguity
@dataclass
class AmbiguityExample:
    """A click on a nested shape and SAM's three answers (the chapter's figure).

    Attributes:
        image: ``3 x H x W`` uint8 scene.
        point: ``2`` (x, y) of the click, the centre of the nested child.
        masks: ``3 x H x W`` bool, the three multimask answers.
        scores: ``3`` predicted IoUs.
        child: ``H x W`` bool visible mask of the clicked (inner) shape.
        parent: ``H x W`` bool visible mask of the shape around it (ring-like).
        scene_index: which candidate scene was chosen.
    """

    image: torch.Tensor
    point: torch.Tensor
    masks: torch.Tensor
    scores: torch.Tensor
    child: torch.Tensor
    parent: torch.Tensor
    scene_index: int

    @property
    def whole(self) -> torch.Tensor:
        """Parent and child together: the other sensible answer to the click."""
        return self.parent | self.child


@torch.no_grad()
def ambiguity_example(
    model: Sam, *, candidates: int = 64, seed: int = EVAL_SEED + 1, min_area: int = 30
) -> AmbiguityExample:
    """Find a scene where one click on a nested shape gets three different masks.

    A click on a small shape drawn inside a bigger one is ambiguous: the user may mean
    the small shape (the *part*) or the big one with it (the *whole*). SAM answers such a
    click with three masks. Among ``candidates`` nested scenes this returns the one whose
    three masks differ most (lowest mean pairwise IoU) while one of them still matches
    the clicked shape (IoU >= 0.5, if any scene achieves it).

    Args:
        model: a trained :class:`Sam` (an untrained one also gives 3 different masks,
            but not meaningful ones).
        candidates: nested scenes to search.
        seed: seed of the candidate scenes.
        min_area: minimum visible pixels of the clicked child.
    """
    scenes = make_scenes(
        candidates, resolution=model.img_size, seed=seed, nest_probability=1.0, instances=(2, 3)
    )
    ok = (scenes.parents[:, 1] == 0) & (scenes.masks[:, 1].flatten(1).sum(1) >= min_area)
    index = ok.nonzero(as_tuple=True)[0]
    if index.numel() == 0:
        raise ValueError(f"no nested child of >= {min_area} pixels in {candidates} scenes")
    model.eval()
    emb = model.image_encoder(model.preprocess(scenes.images[index].to(model.device).float()))
    child = scenes.masks[index, 1].to(model.device)
    coords = torch.stack([mask_center(m) for m in child]).to(model.device)[:, None]
    labels = torch.ones(len(index), 1, dtype=torch.long, device=model.device)
    low, scores = model.decode(emb, point_coords=coords, point_labels=labels)
    size = (model.img_size, model.img_size)
    masks = _upsampled(model, low, size) > model.mask_threshold
    pair = mask_iou(masks[:, :, None], masks[:, None, :])  # Q x 3 x 3
    diversity = 1 - (pair.sum(dim=(1, 2)) - 3) / 6
    matches = mask_iou(masks, child[:, None]).max(dim=1).values >= 0.5
    best = int(torch.where(matches, diversity, diversity - 2).argmax())
    s = int(index[best])
    return AmbiguityExample(
        image=scenes.images[s],
        point=coords[best, 0].cpu(),
        masks=masks[best].cpu(),
        scores=scores[best].cpu(),
        child=scenes.masks[s, 1],
        parent=scenes.masks[s, 0],
        scene_index=s,
    )
