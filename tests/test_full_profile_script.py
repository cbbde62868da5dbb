"""benchmarks/full_profile.py, the GPU check of every full-profile path under a T4's limits
(issue 14): its pieces on the CPU, and its smoke mode end to end on one chapter."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from teachkit.data.cifar import cifar10_classes, load_cifar10

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SLOW = os.environ.get("TEACHKIT_SLOW_TESTS") == "1"


def full_profile():
    spec = importlib.util.spec_from_file_location("full_profile", BENCHMARKS / "full_profile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("full_profile", module)
    spec.loader.exec_module(module)
    return module


fp = full_profile()


def test_every_notebook_is_checked_memory_heavy_first():
    stems = sorted(p.stem for p in fp.NOTEBOOKS.glob("*.ipynb"))
    assert sorted(fp.ORDER) == stems
    assert fp.ORDER[0] == "06_sam_encoder_to_decoder"
    assert fp.select_notebooks("06, 01") == [
        "06_sam_encoder_to_decoder",
        "01_unsupervised_vs_self_supervised",
    ]
    with pytest.raises(ValueError, match="unknown notebook '99'"):
        fp.select_notebooks("99")


def test_cells_run_the_full_profile_without_the_quick_assertions():
    cells = fp.full_profile_cells("06_sam_encoder_to_decoder")
    raw = json.loads((fp.NOTEBOOKS / "06_sam_encoder_to_decoder.ipynb").read_text())["cells"]
    assert len(cells) == sum(c["cell_type"] == "code" for c in raw) - 1
    assert 'PROFILE = "full"' in cells[1] and "PROFILE = None" not in cells[1]
    assert "click_scores" in "".join(cells)  # Chapter 6's clicks decoded in batches


def test_cifar_like_files_load_through_the_full_profile_path(tmp_path):
    fp.write_cifar_like(tmp_path, per_train_file=7, n_test=5)
    images, labels = load_cifar10(tmp_path, train=True, download=True)  # no download: present
    test_images, _ = load_cifar10(tmp_path, train=False)
    assert images.shape == (35, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.min() >= 0 and labels.max() <= 9 and test_images.shape == (5, 3, 32, 32)
    assert cifar10_classes(tmp_path) == list(fp.CIFAR_CLASSES)


def test_offline_full_profile_serves_random_weights_and_restores(tmp_path):
    import matplotlib.pyplot as plt

    import teachkit.hub as hub
    from teachkit.dino import trainer
    from teachkit.hub import load_into
    from teachkit.models import vit
    from teachkit.pretext import autoencoder, contrastive
    from teachkit.profiles import Profile
    from teachkit.sam import build

    def patched():
        return (
            hub.download,
            plt.show,
            Profile.choose,
            vit.VIT_SIZES,
            build.SAM_CONFIGS,
            autoencoder.train_autoencoder,
            contrastive.train_contrastive,
            trainer.train_dino,
        )

    originals = patched()
    cwd, served = Path.cwd(), []
    with fp.offline_full_profile(tmp_path, smoke=True, served=served):
        assert Path.cwd() == tmp_path / "cwd"
        assert os.environ["TEACHKIT_DATA"] == str(tmp_path / "data")
        state = hub.load_state_dict("dino_vits8", verify=False)  # the real loader, offline
        model = load_into(vit.vit_small(patch_size=8), state)  # smoke: a small stand-in
        assert model.embed_dim == 96 and vit.build_vit("vit_small").depth == 2
        sam = build.build_sam("vit_b", hub.download("sam_vit_b"))  # strict load
        assert sam.image_encoder.img_size == 1024
        assert (
            Profile("full", torch.device("cpu"), None, "cifar10", False).choose(quick=1, full=2)
            == 1
        )
        assert trainer.train_dino.__wrapped__ is originals[-1]  # smoke: short trainings
    assert served == ["dino_vits8", "sam_vit_b"]
    assert Path.cwd() == cwd
    assert patched() == originals
    assert build.SAM_CONFIGS["vit_b"].encoder_embed_dim == 768


def test_smoke_shortens_the_trainings_full_branches_size_by_hand(monkeypatch):
    """Chapter 1's 6,000-step trainings and Chapter 3's 65,536-prototype head are written
    without P.choose; the smoke makes them a few steps and a small head."""
    from teachkit.dino import trainer
    from teachkit.dino.config import DINOConfig
    from teachkit.pretext import autoencoder, contrastive

    got = []
    monkeypatch.setattr(trainer, "train_dino", lambda cfg, data, **kw: got.append(cfg))
    for module, name in [(autoencoder, "train_autoencoder"), (contrastive, "train_contrastive")]:
        monkeypatch.setattr(module, name, lambda *a, steps, **kw: got.append(steps))
    fp._short_trainings(lambda owner, name, value: monkeypatch.setattr(owner, name, value))
    trainer.train_dino(DINOConfig(out_dim=65536, batch_size=256), [], progress=False)
    autoencoder.train_autoencoder(None, [], steps=6000, device="cpu")
    contrastive.train_contrastive(None, [], None, steps=3)
    dino_cfg, ae_steps, cl_steps = got
    assert dino_cfg.out_dim == fp.SMOKE_OUT_DIM == 1024 and dino_cfg.batch_size == 256
    assert (ae_steps, cl_steps) == (fp.SMOKE_MAX_STEPS, 3)


def test_report_marks_unfinished_cells_and_summarises(tmp_path):
    log = tmp_path / "cells.jsonl"
    stem = "02_vision_transformers"
    cells = ["a = 1", "b = 2", "c = 3"]
    done = fp.CellResult(stem, 0, "a = 1", "pass", 1.0, 0.5, 0.75)
    oom = fp.CellResult(stem, 1, "b = 2", "oom", 2.0, 14.9, 15.0, "OutOfMemoryError: ...")
    lines = [{"event": "start", "notebook": stem, "cell": 0}]
    lines += [{"event": "done", **fp.asdict(done)}, {"event": "start", "notebook": stem, "cell": 1}]
    lines += [{"event": "done", **fp.asdict(oom)}, {"event": "start", "notebook": stem, "cell": 2}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = fp.collect(log, stem, cells, ended="timeout")
    assert [r.status for r in results] == ["pass", "oom", "timeout"]
    summary = fp.summarise(stem, results, 3.0, [])
    assert summary["status"] == "OOM/TIMEOUT" and summary["peak_reserved_gib"] == 15.0
    machine = {"torch": "x", "date": "d"}
    report = fp.Report(config={"smoke": False, "cap_gib": 15.0}, machine=machine)
    report.cells, report.notebooks = results, {stem: summary}
    table = fp.render_markdown(report)
    assert "| 02 | 1 | `b = 2` | oom | 2.0 | 14.90 | 15.00 |" in table
    assert fp.collect(tmp_path / "missing.jsonl", stem, cells, "fail")[0].status == "not run"


@pytest.mark.skipif(not SLOW, reason="about 2 minutes on 2 CPU cores; TEACHKIT_SLOW_TESTS=1")
def test_smoke_mode_runs_chapter_6_end_to_end(tmp_path):
    result = fp.main(["--smoke", "--notebooks", "06", "--out", str(tmp_path / "out")])
    nb = result["notebooks"]["06_sam_encoder_to_decoder"]
    assert nb["status"] == "PASS" and nb["served_weights"] == ["sam_vit_b"], nb
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["cells.jsonl", "full_profile.json", "full_profile.md"]
