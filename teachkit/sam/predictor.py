"""Prompt SAM interactively: embed an image once, then decode many prompts cheaply.

Chapter 6: SAM, encoder to decoder -- section "Clicking on an image".

    >>> predictor = SamPredictor(build_sam("vit_tiny_shapes"))
    >>> predictor.set_image(image)                         # H x W x 3 uint8 RGB
    >>> masks, ious, low_res = predictor.predict(box=np.array([10, 20, 60, 90]))
    >>> masks.shape, ious.shape                            # (1, H, W) bool, (1,)

All prompt coordinates given to :class:`SamPredictor` -- in :meth:`~SamPredictor.predict`
*and* in :meth:`~SamPredictor.predict_torch` -- are pixels of the **original** image,
X (column) then Y (row); boxes are XYXY. (The official ``predict_torch`` expects
coordinates already resized to the model input; here the predictor does that for you.)
Valid coordinates lie in ``[0, W] x [0, H]``.

The heavy image encoder runs once, in :meth:`~SamPredictor.set_image`; each prompt then
costs one prompt-encoder + mask-decoder pass. Both run under ``torch.no_grad`` (not
``inference_mode``, whose tensors cannot be reused in autograd: a cached embedding can
still feed a decoder being fine-tuned).
"""

from __future__ import annotations

import numpy as np
import torch

from teachkit.sam.model import (
    Sam,
    preprocess_shape,
    resize_boxes,
    resize_coords,
    resize_longest_side,
)

__all__ = ["SamPredictor"]


def _batch_of_one(
    x: np.ndarray | None, ndim: int, last: int | None, dtype: torch.dtype | None, what: str
) -> torch.Tensor | None:
    """A numpy prompt as a tensor with a leading batch axis B = 1.

    Accepts the prompt with or without that axis; raises ``ValueError(f"{what}, got
    shape ...")`` when the rank or the size of the last axis is wrong, and a ValueError
    for anything but numbers. ``dtype=None`` keeps the numbers' own type (labels are
    checked, not cast: a label 0.5 must not become 0).
    """
    if x is None:
        return None
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what}, got {array.dtype} values (numbers expected)")
    t = torch.as_tensor(array, dtype=dtype)
    if t.ndim == ndim - 1:
        t = t[None]
    if t.ndim != ndim or t.shape[0] != 1 or (last is not None and t.shape[-1] != last):
        raise ValueError(f"{what}, got shape {tuple(np.shape(x))}")
    return t


def _as_rgb_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate an image and return it as an ``H x W x 3`` uint8 RGB array.

    Accepted: a numpy ``H x W x 3`` uint8 array (0..255), or a torch ``3 x H x W`` tensor,
    either uint8 (0..255) or floating point in ``[0, 1]`` (as ``torchvision``'s
    ``ToTensor`` gives). Float tensors are quantised to 8 bits, so a numpy image and its
    tensor version give identical masks.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected a 3 x H x W RGB tensor (channels first), got shape {tuple(image.shape)}"
            )
        if image.dtype == torch.uint8:
            pixels = image
        elif image.is_floating_point():
            if image.numel() and not torch.isfinite(image).all():
                bad = int((~torch.isfinite(image)).sum())
                raise ValueError(f"the image tensor has {bad} non-finite values (NaN or inf)")
            lo, hi = float(image.min()), float(image.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"a float image tensor must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}]"
                )
            pixels = (image * 255.0).round().to(torch.uint8)
        else:
            raise ValueError(f"expected a uint8 or float image tensor, got dtype {image.dtype}")
        image = pixels.permute(1, 2, 0).cpu().numpy()
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an H x W x 3 RGB array (channels last), got shape {image.shape}"
            )
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image with values 0..255, got dtype {image.dtype}")
    else:
        raise ValueError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


