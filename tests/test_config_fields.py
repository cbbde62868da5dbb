"""Config fields and the flags made from them: one helper for every trainer's settings."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from teachkit.infra.config_fields import add_dataclass_flags, config_field, flag_values


@dataclasses.dataclass
class Settings:
    steps: int = config_field(100, "Optimisation steps.")
    lr: float = config_field(1e-3, "Peak learning rate (100% at the peak).")
    scale: tuple[float, float] = config_field((0.4, 1.0), "Area range of the crops.")
    holdout: tuple[str, ...] | None = config_field(None, "Classes held out.")
    device: str | None = config_field(None, "Where to train.")
    max_steps: int | None = config_field(None, "Stop after this step.")
    centering: bool = config_field(True, "Centre the teacher.")
    precision: str = config_field("auto", "Arithmetic.", choices=("auto", "fp32"))


def parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_dataclass_flags(p, Settings, **kw)
    return p


def test_each_field_becomes_a_typed_flag_that_defaults_to_not_given():
    args = parser().parse_args(
        "--steps 5 --lr 0.1 --scale 0.3 0.9 --holdout star,heart --max-steps 2 "
        "--no-centering --precision fp32".split()
    )
    assert flag_values(args, Settings) == {
        "steps": 5,
        "lr": 0.1,
        "scale": (0.3, 0.9),
        "holdout": ("star", "heart"),
        "max_steps": 2,
        "centering": False,
        "precision": "fp32",
    }
    assert flag_values(parser().parse_args([]), Settings) == {}
    assert parser().parse_args(["--holdout", "none"]).holdout == ()
    assert Settings(**flag_values(args, Settings)).scale == (0.3, 0.9)


def test_help_text_default_choices_and_skipped_fields():
    p = parser(skip=("device",), default_label="config default")
    lr = next(a for a in p._actions if a.dest == "lr")
    assert lr.help == "Peak learning rate (100%% at the peak). (config default: 0.001)"
    help_text = p.format_help()  # argparse reads the %% as a per cent sign
    assert "--device" not in help_text and "--no-centering" in help_text
    with pytest.raises(SystemExit):
        parser().parse_args(["--precision", "fp8"])
    field = {f.name: f for f in dataclasses.fields(Settings)}["precision"]
    assert field.metadata == {"help": "Arithmetic.", "choices": ("auto", "fp32")}
