"""Shipping a DINO run: the card's numbers are measured, the weights reload, the command
line records what it ran."""

from __future__ import annotations

import json

import pytest
import torch

from teachkit.dino.config import DINOConfig
from teachkit.dino.export import build_run_backbone, evaluate_backbone, load_run, ship_run
from teachkit.pretrained import ModelCard
from teachkit.train import main

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A two-step ViT-nano run through the command line."""
    out = tmp_path_factory.mktemp("run")
    flags = "--profile quick --arch vit_nano --conv-stem --epochs 1 --steps-per-epoch 2 "
    flags += "--batch-size 4 --warmup-epochs 0 --local-crops-number 1 --out-dim 64 "
    flags += "--hidden-dim 32 --bottleneck-dim 16 --no-eval --no-progress --lr 0.5"
    main(["dino", *flags.split(), "--out", str(out)])
    return out


def test_load_run_gives_the_teacher_backbone_and_the_recorded_facts(run_dir):
    backbone, config, metrics = load_run(run_dir)
    assert config.conv_stem and config.arch == "vit_nano" and backbone.patch_embed.conv_stem
    teacher = torch.load(run_dir / "checkpoint.pt", weights_only=True)["teacher"]
    torch.testing.assert_close(backbone.cls_token, teacher["backbone.cls_token"])
    assert "python -m teachkit.train dino --profile quick" in metrics["run"]["command"]
    assert metrics["run"]["hardware"] and metrics["epochs"][-1]["elapsed_s"] > 0
    # the random initialisation is rebuilt exactly from the seed: the run moved away from it
    fresh = build_run_backbone(config)
    assert not torch.allclose(fresh.cls_token, backbone.cls_token)
    assert torch.equal(fresh.pos_embed, build_run_backbone(config).pos_embed)


def test_ship_run_writes_weights_and_a_card_whose_numbers_reload(run_dir, tmp_path):
    card = ship_run(run_dir, "tiny_dino", "a test run", directory=tmp_path, n_train=100, n_test=50)
    saved = ModelCard(**json.loads((tmp_path / "tiny_dino.json").read_text()))
    assert saved.results == card.results and (tmp_path / "tiny_dino.pt").is_file()
    assert {
        "knn_top1_percent",
        "pixels_knn_top1_percent",
        "random_init_knn_top1_percent",
        "attention_jaccard_best_head",
        "attention_jaccard_head_average",
        "random_init_attention_jaccard_head_average",
        "final_teacher_entropy",
    } <= card.results.keys()
    assert "python -m teachkit.train dino" in card.command and card.wall_time_s > 0
    assert card.init == "" and "Started from" not in (tmp_path / "tiny_dino.md").read_text()
    assert len(card.history["step"]) == 2 and card.history["epoch_step"] == [2]
    # the shipped fp16 weights reproduce the card's k-NN accuracy
    model = build_run_backbone(DINOConfig.from_dict(card.config))
    state = torch.load(tmp_path / "tiny_dino.pt", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    again = evaluate_backbone(model, n_train=100, n_test=50)
    assert abs(again["knn_top1_percent"] - card.results["knn_top1_percent"]) <= 2.0


def test_a_run_stopped_before_its_schedule_ends_says_so_on_its_card(tmp_path):
    """A run split over sessions (or copied while it trains) ships as it stands: the card's
    command stops where the run stopped, and its data line gives the schedule's length."""
    out = tmp_path / "run"
    flags = "--profile quick --arch vit_nano --epochs 2 --steps-per-epoch 2 --batch-size 4 "
    flags += "--warmup-epochs 0 --local-crops-number 1 --out-dim 64 --hidden-dim 32 "
    flags += "--bottleneck-dim 16 --no-eval --no-progress --max-steps 3"
    main(["dino", *flags.split(), "--out", str(out)])
    card = ship_run(out, "stopped", "stopped", directory=tmp_path, n_train=40, n_test=20)
    assert card.command.endswith("--max-steps 3") and card.command.count("--max-steps") == 1
    assert "3 of 4 scheduled steps" in card.data and card.config["max_steps"] == 3
    # The same run finished: no stop on its card.
    main(["dino", *flags.replace("--max-steps 3", "").split(), "--out", str(out)])
    card = ship_run(out, "finished", "finished", directory=tmp_path, n_train=40, n_test=20)
    assert "--max-steps" not in card.command and "4 steps;" in card.data


