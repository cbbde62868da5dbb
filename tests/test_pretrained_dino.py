"""load_shipped_dino: a shipped DINO backbone and its exact random initialisation."""

from __future__ import annotations

import pytest
import torch

from teachkit import pretrained
from teachkit.dino.config import DINOConfig
from teachkit.dino.export import build_run_backbone
from teachkit.dino.shipped import load_shipped_dino

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

DINO_MODELS = [n for n in pretrained.available() if pretrained.load_card(n).config.get("arch")]


@pytest.mark.parametrize("name", ["dino_cnn_shapes", "dino_vit_nano_critters"])
def test_trained_holds_the_shipped_weights_and_random_init_is_the_run_start(name):
    assert name in DINO_MODELS
    trained, random_init, card = load_shipped_dino(name)
    assert card.name == name and not trained.training and not random_init.training
    shipped = torch.load(pretrained.SHIPPED_DIR / f"{name}.pt", weights_only=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(value, shipped[key].to(value.dtype)), key
    rebuilt = build_run_backbone(DINOConfig.from_dict(card.config)).state_dict()
    initial = random_init.state_dict()
    assert rebuilt.keys() == initial.keys()
    assert all(torch.equal(rebuilt[k], initial[k]) for k in rebuilt)
    differs = [k for k, v in trained.state_dict().items() if not torch.equal(v, initial[k])]
    assert len(differs) > len(initial) // 2  # training moved (nearly) every tensor


def test_a_card_without_a_dino_config_is_refused():
    other = next(n for n in pretrained.available() if n not in DINO_MODELS)
    with pytest.raises(ValueError, match="records no DINO config"):
        load_shipped_dino(other)
