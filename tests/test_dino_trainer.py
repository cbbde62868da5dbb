"""The DINO trainer: a tiny run, exact resume after a crash, 2-process DDP equivalence,
non-finite losses, the k-NN monitor, schedules, and the command line."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from teachkit.data.stream import ImageBatches
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.batched_augment import BatchedMultiCrop
from teachkit.dino.cli import dino_config_from_args
from teachkit.dino.config import DINOConfig
from teachkit.dino.schedules import clip_gradients, cosine_schedule, get_params_groups
from teachkit.dino.trainer import train_dino
from teachkit.infra import distributed as dist
from teachkit.infra.run import NonFiniteLossError
from teachkit.train import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class TinyBackbone(nn.Module):
    """conv 3->8 (stride 2), ReLU, global mean, linear to 16: works at 16 and 8 px."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_dim = 16
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def tiny_config(**overrides) -> DINOConfig:
    values = dict(
        out_dim=64,
        hidden_dim=32,
        bottleneck_dim=16,
        batch_size=8,
        epochs=2,
        steps_per_epoch=3,
        warmup_epochs=1,
        lr=0.02,
        momentum_teacher=0.9,
        log_every=1,
        crops=MultiCropConfig(global_size=16, local_size=8, local_crops_number=2),
        device="cpu",
        seed=0,
    )
    values.update(overrides)
    return DINOConfig(**values)


def tiny_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def backbone(seed: int = 0) -> TinyBackbone:
    torch.manual_seed(seed)
    return TinyBackbone()


def test_a_tiny_run_trains_records_and_writes_its_files(tmp_path):
    cfg = tiny_config(out_dir=str(tmp_path), checkpoint_every=2)
    history = train_dino(cfg, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    assert [r["step"] for r in history.steps] == list(range(6))
    keys = {
        "loss",
        "teacher_entropy",
        "batch_entropy",
        "kl",
        "center_norm",
        "lr",
        "wd",
        "momentum",
        "teacher_temp",
    }
    assert keys <= history.steps[0].keys()
    assert all(math.isfinite(r["loss"]) for r in history.steps)
    assert [e["epoch"] for e in history.epochs] == [0, 1]
    # schedules: linear lr warm-up over epoch 0 (lr x 8 / 256 at its end), wd and momentum up
    lr = history.column("lr")
    assert lr[0] == 0.0 and lr[2] == pytest.approx(0.02 * 8 / 256)
    assert np.all(np.diff(history.column("wd")) > 0)
    assert np.all(np.diff(history.column("momentum")) > 0)
    student, teacher = history.student, history.teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not torch.allclose(student.backbone.fc.weight, teacher.backbone.fc.weight)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["steps"]) == 6 and metrics["config"]["out_dim"] == 64
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "checkpoint.pt.prev").is_file()


