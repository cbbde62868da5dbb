"""The class-aware U-Net baseline: shapes, targets, training, and its per-instance metric."""

from __future__ import annotations

import pytest
import torch

from teachkit.data.shapes import CLASSES, SceneBatch
from teachkit.sam.unet import (
    IGNORE,
    UNet,
    UNetTrainConfig,
    evaluate_unet,
    semantic_targets,
    train_unet,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_output_has_one_channel_per_class_plus_background():
    model = UNet((0, 1, 2), width=4, depth=2)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert model(images).shape == (2, 4, 32, 32)
    assert model.num_outputs == 4 and model.class_ids.tolist() == [0, 1, 2]
    assert "class_ids" in model.state_dict()  # the shipped weights know their classes
    with pytest.raises(ValueError, match="divisible by 4"):
        model(images[..., :30, :30])


def _scene() -> SceneBatch:
    """One 8 x 8 scene: a circle (class 0) on the left, a star (class 3) on the right."""
    masks = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    masks[0, 0, 2:6, 0:3] = True  # circle, 12 pixels
    masks[0, 1, 2:6, 5:8] = True  # star, 12 pixels
    labels = torch.tensor([[0, 3, -1]])
    return SceneBatch(
        images=torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
        labels=labels,
        masks=masks,
        counts=torch.tensor([2]),
        parents=torch.full((1, 3), -1),
    )


def test_semantic_targets_map_classes_to_outputs_and_ignore_unknown_ones():
    target = semantic_targets(_scene(), (0, 1, 2))
    assert target.shape == (1, 8, 8)
    assert (target[0, 2:6, 0:3] == 1).all()  # circle -> output 1
    assert (target[0, 2:6, 5:8] == IGNORE).all()  # star: no output for it
    assert (target[0, 0] == 0).all()


class _FixedPrediction(torch.nn.Module):
    """A stand-in U-Net whose argmax is a given label map."""

    def __init__(self, labels: torch.Tensor, class_ids: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("class_ids", torch.tensor(class_ids))
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.labels = labels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(self.labels, 1 + len(self.class_ids))
        return one_hot.permute(0, 3, 1, 2).float()


def test_instance_metric_on_hand_built_predictions():
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 2:6, 0:3] = 1  # the circle, exactly, as class 0 (output 1)
    pred[0, 2:6, 5:7] = 2  # 8 of the star's 12 pixels, called "square" (output 2)
    pred[0, 0, 0] = 1  # a stray circle pixel, not touching the circle
    out = evaluate_unet(_FixedPrediction(pred, (0, 1, 2)), _scene(), min_area=1)
    assert out["miou_seen"] == pytest.approx(1.0)
    assert out["miou_unseen_any_foreground"] == pytest.approx(8 / 12)
    assert out["unseen_pixels_as_foreground"] == pytest.approx(8 / 12)
    # 64 - 12 star pixels are scored; one background pixel is wrong
    assert out["pixel_accuracy"] == pytest.approx(51 / 52)


def test_wrong_class_on_a_seen_instance_scores_zero():
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 2:6, 0:3] = 2  # the circle's pixels called "square"
    out = evaluate_unet(_FixedPrediction(pred, (0, 1, 2)), _scene(), min_area=1)
    assert out["miou_seen"] == 0.0 and out["miou_seen_any_foreground"] == pytest.approx(1.0)


def test_a_few_steps_reduce_the_loss():
    cfg = UNetTrainConfig(
        resolution=32, steps=40, batch_size=8, chunk_size=64, width=8, depth=2, lr=5e-3, seed=0
    )
    model, losses = train_unet(cfg, progress=False)
    assert len(losses) == 40 and not model.training
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match=r"unknown holdout classes \['dragon'\]"):
        UNetTrainConfig(holdout=("dragon",))
    with pytest.raises(ValueError, match="leaves no class"):
        UNetTrainConfig(holdout=CLASSES)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        UNetTrainConfig(steps=0)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth"):
        UNetTrainConfig(resolution=100, depth=3)


def test_command_line_trains_evaluates_and_ships(tmp_path, monkeypatch):
    import json

    import teachkit.pretrained as pretrained
    from teachkit.sam.cli import main
    from teachkit.sam.config import seen_class_ids

    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "shipped")
    out = tmp_path / "run"
    flags = (
        "unet --steps 2 --batch-size 2 --chunk-size 2 --resolution 32 --width 4 --depth 2 "
        "--eval-scenes 2 --ship unet_test --no-progress"
    )
    main([*flags.split(), "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"miou_seen", "pixel_accuracy"} <= set(metrics["evaluation"])
    card = pretrained.ModelCard(**json.loads((tmp_path / "shipped" / "unet_test.json").read_text()))
    assert card.name == "unet_test" and "unet --steps 2" in card.command
    # the fp16 file loads strictly into a fresh U-Net of the seen classes
    model = UNet(seen_class_ids(("star", "heart", "arrow")), width=4, depth=2)
    state = torch.load(tmp_path / "shipped" / "unet_test.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
