"""teachkit.hub.load: one front door that builds and loads every official and shipped model."""

import pytest
import torch

from teachkit import hub, pretrained
from teachkit.dino.shipped import load_shipped_dino
from teachkit.pretrained import ModelCard
from teachkit.sam.build import build_sam

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", pretrained.available())
def test_every_shipped_model_loads_by_its_name_alone(name):
    model, card = hub.load(name)
    assert isinstance(card, ModelCard) and card.name == name
    assert not model.training
    # strictly: the shipped file holds exactly this model's tensors
    shipped = torch.load(pretrained.SHIPPED_DIR / f"{name}.pt", weights_only=True)
    assert shipped.keys() == model.state_dict().keys()


def test_a_shipped_model_is_the_one_the_chapters_build_by_hand():
    tiny, _ = hub.load("sam_tiny_shapes")
    by_hand = build_sam("vit_tiny_shapes")
    pretrained.load_shipped("sam_tiny_shapes", by_hand)
    _same_weights(tiny, by_hand)
    vit, card = hub.load("dino_vit_nano_critters")
    trained, _, same_card = load_shipped_dino("dino_vit_nano_critters")
    _same_weights(vit, trained)
    assert card == same_card
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8).float() / 255
    assert torch.equal(vit(x), trained(x))


@pytest.mark.parametrize("name", ["dino_vits16", "dino_resnet50"])
def test_an_official_name_builds_its_architecture_and_loads_a_local_copy(tmp_path, name):
    entry = hub.get_entry(name)
    reference = hub._official_architecture(entry)
    path = tmp_path / entry.filename
    torch.save(reference.state_dict(), path)  # a file in the official layout
    model, about = hub.load(name, weights=path)
    assert about is entry and not model.training
    _same_weights(model, reference)


def test_wrong_names_and_weights_are_refused_with_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'dino_vitz'; expected an official name .*'sam_vit_b'.*shipped one .*'sam_tiny_shapes'"):
        hub.load("dino_vitz")
    with pytest.raises(ValueError, match="'sam_tiny_shapes' is a shipped model"):
        hub.load("sam_tiny_shapes", weights=tmp_path / "x.pth")
    small = tmp_path / "small.pth"
    torch.save(hub._official_architecture(hub.get_entry("dino_vits16")).state_dict(), small)
    with pytest.raises(ValueError, match=r"shape"):  # ViT-S weights into a ViT-B/16
        hub.load("dino_vitb16", weights=small)


def test_a_card_without_a_course_command_cannot_be_rebuilt(monkeypatch):
    card = pretrained.load_card("unet_shapes")
    card.command = "python benchmarks/some_script.py --out runs/x"
    monkeypatch.setattr(pretrained, "load_card", lambda name: card)
    with pytest.raises(ValueError, match="the card of 'unet_shapes' cannot rebuild its "
                       "architecture: no python -m teachkit.train command in"):
        hub.load("unet_shapes")
