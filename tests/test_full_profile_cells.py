"""The full-profile branches of the chapters that load official weights, run offline.

The committed outputs come from the quick profile, so nbval never runs the cells under
``if not P.is_quick``. This test runs every code cell of Chapters 4, 6 and 7 with
``PROFILE = "full"``, official-size models with *random* weights standing in for the
downloads (SAM ViT-B, DINO ViT-S/8), and the quick profile's data sizes, so a typo or a
shape error in a full-profile cell fails here instead of on a student's Colab GPU. The
final assertion cell (quick-profile numbers) is skipped. Several minutes on 2 CPU cores,
so opt-in: ``TEACHKIT_SLOW_TESTS=1``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

SLOW = os.environ.get("TEACHKIT_SLOW_TESTS") == "1"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = ["04_attention_that_segments", "06_sam_encoder_to_decoder", "07_dino_plus_sam"]


@pytest.fixture
def offline_full_profile(monkeypatch):
    """Random official-size weights for the hub, quick sizes, no figures on screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import teachkit.hub as hub
    from teachkit.models.vit import vit_small
    from teachkit.profiles import Profile
    from teachkit.sam import build_sam

    random_weights = {
        "sam_vit_b": build_sam("vit_b").state_dict(),
        "dino_vits8": vit_small(patch_size=8).state_dict(),
    }
    served: list[str] = []

    def load_state_dict(source, **kwargs):  # a name or a registry entry, as hub.load passes it
        name = getattr(source, "name", source)
        served.append(name)
        assert name in random_weights, name
        return random_weights[name]

    def download(*args, **kwargs):
        raise AssertionError("the chapters load official weights through hub.load")

    monkeypatch.setattr(hub, "download", download)
    monkeypatch.setattr(hub, "load_state_dict", load_state_dict)
    monkeypatch.setattr(Profile, "choose", lambda self, *, quick, full: quick)
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    return served


@pytest.mark.skipif(not SLOW, reason="minutes on CPU; set TEACHKIT_SLOW_TESTS=1")
@pytest.mark.parametrize("stem", CHAPTERS)
def test_full_profile_cells_run(stem, offline_full_profile):
    cells = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert "PROFILE = None" in code[1]
    namespace: dict = {}
    for i, src in enumerate(code[:-1]):  # the last cell asserts quick-profile numbers
        exec(
            compile(src.replace("PROFILE = None", 'PROFILE = "full"'), f"{stem}[{i}]", "exec"),
            namespace,
        )
    assert not namespace["P"].is_quick
    assert offline_full_profile, "no full-profile cell asked for official weights"
