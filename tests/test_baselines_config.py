"""The baseline commands' configs: every field is a flag, and bad values say what was expected."""

import dataclasses

import pytest

from teachkit.baselines import AutoencoderConfig, ContrastiveConfig, SupervisedConfig
from teachkit.infra.config_fields import flag_values
from teachkit.train import build_parser

CONFIGS = {"autoencoder": AutoencoderConfig, "contrastive": ContrastiveConfig,
           "supervised": SupervisedConfig}


@pytest.mark.parametrize("command", CONFIGS)
def test_the_flags_are_the_config_fields_and_give_its_defaults(command, tmp_path):
    cls = CONFIGS[command]
    args = build_parser().parse_args([command, "--out", str(tmp_path)])
    assert cls(**flag_values(args, cls)) == cls()  # nothing typed: the dataclass defaults
    typed = build_parser().parse_args([command, "--out", str(tmp_path), "--steps", "7",
                                       "--dataset", "critters", "--batch-size", "16"])
    cfg = cls(**flag_values(typed, cls))
    assert (cfg.steps, cfg.dataset, cfg.batch_size) == (7, "critters", 16)
    assert {f.name for f in dataclasses.fields(cls)} <= set(vars(args))


def test_each_command_keeps_its_own_default_length():
    assert (AutoencoderConfig().steps, ContrastiveConfig().steps, SupervisedConfig().steps) == (
        6000, 6000, 1500)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AutoencoderConfig(steps=0), "steps must be >= 1, got 0"),
        (lambda: AutoencoderConfig(code_dim=0), "code_dim must be >= 1, got 0"),
        (lambda: ContrastiveConfig(temperature=float("inf")), "temperature must be a positive"),
        (lambda: SupervisedConfig(dataset="cifar"), "unknown dataset 'cifar'; expected one of"),
        (lambda: SupervisedConfig(arch="vgg"), "unknown arch 'vgg'"),
        (lambda: ContrastiveConfig(arch="vit_nano", patch_size=3), "patch_size must divide"),
        (lambda: SupervisedConfig(lr=-1.0), "lr must be a positive number, got -1.0"),
    ],
)
def test_bad_values_from_python_say_what_was_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()
