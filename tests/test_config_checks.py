"""Every run config checks every field where it is made (issue 22, bad inputs): a wrong
type is a TypeError, a value out of range a ValueError, each naming the field and what
was expected; the shipped cards' configs and the defaults still pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from teachkit.data.critters import CrittersConfig
from teachkit.data.shapes import ShapesConfig
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.config import DINOConfig
from teachkit.infra.config_checks import check_pair, check_range
from teachkit.pretrained import SHIPPED_DIR
from teachkit.sam.config import SamTrainConfig
from teachkit.sam.unet import UNetTrainConfig

CONFIGS = (CrittersConfig, ShapesConfig, MultiCropConfig, DINOConfig, SamTrainConfig,
           UNetTrainConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_the_defaults_pass(cls):
    cls()


@pytest.mark.parametrize(
    "cls,kwargs,error,message",
    [
        # bool is an int in Python: refused where a count or a size is expected
        (DINOConfig, {"batch_size": True}, TypeError, "batch_size must be an integer, got True"),
        (CrittersConfig, {"clutter": (True, 4)}, TypeError, r"clutter\[0\] must be an integer"),
        (SamTrainConfig, {"steps": 2.0}, TypeError, "steps must be an integer, got 2.0"),
        (DINOConfig, {"max_steps": 1.5}, TypeError, "max_steps must be an integer or None"),
        (DINOConfig, {"centering": 1}, TypeError, "centering must be True or False, got 1"),
        (ShapesConfig, {"shortcuts": "yes"}, TypeError, "shortcuts must be True or False"),
        (DINOConfig, {"lr": "5e-4"}, TypeError, "lr must be a number, got '5e-4'"),
        (DINOConfig, {"precision": 16}, TypeError, "precision must be a string, got 16"),
        (SamTrainConfig, {"holdout": "star"}, TypeError, "holdout must be a tuple of str"),
        (MultiCropConfig, {"mean": ("a", 0.4, 0.4)}, TypeError, r"mean\[0\] must be a number"),
        # not finite
        (DINOConfig, {"lr": float("nan")}, ValueError, "lr must be a finite number, got nan"),
        (CrittersConfig, {"cast": float("inf")}, ValueError, "cast must be a finite number"),
        (MultiCropConfig, {"crop_ratio": (0.75, float("inf"))}, ValueError,
         r"crop_ratio\[1\] must be a finite number"),
        (UNetTrainConfig, {"weight_decay": float("nan")}, ValueError, "weight_decay must be a fin"),
        # ranges
        (CrittersConfig, {"saturation": (0.5, 1.5)}, ValueError,
         r"saturation must be \(min, max\) with 0 <= min <= max <= 1, got \(0.5, 1.5\)"),
        (CrittersConfig, {"value": (-0.1, 0.5)}, ValueError, "value must be"),
        (CrittersConfig, {"hue_spread": 0.7}, ValueError, r"hue_spread must be in \[0, 0.5\]"),
        (CrittersConfig, {"noise_std": -0.1}, ValueError, "noise_std must be >= 0, got -0.1"),
        (ShapesConfig, {"noise_std": -1.0}, ValueError, "noise_std must be >= 0"),
        (ShapesConfig, {"stripe_amplitude": (0.1, 2.0)}, ValueError, "stripe_amplitude must be"),
        (DINOConfig, {"drop_path_rate": 1.0}, ValueError, r"drop_path_rate must be in \[0, 1\)"),
        (DINOConfig, {"center_momentum": 1.5}, ValueError, r"center_momentum must be in \[0, 1\]"),
        (DINOConfig, {"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
        (DINOConfig, {"arch": "vgg"}, ValueError, "unknown arch 'vgg'; expected one of"),
        (DINOConfig, {"seed": 2**70}, ValueError, "seed must be a 64-bit integer"),
        (SamTrainConfig, {"focal_alpha": 2.0}, ValueError, r"focal_alpha must be -1 .*\[0, 1\]"),
        (SamTrainConfig, {"box_noise": -0.1}, ValueError, "box_noise must be >= 0"),
        (UNetTrainConfig, {"nest_probability": 1.5}, ValueError, "nest_probability must be in"),
        # (min, max) pairs: order and length
        (CrittersConfig, {"lighting": (1.2, 0.8)}, ValueError,
         r"lighting must be \(min, max\) with 0 <= min <= max, got \(1.2, 0.8\)"),
        (CrittersConfig, {"clutter": (16, 10)}, ValueError, r"clutter must be \(min, max\)"),
        (ShapesConfig, {"distractors": (6, 3)}, ValueError, r"distractors must be \(min, max\)"),
        (CrittersConfig, {"radius": (0.2,)}, ValueError,
         r"radius must be a tuple of 2 floats, got \(0.2,\)"),
        (MultiCropConfig, {"global_crops_scale": (0.4, 0.6, 1.0)}, ValueError,
         "global_crops_scale must be a tuple of 2 floats"),
        (MultiCropConfig, {"blur_p": (1.0, 0.5)}, ValueError, "blur_p must be a tuple of 3 floats"),
        # a nested config
        (DINOConfig, {"crops": "small"}, TypeError,
         r"crops must be a MultiCropConfig \(or a dict of its fields\), got 'small'"),
        (DINOConfig, {"crops": {"local_crops": 2}}, ValueError,
         r"crops has unknown fields \['local_crops'\]; expected MultiCropConfig fields"),
    ],
)
def test_a_bad_field_is_named_with_what_was_expected(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(**kwargs)


def test_numbers_are_taken_in_any_form_that_means_the_value():
    cfg = DINOConfig(lr=1, clip_grad=0, epochs=np.int64(30), crops={"local_crops_number": 2})
    assert cfg.lr == 1 and cfg.clip_grad == 0
    assert type(cfg.epochs) is int and cfg.epochs == 30  # a NumPy integer becomes an int
    assert cfg.crops == MultiCropConfig(local_crops_number=2)  # a dict of fields converts
    assert DINOConfig.from_dict(cfg.to_dict()) == cfg
    assert DINOConfig(out_dir=Path("runs") / "a").out_dir == str(Path("runs") / "a")
    crops = MultiCropConfig(global_crops_scale=[0.3, 1], blur_p=[1, 0, 0.5])  # JSON lists
    assert crops.global_crops_scale == (0.3, 1.0) and crops.blur_p == (1.0, 0.0, 0.5)
    shapes = ShapesConfig(radius=[0.1, 0.25], distractors=[2, 4])
    assert shapes == ShapesConfig(radius=(0.1, 0.25), distractors=(2, 4))
    assert SamTrainConfig(holdout=["star"]).holdout == ("star",)
    assert UNetTrainConfig(holdout=["star"]).holdout == ("star",)


def test_every_shipped_config_and_data_variant_still_builds():
    built = 0
    for card in sorted(SHIPPED_DIR.glob("*.json")):
        values = json.loads(card.read_text())
        if "arch" in values.get("config", {}):
            DINOConfig.from_dict(values["config"])
            built += 1
        CrittersConfig(**(values.get("data_variant") or {}))
    assert built >= 10


def test_range_and_pair_helpers_name_the_bounds():
    check_range("p", 0.0, low=0, high=1)
    check_range("lr", 1e-3, low=0, low_open=True)
    with pytest.raises(ValueError, match=r"lr must be > 0, got 0.0"):
        check_range("lr", 0.0, low=0, low_open=True)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got nan"):
        check_range("p", float("nan"), low=0, high=1)
    check_pair("r", (0.1, 0.1), low=0, high=0.5, low_open=True)
    with pytest.raises(ValueError, match=r"r must be \(min, max\) with 0 < min <= max <= 0.5"):
        check_pair("r", (0.0, 0.2), low=0, high=0.5, low_open=True)