class SamPredictor:
    """Interactive SAM: ``set_image`` once, then ``predict`` for each prompt.

    Args:
        model: the :class:`~teachkit.sam.model.Sam` to run (its device is used).

    Attributes:
        original_size: ``(H, W)`` of the current image, ``None`` before ``set_image``.
        input_size: ``(h, w)`` of the image resized to the model's longest side.
        features: the ``1 x C x g x g`` image embedding of the current image.
    """

    def __init__(self, model: Sam) -> None:
        if not isinstance(model, Sam):
            raise TypeError(
                f"model must be a Sam (teachkit.sam.build.build_sam(name)); got "
                f"{type(model).__name__}"
            )
        self.model = model
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray | torch.Tensor) -> None:
        """Compute and keep the image embedding of ``image``.

        Args:
            image: numpy ``H x W x 3`` uint8 RGB, or a torch ``3 x H x W`` RGB tensor,
                uint8 (0..255) or float in ``[0, 1]``.

        Raises:
            ValueError: wrong type, shape, dtype or value range, NaN or inf values, or an
                image so thin that its short side would resize to 0 pixels (the message
                says which).
        """
        rgb = _as_rgb_uint8(image)
        h, w = rgb.shape[:2]
        if min(preprocess_shape(h, w, self.model.img_size)) < 1:
            long_side = self.model.img_size
            raise ValueError(
                f"the image of {h} x {w} pixels is too thin: resized so its long side is "
                f"{long_side} (the model's input), its short side would be 0 pixels. Pad it "
                f"so the long side is at most {2 * long_side - 1} times the short side"
            )
        resized = resize_longest_side(rgb, self.model.img_size)
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()
        with torch.no_grad():
            self.features = self.model.image_encoder(self.model.preprocess(pixels[None]))
        self.original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))

    def get_image_embedding(self) -> torch.Tensor:
        """The ``1 x C x g x g`` embedding of the current image."""
        self._require_image()
        return self.features

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt on the current image (numpy in, numpy out).

        Args:
            point_coords: ``N x 2`` points, (X, Y) pixels of the original image.
            point_labels: ``N`` labels, 1 = foreground (positive), 0 = background.
            box: ``4`` (or ``1 x 4``) box, XYXY pixels of the original image.
            mask_input: ``1 x 4g x 4g`` low-res logits, e.g. from a previous call.
            multimask_output: return 3 candidate masks (good for one ambiguous click)
                instead of 1 (better for several points or a box).
            return_logits: return logits instead of booleans in the first output.

        Returns:
            ``masks``: ``C x H x W`` bool (float logits if ``return_logits``) on the
            original image, C = 3 or 1; ``iou_predictions``: ``C`` predicted IoUs;
            ``low_res_logits``: ``C x 4g x 4g`` float (256 x 256 official).

        Raises:
            RuntimeError: no image set (call ``set_image`` first).
            ValueError: an empty or malformed prompt (see :meth:`predict_torch`).
        """
        self._require_image()

        coords = _batch_of_one(point_coords, 3, 2, torch.float64, "point_coords must be N x 2")
        labels = _batch_of_one(point_labels, 2, None, None, "point_labels must be length N")
        boxes = _batch_of_one(box, 2, 4, torch.float64, "box must be 4 numbers XYXY (or 1 x 4)")
        masks_in = _batch_of_one(mask_input, 4, None, torch.float32, "mask_input must be 1 x h x w")
        masks, ious, low_res = self.predict_torch(
            coords,
            labels,
            boxes,
            masks_in,
            multimask_output=multimask_output,
            return_logits=return_logits,
        )
        return (
            masks[0].cpu().numpy(),
            ious[0].float().cpu().numpy(),
            low_res[0].float().cpu().numpy(),
        )

    def predict_torch(
        self,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for a batch of B prompts on the current image, e.g. many boxes at once.

        Args:
            point_coords: ``B x N x 2`` points, (X, Y) pixels of the original image.
            point_labels: ``B x N`` labels, 1 = foreground, 0 = background.
            boxes: ``B x 4`` boxes, XYXY pixels of the original image.
            mask_input: ``B x 1 x 4g x 4g`` low-res logits.
            multimask_output: 3 masks per prompt instead of 1.
            return_logits: logits instead of booleans in the first output.

        Returns:
            ``masks`` ``B x C x H x W`` (bool, or logits), ``iou_predictions`` ``B x C`` and
            ``low_res_logits`` ``B x C x 4g x 4g``.

        Raises:
            RuntimeError: no image set (call ``set_image`` first).
            ValueError: no prompt at all (zero points count as none); points without
                labels (or the reverse); a different number of points and labels; labels
                other than 0/1 (a float label must be exactly 0.0 or 1.0); NaN or inf
                coordinates, boxes or mask logits; coordinates outside the image; a box
                with x1 < x0 or y1 < y0; a mask of the wrong size; prompts with different
                batch sizes.
        """
        self._require_image()
        self._check_prompts(point_coords, point_labels, boxes, mask_input)
        if point_coords is not None and point_coords.shape[1] == 0:
            point_coords = point_labels = None  # zero points: the other prompts decide
        long_side = self.model.img_size
        if point_coords is not None:
            point_coords = resize_coords(
                point_coords.to(self.device), self.original_size, long_side
            )
            point_labels = point_labels.to(self.device, torch.int64)
        if boxes is not None:
            boxes = resize_boxes(boxes.to(self.device), self.original_size, long_side)
        if mask_input is not None:
            mask_input = mask_input.to(self.device, torch.float32)
        with torch.no_grad():
            low_res, ious = self.model.decode(
                self.features,
                point_coords=point_coords,
                point_labels=point_labels,
                boxes=boxes,
                mask_input=mask_input,
                multimask_output=multimask_output,
            )
            masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
        return masks, ious, low_res

    def _require_image(self) -> None:
        if self.features is None:
            raise RuntimeError("no image is set: call set_image(image) first")

    def _check_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> None:
        """Raise a ValueError that names the problem with a prompt (see predict_torch)."""
        no_points = point_coords is None or (
            isinstance(point_coords, torch.Tensor)
            and point_coords.ndim == 3
            and point_coords.shape[1] == 0
        )
        if no_points and boxes is None and mask_input is None:
            raise ValueError(
                "empty prompt: give point_coords with point_labels (at least one point), "
                "a box, or a mask_input"
            )
        h, w = self.original_size
        batch_sizes = {}
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        for name, t in (
            ("point_coords", point_coords),
            ("point_labels", point_labels),
            ("boxes", boxes),
            ("mask_input", mask_input),
        ):
            if t is not None and not isinstance(t, torch.Tensor):
                raise ValueError(f"{name} must be a torch tensor, got {type(t).__name__}")
            if t is not None and t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"{name} has NaN or inf values")
        if point_coords is not None:
            if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
                raise ValueError(f"point_coords must be B x N x 2, got {tuple(point_coords.shape)}")
            if point_labels.ndim != 2 or point_labels.shape[0] != point_coords.shape[0]:
                raise ValueError(f"point_labels must be B x N, got {tuple(point_labels.shape)}")
            if point_labels.shape[1] != point_coords.shape[1]:
                raise ValueError(
                    f"got {point_coords.shape[1]} points but {point_labels.shape[1]} labels: "
                    "give one label per point"
                )
            bad = ~((point_labels == 0) | (point_labels == 1))
            if bad.any():
                raise ValueError(
                    f"point labels must be 1 (foreground) or 0 (background), "
                    f"got {sorted(set(point_labels[bad].tolist()))}"
                )
            _check_inside(point_coords, h, w, "point")
            batch_sizes["point_coords"] = point_coords.shape[0]
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be B x 4 (XYXY), got {tuple(boxes.shape)}")
            flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
            if flipped.any():
                raise ValueError(
                    f"a box must be XYXY with x1 >= x0 and y1 >= y0, got "
                    f"{boxes[flipped][0].tolist()}"
                )
            _check_inside(boxes.reshape(-1, 2), h, w, "box corner")
            batch_sizes["boxes"] = boxes.shape[0]
        if mask_input is not None:
            size = self.model.prompt_encoder.mask_input_size
            if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, *size):
                raise ValueError(
                    f"mask_input must be B x 1 x {size[0]} x {size[1]} low-res logits, "
                    f"got {tuple(mask_input.shape)}"
                )
            batch_sizes["mask_input"] = mask_input.shape[0]
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"prompts disagree on the batch size B: {batch_sizes}")


def _check_inside(xy: torch.Tensor, h: int, w: int, what: str) -> None:
    """Raise if any ``... x 2`` (X, Y) coordinate lies outside ``[0, W] x [0, H]``."""
    xy = xy.reshape(-1, 2)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w) & (xy[:, 1] >= 0) & (xy[:, 1] <= h)
    if not inside.all():
        first = xy[~inside][0].tolist()
        raise ValueError(
            f"{what} (x, y) = {first} is outside the image: x must be in [0, {w}] and "
            f"y in [0, {h}] (original-image pixels)"
        )
