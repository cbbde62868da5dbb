"""Every shipped DINO model was made by one package command, and its card says which.

The card's ``command`` is parsed by the real command line (``python -m teachkit.train``)
and must rebuild the card's config, its critters data variant and its start (``--init``);
it names no machine path, so a reader can paste it as it is.
"""

import dataclasses
import shlex

import pytest

from teachkit import pretrained
from teachkit.data.critters import CrittersConfig
from teachkit.dino.cli import data_variant_from_args, dino_config_from_args
from teachkit.dino.config import FREE_TO_CHANGE, DINOConfig
from teachkit.train import build_parser

DINO_CARDS = [n for n in pretrained.cards()
              if pretrained.load_card(n).config.get("arch")]
PROGRAM = ["python", "-m", "teachkit.train", "dino"]


def _argv(command: str) -> list[str]:
    """The arguments after ``python -m teachkit.train``, environment prefixes dropped."""
    words = shlex.split(command)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]  # OMP_NUM_THREADS=1
    assert words[: len(PROGRAM)] == PROGRAM, f"not a package DINO command: {command}"
    return words[len(PROGRAM) - 1 :]


def test_there_are_dino_cards():
    assert {"dino_cnn_critters", "dino_vit_nano_critters"} <= set(DINO_CARDS)


@pytest.mark.parametrize("name", DINO_CARDS)
def test_the_card_command_rebuilds_the_card(name):
    card = pretrained.load_card(name)
    argv = _argv(card.command)
    for word in argv:
        assert not word.startswith(("/", "~")), f"{name}: machine path {word!r} in its command"
    args = build_parser().parse_args(argv)
    config = dino_config_from_args(args)
    shipped = DINOConfig.from_dict(card.config)
    free = set(FREE_TO_CHANGE)  # where it ran and saved, when it stopped: not the recipe
    ours = {k: v for k, v in config.to_dict().items() if k not in free}
    theirs = {k: v for k, v in shipped.to_dict().items() if k not in free}
    differ = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert not differ, f"{name}: the command gives (command, card) {differ}"
    variant = CrittersConfig(**data_variant_from_args(args))
    assert variant == CrittersConfig(**card.data_variant), name
    assert (args.init or "") == card.init, name


def test_a_config_field_the_command_changes_is_seen():
    """The comparison above can fail: a changed flag gives another config."""
    card = pretrained.load_card("dino_cnn_critters")
    args = build_parser().parse_args(_argv(card.command) + ["--lr", "0.1"])
    assert dino_config_from_args(args).lr == 0.1
    assert dataclasses.replace(DINOConfig.from_dict(card.config)).lr != 0.1