def test_a_run_that_started_from_a_shipped_model_names_it_on_its_card(run_dir, tmp_path):
    """A second-stage run (``python -m teachkit.train dino --init NAME``) records its start
    in metrics.json's run info; the card keeps the name and says it."""
    import shutil

    run = shutil.copytree(run_dir, tmp_path / "second_stage")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["run"]["init"] = {"name": "dino_vit_nano_critters_full_context"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    card = ship_run(run, "tiny_second", "a second stage", directory=tmp_path,
                    n_train=100, n_test=50, history_only=True)
    assert card.init == "dino_vit_nano_critters_full_context"
    assert "**Started from**: `dino_vit_nano_critters_full_context`" in (
        tmp_path / "tiny_second.md").read_text()


def test_history_only_ships_no_weights_and_missing_facts_are_named(run_dir, tmp_path):
    ship_run(
        run_dir, "curves", "ablation", directory=tmp_path, history_only=True, n_train=100, n_test=50
    )
    assert (tmp_path / "curves.json").is_file() and not (tmp_path / "curves.pt").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    (bare / "metrics.json").write_text(json.dumps({k: metrics[k] for k in ("config", "steps")}))
    with pytest.raises(
        ValueError, match=r"does not record \['command', 'hardware', 'wall_time_s'\]"
    ):
        ship_run(bare, "x", "y", directory=tmp_path)
    with pytest.raises(
        FileNotFoundError, match="checkpoint.pt is missing: is .* a DINO run directory"
    ):
        ship_run(tmp_path / "nowhere", "x", "y", directory=tmp_path)


def test_a_name_that_is_a_path_is_refused_before_anything_runs(run_dir, tmp_path):
    for name in ("../../x", "runs/x", "", ".."):
        with pytest.raises(ValueError, match=r"checkpoint name .* must be a plain file name"):
            ship_run(run_dir, name, "d", directory=tmp_path / "shipped")
    assert not (tmp_path / "shipped").exists() and not (tmp_path.parent / "x.json").exists()


def _copy(run_dir, tmp_path):
    import shutil

    return shutil.copytree(run_dir, tmp_path / "copy")


def test_an_unreadable_metrics_json_or_checkpoint_names_the_file(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    (run / "metrics.json").write_text('{"config": {"arch": ')
    with pytest.raises(ValueError, match=f"{run / 'metrics.json'} is not readable JSON"):
        load_run(run)
    (run / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{run / 'metrics.json'} must hold a JSON object"):
        ship_run(run, "x", "d", directory=tmp_path)
    (run / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.json is missing"):
        load_run(run)
    (run / "metrics.json").write_text((run_dir / "metrics.json").read_text())
    torch.save({"step": 3}, run / "checkpoint.pt")  # readable, but no DINO run
    with pytest.raises(ValueError, match=f"{run / 'checkpoint.pt'} is not a DINO checkpoint"):
        load_run(run)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["config"]["batch_size"] = 0
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(ValueError, match="checkpoint.pt: its config is not a DINOConfig "
                                         r"\(batch_size must be >= 1"):
        load_run(run)
    (run / "checkpoint.pt").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="checkpoint.pt is unreadable"):
        with pytest.raises(ValueError, match=f"no readable checkpoint in {run}: "):
            load_run(run)


def test_an_unreadable_checkpoint_ships_the_one_before_it_with_its_own_history(run_dir, tmp_path):
    """As a resumed run does (teachkit.infra.checkpoint.load_latest): checkpoint.pt.prev."""
    run = _copy(run_dir, tmp_path)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["history"]["steps"] = ckpt["history"]["steps"][:1]  # an earlier save: one step
    torch.save(ckpt, run / "checkpoint.pt.prev")
    (run / "checkpoint.pt").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match=r"checkpoint.pt is unreadable \(\w+"):
        with pytest.warns(UserWarning, match=r"shipping the checkpoint before it, .*\.prev"):
            backbone, _, metrics = load_run(run)
    torch.testing.assert_close(backbone.cls_token, ckpt["teacher"]["backbone.cls_token"])
    assert len(metrics["steps"]) == 1 and metrics["run"]["command"]
    (run / "checkpoint.pt").unlink()  # killed between the two renames of a save
    with pytest.warns(UserWarning, match="shipping the checkpoint before it"):
        card = ship_run(run, "prev", "d", directory=tmp_path, history_only=True,
                        n_train=100, n_test=50)
    assert card.history["step"] == [0]


def test_a_start_recorded_by_name_is_named_on_the_card(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["run"]["init"] = "dino_cnn_critters"
    (run / "metrics.json").write_text(json.dumps(metrics))
    card = ship_run(run, "named", "d", directory=tmp_path, history_only=True,
                    n_train=100, n_test=50)
    assert card.init == "dino_cnn_critters"
