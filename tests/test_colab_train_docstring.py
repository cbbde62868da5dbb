"""The Colab example of ``python -m teachkit.train``'s docstring works on a fresh runtime.

Like book/colab.md's commands (tests/test_colab_commands.py): a full-profile run trains
on CIFAR-10, which a fresh Colab runtime does not have, so it needs ``--download``
(issue 14).
"""

from __future__ import annotations

import re
import shlex

import teachkit.train
from teachkit.train import PRESETS, build_parser


def colab_examples() -> list[str]:
    """The command lines under the docstring's ``# Colab`` comment."""
    doc = teachkit.train.__doc__
    block = re.search(r"# Colab[^\n]*\n(?:\s*#[^\n]*\n)*((?:\s*python[^\n]*\n)+)", doc)
    assert block, "the docstring has no Colab example"
    lines = re.findall(r"python -m teachkit\.train (.+)", block.group(1))
    return [line.strip() for line in lines]


def test_colab_example_downloads_cifar10():
    for command in colab_examples():
        args = build_parser().parse_args(shlex.split(command))
        presets = PRESETS.get(args.command, {}).get(getattr(args, "profile", ""), {})
        dataset = getattr(args, "dataset", None) or presets.get("dataset")
        assert dataset != "cifar10" or args.download or args.data_root, command
        assert args.out.startswith("/content/drive/MyDrive/"), command