def test_last_layer_moves_only_after_the_frozen_epoch():
    def after(max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = tiny_config(steps_per_epoch=2, norm_last_layer=False, max_steps=max_steps)
        h = train_dino(cfg, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
        last = h.student.head.last_layer.parametrizations.weight.original1
        return last.detach().clone(), h.student.backbone.fc.weight.detach().clone()

    (last1, fc1), (last2, fc2), (last3, _) = after(1), after(2), after(3)
    assert not torch.equal(fc1, fc2)  # the backbone trains from step 0
    assert torch.equal(last1, last2)  # the last layer is frozen in epoch 0
    assert not torch.equal(last2, last3)  # and trains in epoch 1


def test_without_ema_the_teacher_is_a_copy_of_the_student():
    """The "no momentum teacher" ablation: momentum 0 throughout."""
    cfg = tiny_config(momentum_teacher=0.0, momentum_teacher_end=0.0)
    h = train_dino(cfg, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    assert h.column("momentum") == [0.0] * 6
    pairs = zip(h.student.state_dict().items(), h.teacher.state_dict().values(), strict=True)
    for (name, s), t in pairs:
        torch.testing.assert_close(s, t, msg=name)
    with pytest.raises(ValueError, match=r"momentum_teacher_end must lie in \[0, 1\]"):
        tiny_config(momentum_teacher_end=1.5)


def test_channels_last_is_the_same_run_rounded_differently(tmp_path):
    """``channels_last`` changes the weights' memory order, not the maths: the losses
    follow the default run's to float rounding, and the run resumes as usual."""
    data = ImageBatches(tiny_images(), 8)
    plain = train_dino(tiny_config(), data, backbone=backbone(), progress=False)
    cfg = tiny_config(channels_last=True, out_dir=str(tmp_path), max_steps=3)
    train_dino(cfg, data, backbone=backbone(), progress=False)
    fast = train_dino(tiny_config(channels_last=True, out_dir=str(tmp_path)), data,
                      backbone=backbone(), progress=False)
    conv = fast.student.backbone.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.teacher.backbone.conv.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(fast.column("loss"), plain.column("loss"), rtol=1e-4)
    torch.testing.assert_close(fast.student.backbone.conv.weight, plain.student.backbone.conv.weight,
                               rtol=1e-4, atol=1e-5)


def test_conv_stem_reaches_the_vit_and_is_refused_for_cnns():
    from teachkit.models.registry import build_backbone

    vit = build_backbone("vit_nano", patch_size=4, img_size=32, conv_stem=True)
    assert vit.patch_embed.conv_stem and vit(torch.zeros(2, 3, 32, 32)).shape == (2, vit.embed_dim)
    with pytest.raises(ValueError, match="conv_stem applies to ViTs only"):
        build_backbone("small_cnn", conv_stem=True)


class Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    cfg = dict(epochs=2, steps_per_epoch=6, checkpoint_every=4)
    full = train_dino(
        tiny_config(out_dir=str(tmp_path / "a"), **cfg),
        ImageBatches(tiny_images(), 8),
        backbone=backbone(),
        progress=False,
    )

    def crash_at_step_5(kind: str, record: dict) -> None:
        if kind == "step" and record["step"] == 5:
            raise Crash  # killed after 6 steps; the last checkpoint is from step 4

    run_b = tiny_config(out_dir=str(tmp_path / "b"), **cfg)
    with pytest.raises(Crash):
        train_dino(
            run_b,
            ImageBatches(tiny_images(), 8),
            backbone=backbone(),
            callbacks=[crash_at_step_5],
            progress=False,
        )
    ran: list[int] = []
    resumed = train_dino(
        run_b,
        ImageBatches(tiny_images(), 8),
        backbone=backbone(),
        callbacks=[lambda kind, r: ran.append(r["step"]) if kind == "step" else None],
        progress=False,
    )
    assert ran == list(range(4, 12))  # it did resume from the step-4 checkpoint
    assert [r["step"] for r in resumed.steps] == list(range(12))
    np.testing.assert_allclose(resumed.column("loss"), full.column("loss"), atol=1e-6)
    diff = 0.0
    for a, b in [(full.student, resumed.student), (full.teacher, resumed.teacher)]:
        for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            diff = max(diff, (x - y).abs().max().item())
    assert diff <= 1e-6, f"max abs weight difference {diff}"


def test_max_steps_stops_with_a_checkpoint_and_the_next_run_continues(tmp_path):
    cfg = tiny_config(out_dir=str(tmp_path), max_steps=2, checkpoint_every=100)
    first = train_dino(cfg, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    assert len(first.steps) == 2 and (tmp_path / "checkpoint.pt").is_file()
    ran: list[int] = []
    rest = train_dino(
        tiny_config(out_dir=str(tmp_path), checkpoint_every=100),
        ImageBatches(tiny_images(), 8),
        backbone=backbone(),
        progress=False,
        callbacks=[lambda kind, r: ran.append(r["step"]) if kind == "step" else None],
    )
    assert ran == [2, 3, 4, 5] and [r["step"] for r in rest.steps] == list(range(6))


def test_a_resumed_run_names_every_changed_setting_but_the_free_ones(tmp_path):
    first = tiny_config(out_dir=str(tmp_path), max_steps=2, checkpoint_every=100)
    train_dino(first, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    changed = tiny_config(
        out_dir=str(tmp_path),
        max_steps=4,  # free to change: when to stop, save, log, monitor
        checkpoint_every=50,
        log_every=2,
        teacher_temp=0.05,  # not free: the run would differ from an uninterrupted one
        crops=MultiCropConfig(global_size=16, local_size=8, local_crops_number=2, flip_p=0.4),
    )
    with pytest.warns(UserWarning, match="changed settings") as caught:
        train_dino(changed, ImageBatches(tiny_images(), 8), backbone=backbone(), progress=False)
    message = next(str(w.message) for w in caught if "changed settings" in str(w.message))
    assert "'teacher_temp': (0.04, 0.05)" in message and "'crops.flip_p': (0.5, 0.4)" in message
    for free in ("max_steps", "checkpoint_every", "log_every"):
        assert f"'{free}'" not in message


def test_a_run_resumes_only_on_the_data_and_start_it_recorded(tmp_path):
    """The run-level facts (dataset, shortcuts, data variant, start checkpoint) cannot
    change between sessions: metrics.json would otherwise record the new ones for the
    whole run. A fact this session does not give is kept; an old metrics.json that
    records none does not stop the resume."""

    def session(max_steps: int, **run_info) -> None:
        cfg = tiny_config(out_dir=str(tmp_path), max_steps=max_steps, checkpoint_every=1)
        data = ImageBatches(tiny_images(), 8)
        train_dino(cfg, data, backbone=backbone(), progress=False, run_info=run_info)

    def recorded() -> dict:
        return json.loads((tmp_path / "metrics.json").read_text())["run"]

    started = dict(dataset="critters", shortcuts=False, data_variant={"radius": (0.2, 0.3)},
                   init={"name": "dino_cnn_critters", "command": "..."})
    session(1, command="first", **started)
    steps = len(json.loads((tmp_path / "metrics.json").read_text())["steps"])
    for name, value, message in [
        ("dataset", "shapes", r"dataset: 'critters' when the run started, 'shapes' now"),
        ("shortcuts", True, r"shortcuts: False when the run started, True now"),
        ("data_variant", {}, r"data_variant: \{'radius': \[0.2, 0.3\]\} when .*, \{\} now"),
        ("init", None, r"init: 'dino_cnn_critters' when the run started, None now"),
        ("init", {"name": "dino_cnn_shapes"}, r"init: 'dino_cnn_critters' .* 'dino_cnn_shapes'"),
    ]:
        with pytest.raises(ValueError, match=rf"cannot resume the run in {tmp_path} .*{message}"):
            session(2, **{**started, name: value})
        assert len(json.loads((tmp_path / "metrics.json").read_text())["steps"]) == steps
    # the same facts (a list for a tuple, init by name), or none of them: it resumes
    same = {**started, "data_variant": {"radius": [0.2, 0.3]}, "init": "dino_cnn_critters"}
    session(2, **same)
    session(3, command="third")  # e.g. a notebook call without run_info
    assert recorded() == {**same, "command": "third"}
    # a metrics.json from before these facts were recorded compares nothing
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["run"] = {"command": "old"}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    session(4, dataset="shapes", shortcuts=True)
    assert recorded()["dataset"] == "shapes"

def _ddp_worker(rank: int, world: int, store: str, images: torch.Tensor, out: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        cfg = tiny_config(batch_size=8 // world, epochs=2, steps_per_epoch=2)
        data = ImageBatches(images, 8 // world, seed=0, rank=rank, world_size=world)
        h = train_dino(cfg, data, backbone=backbone(), progress=False)
        if rank == 0:
            torch.save({"loss": h.column("loss"), "teacher": h.teacher.state_dict()}, out)
    finally:
        tdist.destroy_process_group()


def test_two_processes_with_half_batches_follow_one_process_with_the_full_batch(tmp_path):
    images = tiny_images()
    single = train_dino(
        tiny_config(epochs=2, steps_per_epoch=2),
        ImageBatches(images, 8),
        backbone=backbone(),
        progress=False,
    )
    out = tmp_path / "ddp.pt"
    # fork: the children inherit the imported modules (spawn re-imports torch: ~10 s)
    mp.start_processes(
        _ddp_worker,
        args=(2, str(tmp_path / "store"), images, str(out)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    ddp = torch.load(out, weights_only=True)
    loss_gap = np.abs(np.array(ddp["loss"]) - np.array(single.column("loss"))).max()
    weight_gap = max(
        (ddp["teacher"][k] - v).abs().max().item() for k, v in single.teacher.state_dict().items()
    )
    print(f"DDP vs single process: loss gap {loss_gap:.2e}, teacher weight gap {weight_gap:.2e}")
    assert loss_gap < 1e-5 and weight_gap < 1e-5, (loss_gap, weight_gap)


class NaNAt:
    """An endless stream of float images that turns NaN at one step."""

    def __init__(self, bad_step: int) -> None:
        self.images, self.bad_step = tiny_images(8).float() / 255, bad_step

    def __iter__(self):
        for step in itertools.count():
            yield self.images * (math.nan if step == self.bad_step else 1.0)


def test_a_non_finite_loss_stops_training_naming_the_step():
    cfg = tiny_config(steps_per_epoch=4, log_every=5)
    with pytest.raises(
        NonFiniteLossError, match=r"at step 2 \(epoch 0\).*learning rate.*fp16.*teacher"
    ):
        train_dino(cfg, NaNAt(bad_step=2), backbone=backbone(), progress=False)


def test_the_knn_monitor_reports_accuracy_each_epoch():
    images = tiny_images(48)
    labels = torch.arange(48) % 4
    eval_data = (images[:32], labels[:32], images[32:], labels[32:])
    h = train_dino(
        tiny_config(knn_k=5),
        ImageBatches(images, 8),
        backbone=backbone(),
        eval_data=eval_data,
        progress=False,
    )
    assert [0 <= e["knn_top1"] <= 100 for e in h.epochs] == [True, True]


def test_augment_replaces_the_built_in_multi_crop():
    cfg = tiny_config(epochs=1, steps_per_epoch=3)
    built_in = BatchedMultiCrop(MultiCropConfig(global_size=16, local_size=8, local_crops_number=1))
    calls = []

    def augment(images: torch.Tensor, step: int) -> list[torch.Tensor]:
        calls.append((step, tuple(images.shape), images.dtype))
        return built_in(images, generator=torch.Generator().manual_seed(step))

    data = ImageBatches(tiny_images(), 8)
    h = train_dino(cfg, data, backbone=backbone(), augment=augment, progress=False)
    assert calls == [(step, (8, 3, 16, 16), torch.uint8) for step in range(3)]
    default = train_dino(cfg, data, backbone=backbone(), progress=False)  # 2 local crops
    assert h.column("loss") != default.column("loss")
    with pytest.raises(ValueError, match=r"augment\(images, step\) must return a list"):
        train_dino(cfg, data, backbone=backbone(), augment=lambda x, s: x, progress=False)

def test_data_and_config_errors_are_explained():
    with pytest.raises(ValueError, match="config says batch_size=8"):
        train_dino(tiny_config(), [tiny_images(4)], backbone=backbone(), progress=False)
    with pytest.raises(ValueError, match="set config.steps_per_epoch"):
        train_dino(
            tiny_config(steps_per_epoch=None), NaNAt(-1), backbone=backbone(), progress=False
        )
    with pytest.raises(ValueError, match="needs an integer attribute embed_dim"):
        train_dino(tiny_config(), [tiny_images(8)], backbone=nn.Linear(3, 3), progress=False)
    with pytest.raises(ValueError, match=r"data must yield image batches \(B, 3, H, W\)"):
        train_dino(tiny_config(), [torch.zeros(8, 16, 16)], backbone=backbone(), progress=False)
    with pytest.raises(ValueError, match=r"warmup_epochs \(5\) must lie in \[0, epochs=2\]"):
        tiny_config(warmup_epochs=5)
    with pytest.raises(ValueError, match="precision must be"):
        tiny_config(precision="fp8")
    with pytest.raises(ValueError, match="unknown arch 'vit_huge'"):
        train_dino(tiny_config(arch="vit_huge"), [tiny_images(8)], progress=False)


# ---- schedules and optimisation recipe ------------------------------------------------
def test_cosine_schedule_matches_the_official_formula():
    sched = cosine_schedule(1.0, 0.1, total_steps=20, warmup_steps=5, start_warmup=0.0)
    assert sched.shape == (20,)
    np.testing.assert_allclose(sched[:5], np.linspace(0, 1, 5))
    i = np.arange(15)
    np.testing.assert_allclose(sched[5:], 0.1 + 0.45 * (1 + np.cos(np.pi * i / 15)))
    with pytest.raises(ValueError, match=r"warmup_steps must lie in \[0, total_steps=3\]"):
        cosine_schedule(1.0, 0.0, 3, warmup_steps=4)


def test_biases_and_norms_are_not_decayed_and_frozen_parameters_are_left_out():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    decay, no_decay = get_params_groups(model)
    assert [p.shape for p in decay["params"]] == [(4, 4)]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_gradients_are_clipped_per_parameter_not_globally():
    big, small = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    big.grad, small.grad = torch.tensor([30.0, 40.0, 0.0]), torch.tensor([0.3, 0.4, 0.0])
    norms = clip_gradients(nn.ParameterList([big, small]), 3.0)
    torch.testing.assert_close(norms, torch.tensor([50.0, 0.5]))
    assert big.grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    torch.testing.assert_close(small.grad, torch.tensor([0.3, 0.4, 0.0]))  # untouched


def test_distributed_helpers_are_no_ops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_distributed() is False
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main_process()
    x = torch.arange(3.0)
    assert dist.all_reduce_mean(x) is x
    dist.barrier()
    model = nn.Linear(2, 2)
    compiled = nn.Module()
    compiled._orig_mod = model  # what torch.compile's OptimizedModule holds
    assert dist.unwrap_model(compiled) is model


# ---- the command line ---------------------------------------------------------------
def test_cli_flags_override_the_profile_presets(tmp_path):
    args = build_parser().parse_args(
        [
            "dino",
            "--profile",
            "quick",
            "--arch",
            "small_cnn",
            "--epochs",
            "3",
            "--teacher-temp",
            "0.05",
            "--local-crops-number",
            "2",
            "--no-norm-last-layer",
            "--global-crops-scale",
            "0.3",
            "1.0",
            "--out",
            str(tmp_path),
        ]
    )
    cfg = dino_config_from_args(args)
    assert (cfg.arch, cfg.epochs, cfg.teacher_temp, cfg.norm_last_layer) == (
        "small_cnn",
        3,
        0.05,
        False,
    )
    assert cfg.crops.local_crops_number == 2 and cfg.crops.global_crops_scale == (0.3, 1.0)
    assert cfg.out_dim == 1024 and cfg.device == "cpu"  # from the quick preset
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dino", "--arch", "vit_huge"])


def test_cli_trains_on_shapes_and_writes_checkpoint_and_metrics(tmp_path, capsys):
    main(
        [
            "dino",
            "--preset",
            "shapes",
            "--arch",
            "small_cnn",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "4",
            "--warmup-epochs",
            "0",
            "--local-crops-number",
            "1",
            "--out-dim",
            "64",
            "--hidden-dim",
            "32",
            "--knn-train",
            "40",
            "--knn-test",
            "20",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert "done: 2 steps" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["steps"]) == 2 and "knn_top1" in metrics["epochs"][0]
    assert metrics["epochs"][0]["elapsed_s"] > 0
    run = metrics["run"]
    # after OMP_NUM_THREADS=N when that is set
    assert "python -m teachkit.train dino --preset shapes" in run["command"]
    assert run["command"].endswith(f"--out {tmp_path}")
    assert run["dataset"] == "shapes" and run["shortcuts"] is False
    assert run["data_variant"] == {} and run["init"] is None and run["preset"] == "shapes"
    assert (tmp_path / "checkpoint.pt").is_file()


TINY_CRITTERS = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4",
                 "--warmup-epochs", "0", "--local-crops-number", "1", "--out-dim", "64",
                 "--hidden-dim", "32", "--knn-train", "40", "--knn-test", "20", "--no-progress"]


def test_the_quick_preset_trains_on_critters_and_records_its_data_variant(tmp_path, capsys):
    """``--preset quick`` is the critters recipe; a ``CrittersConfig`` field given as a flag
    draws the stream of that variant and is recorded for ``ship``."""
    args = build_parser().parse_args(["dino", "--out", str(tmp_path)])
    assert args.profile == "quick" and dino_config_from_args(args).arch == "small_cnn"
    main(["dino", *TINY_CRITTERS, "--critters-context-strength", "0",
          "--critters-clutter", "2", "4", "--out", str(tmp_path)])
    run = json.loads((tmp_path / "metrics.json").read_text())["run"]
    assert run["dataset"] == "critters" and run["preset"] == "quick"
    assert run["data_variant"] == {"context_strength": 0.0, "clutter": [2, 4]}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "shapes", "--critters-noise-std", "0"], "need --dataset critters"),
        (["--critters-context-strength", "2"], "context_strength"),
        (["--init", "no_such_model"], "unknown shipped model 'no_such_model'"),
        (["--init", "dino_vit_nano_critters"], "its backbone is .*vit_nano.*small_cnn"),
        (["--init", "sam_tiny_shapes"], "records no DINO config"),
    ],
)
def test_data_variant_and_init_errors_are_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["dino", *TINY_CRITTERS, *argv, "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_init_starts_from_the_shipped_backbone_and_records_it(tmp_path):
    """``--init NAME``: the student's backbone holds NAME's weights at step 0, and
    metrics.json names the start (the card's "Started from")."""
    from teachkit.dino.cli import shipped_start
    from teachkit.dino.shipped import load_shipped_dino

    args = build_parser().parse_args(
        ["dino", "--preset", "curve", "--init", "dino_cnn_critters", "--out", str(tmp_path)])
    backbone, info = shipped_start("dino_cnn_critters", dino_config_from_args(args))
    shipped, _, card = load_shipped_dino("dino_cnn_critters")
    for (k, a), b in zip(backbone.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(a, b), k
    assert info["name"] == "dino_cnn_critters" and info["command"] == card.command
    main(["dino", "--preset", "curve", *TINY_CRITTERS, "--init", "dino_cnn_critters",
          "--out", str(tmp_path)])
    run = json.loads((tmp_path / "metrics.json").read_text())["run"]
    assert run["init"]["name"] == "dino_cnn_critters"


# ---- checked before the first step (issue 13) -----------------------------------------
class Counted:
    """A re-iterable list of batches that counts the batches taken from it."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches, self.taken = batches, 0

    def __iter__(self):
        for b in self.batches:
            self.taken += 1
            yield b


def test_an_out_dir_that_is_a_file_fails_before_training(tmp_path):
    (tmp_path / "taken").write_text("a file")
    data = Counted([tiny_images(8)] * 3)
    for out, where in ((tmp_path / "taken", "is a file"), (tmp_path / "taken" / "run", "under")):
        with pytest.raises(ValueError, match=f"out_dir '{out}' .*{where}"):
            train_dino(tiny_config(out_dir=str(out)), data, backbone=backbone(), progress=False)
    assert data.taken == 0


def test_knn_data_is_checked_before_training():
    images, labels = tiny_images(48), torch.arange(48) % 4
    data = Counted([tiny_images(8)] * 3)

    def run(eval_data, **cfg):
        train_dino(
            tiny_config(**cfg), data, backbone=backbone(), eval_data=eval_data, progress=False
        )

    with pytest.raises(ValueError, match="bank has 10 images, fewer than its knn_k = 20"):
        run((images[:10], labels[:10], images[40:], labels[40:]))
    with pytest.raises(ValueError, match=r"train labels must be an integer tensor of shape"):
        run((images[:32], labels[:32].float(), images[40:], labels[40:]), knn_k=5)
    with pytest.raises(ValueError, match=r"test images must be \(N, 3, H, W\)"):
        run((images[:32], labels[:32], images[40:, 0], labels[40:]), knn_k=5)
    with pytest.raises(ValueError, match=r"eval_data has train float images with values in"):
        run((images[:32].float(), labels[:32], images[40:], labels[40:]), knn_k=5)
    with pytest.raises(ValueError, match="eval_data must be"):
        run((images, labels), knn_k=5)
    assert data.taken == 0


@pytest.mark.parametrize("scale,hint", [(255.0, "divide by 255"), (-1.0, "")])
def test_float_images_outside_0_1_fail_before_the_first_step(scale, hint):
    steps = []
    data = Counted([tiny_images(8).float() / 255 * scale] * 3)
    with pytest.raises(ValueError, match=r"data yields float images with values in .*\[0, 1\]"):
        train_dino(
            tiny_config(),
            data,
            backbone=backbone(),
            progress=False,
            callbacks=[lambda kind, record: steps.append(record)],
        )
    assert steps == [] and data.taken == 1


def test_a_one_shot_iterator_shorter_than_the_run_is_named_as_such():
    batches = (tiny_images(8, seed=i) for i in range(2))  # a generator: one pass only
    with pytest.raises(ValueError, match="data yielded 2 batches, then nothing .* one-shot"):
        train_dino(tiny_config(), batches, backbone=backbone(), progress=False)
    with pytest.raises(ValueError, match="data yielded no batches"):
        train_dino(tiny_config(), iter([]), backbone=backbone(), progress=False)


def test_the_non_finite_loss_message_names_only_a_checkpoint_that_exists(tmp_path):
    cfg = tiny_config(steps_per_epoch=4, log_every=1, out_dir=str(tmp_path / "a"))
    with pytest.raises(NonFiniteLossError, match="No checkpoint was written before this step") as e:
        train_dino(cfg, NaNAt(bad_step=1), backbone=backbone(), progress=False)
    assert str(tmp_path / "a" / "checkpoint.pt") not in str(e.value)
    cfg = tiny_config(
        steps_per_epoch=4, log_every=1, checkpoint_every=1, out_dir=str(tmp_path / "b")
    )
    saved = tmp_path / "b" / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError, match=f"The last good checkpoint is {saved}"):
        train_dino(cfg, NaNAt(bad_step=2), backbone=backbone(), progress=False)
    assert saved.is_file()


def test_device_seed_data_and_callbacks_are_checked_first():
    data = Counted([tiny_images(8)] * 3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU is available to PyTorch here"):
            train_dino(tiny_config(device="cuda"), data, backbone=backbone(), progress=False)
    with pytest.raises(ValueError, match="seed must be a 64-bit integer"):
        train_dino(tiny_config(seed=2**70), data, backbone=backbone(), progress=False)
    with pytest.raises(ValueError, match="data must be an iterable of image batches; got int"):
        train_dino(tiny_config(), 3, backbone=backbone(), progress=False)
    with pytest.raises(ValueError, match=r"callbacks must be functions"):
        train_dino(tiny_config(), data, backbone=backbone(), progress=False, callbacks=[1])
    assert data.taken == 0
