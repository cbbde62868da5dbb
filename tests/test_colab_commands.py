"""The training commands that book/colab.md tells a student to run parse, and work on a
fresh Colab runtime: one that trains on CIFAR-10 must download it (issue 14: the Google
Drive command lacked ``--download`` and raised ``FileNotFoundError``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from teachkit.train import PRESETS, build_parser

COLAB = Path(__file__).resolve().parents[1] / "book" / "colab.md"
COMMANDS = re.findall(r"^!?python -m teachkit\.train (.+)$", COLAB.read_text(), re.MULTILINE)


def test_colab_page_has_training_commands():
    assert COMMANDS, "book/colab.md shows no `python -m teachkit.train` command"


@pytest.mark.parametrize("command", COMMANDS)
def test_colab_command_fetches_the_data_it_trains_on(command):
    args = build_parser().parse_args(shlex.split(command))
    presets = PRESETS.get(args.command, {}).get(getattr(args, "profile", ""), {})
    dataset = getattr(args, "dataset", None) or presets.get("dataset")
    if dataset == "cifar10":
        assert args.download or args.data_root, (
            f"`{command}` trains on CIFAR-10 on a fresh runtime: it needs --download"
        )
    if "/content/drive/" in command:  # the Drive example keeps its checkpoints there
        assert args.out.startswith("/content/drive/MyDrive/")
