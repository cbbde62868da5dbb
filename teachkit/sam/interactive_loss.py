"""One training step's loss with simulated clicks: how SAM is trained like it is used.

Chapter 6: SAM, encoder to decoder -- section "Training a tiny SAM" (the loss, a simulated
user). The loop around it (schedule, data, checkpoints) is :mod:`teachkit.sam.train`.

SAM is trained like a user would use it (SAM paper, Sec. 3 and App. A "Training
algorithm"). For each image of a batch and each of a few of its instances
(:func:`choose_instances`):

1. **First prompt**: with probability ``box_probability`` the instance's box, jittered
   by ~10 % of its side (std, at most ``box_noise_max`` pixels); otherwise one positive
   point drawn uniformly inside the instance's *visible* mask.
2. **SAM answers**. A single point is ambiguous, so SAM returns 3 masks and only the one
   with the lowest loss is trained (:func:`~teachkit.sam.losses.select_min_loss`): each
   output slot becomes free to specialise (part / whole / ...). A box is not ambiguous:
   1 mask.
3. **Corrective clicks** (``rounds - 1`` times): a point is drawn uniformly in the
   *error region* of the current answer -- positive if it lands on a missed pixel
   (false negative), negative if it lands on a leaked one (false positive)
   (:func:`~teachkit.sam.prompting.sample_error_point`); the previous low-res *logits*
   (not thresholded) are fed back as the mask prompt; SAM answers with 1 mask.
4. **Loss** of every answer: ``20 * focal + 1 * dice``
   (:func:`~teachkit.sam.losses.focal_loss`, :func:`~teachkit.sam.losses.dice_loss`)
   against the instance's visible mask, plus the MSE between the predicted IoU and the
   actual IoU of each mask (:func:`~teachkit.sam.losses.iou_prediction_loss`); the IoU
   head is what ranks the 3 masks at inference time.

The image encoder runs **once per image per step** (:func:`step_loss`); every prompt and
every round of that image reuse its embedding (:func:`interactive_loss`), which is what
makes interactive training affordable.

**Ambiguity of nested shapes.** A click on a small shape drawn inside a big one is
supervised with the small shape's visible mask. The whole (big shape with the small one
in it) is an equally sensible answer, which a user might have meant; SAM's multimask
output exists for exactly this. With the default ``whole_target_probability = 0`` the
training signal for such a click is always the part, so the mIoU against visible masks
is what the model optimises; raise it (0.3-0.5) to supervise a share of those clicks
with the whole instead and watch the three slots split into part and whole
(:func:`teachkit.sam.evaluate.ambiguity_example` draws the figure).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from teachkit.data.shapes import SceneBatch
from teachkit.sam.config import PromptingRecipe
from teachkit.sam.geometry import mask_iou, masks_to_boxes
from teachkit.sam.losses import dice_loss, focal_loss, iou_prediction_loss, select_min_loss
from teachkit.sam.model import Sam
from teachkit.sam.prompting import jitter_boxes, sample_error_point, sample_point_in_mask

__all__ = ["PromptedInstances", "choose_instances", "interactive_loss", "step_loss"]


@dataclass
class PromptedInstances:
    """The P instances prompted in one step: which image, the target mask, where to click.

    Attributes:
        image: ``P`` int64, the index of each instance's image in the batch.
        target: ``P x H x W`` bool, the mask the answers are trained towards (the visible
            mask, or with ``whole_target_probability`` the whole of a nested pair).
        clicked: ``P x H x W`` bool, where the first click may land (the visible part).
    """

    image: Tensor
    target: Tensor
    clicked: Tensor


def choose_instances(
    scenes: SceneBatch, cfg: PromptingRecipe, generator: torch.Generator
) -> PromptedInstances:
    """``cfg.prompts_per_image`` instances of every image (with replacement), and their targets.

    Args:
        scenes: ``B`` scenes (``masks``: ``B x K x H x W`` visible masks, ``labels``:
            ``B x K``, -1 for no instance).
        cfg: ``prompts_per_image``, ``min_area`` and ``whole_target_probability``.
        generator: draws the instances and the whole-target coins.

    Returns:
        ``P = B * prompts_per_image`` instances, image by image.
    """
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
    return PromptedInstances(image, target, visible)


def interactive_loss(
    model: Sam,
    embeddings: Tensor,
    targets: Tensor,
    cfg: PromptingRecipe,
    generator: torch.Generator,
    *,
    first_points: Tensor | None = None,
    boxes: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``cfg.rounds`` prompting rounds for P prompts; summed losses and statistics.

    Args:
        model: the SAM being trained (its prompt encoder and mask decoder run here).
        embeddings: ``P x C x g x g`` (one per prompt; shared per image by indexing).
        targets: ``P x H x W`` bool.
        cfg: ``rounds`` and the loss settings.
        generator: draws the corrective clicks.
        first_points: ``P x 2`` positive first clicks (XY pixels), or ``None`` with ``boxes``.
        boxes: ``P x 4`` first box prompts (XYXY pixels, kept in every round), or ``None``.

    Returns:
        The loss summed over the P prompts and the rounds (a scalar with gradient), and
        scalar sums by name: ``loss`` (that same tensor), ``focal``, ``dice`` and
        ``iou_mse`` (detached, over prompts and rounds), ``iou_first`` and ``iou_last``
        (IoU of the first and of the last answer, over prompts).
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


def step_loss(
    model: Sam, scenes: SceneBatch, cfg: PromptingRecipe, generator: torch.Generator
) -> tuple[Tensor, dict[str, float]]:
    """The loss of one step: encode each image once, prompt several instances each.

    Of the ``P`` instances (:func:`choose_instances`), the last ``round(P *
    cfg.box_probability)`` are prompted with a jittered box and the others with one
    click (:func:`interactive_loss` for each group).

    Args:
        model: the SAM being trained.
        scenes: ``B`` square scenes, images ``B x 3 x H x W`` (``H = W``, the resolution).
        cfg: the prompting and loss settings (``SamTrainConfig.recipe``).
        generator: every random draw of the step (instances, clicks, box jitter).

    Returns:
        The mean loss per answer (a scalar with gradient) and plain numbers: ``loss``,
        ``focal``, ``dice``, ``iou_mse`` per answer, ``iou_first`` and ``iou_last`` per
        prompt.
    """
    device = model.device
    prompted = choose_instances(scenes, cfg, generator)
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
            size=scenes.images.shape[-1],
            generator=generator,
        )
        groups.append((slice(n - n_box, n), {"boxes": boxes}))
    for sl, prompt in groups:
        loss, sums = interactive_loss(model, embeddings[sl], targets[sl], cfg, generator, **prompt)
        total = loss if total is None else total + loss
        for name, value in sums.items():
            stats[name] = stats.get(name, 0.0) + float(value.detach())
    per_answer = n * cfg.rounds
    stats = {
        name: v / (n if name.startswith("iou_") and name != "iou_mse" else per_answer)
        for name, v in stats.items()
    }
    return total / per_answer, stats
