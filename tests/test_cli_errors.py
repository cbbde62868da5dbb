"""Every command of ``python -m teachkit.train`` checks its flags before the first step and
reports a wrong one as argparse does: ``usage: ...`` and ``error: ...`` on stderr, exit
status 2, no traceback, nothing trained or written (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from teachkit.train import main

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line; assert an argparse-style failure; return its error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return path


DINO = ["dino", "--profile", "quick", "--no-progress"]


def test_dino_out_that_is_a_file(a_file, capsys):
    line = usage_error([*DINO, "--out", str(a_file)], capsys)
    assert f"error: --out '{a_file}' is an existing file; it must name a folder" in line
    line = usage_error([*DINO, "--out", str(a_file / "run")], capsys)
    assert f"lies under the file {a_file}" in line
    assert a_file.read_text() == "not a folder"


def test_dino_knn_bank_smaller_than_k(tmp_path, capsys):
    line = usage_error([*DINO, "--knn-train", "5", "--out", str(tmp_path / "r")], capsys)
    assert "--knn-train 5 is smaller than --knn-k 20" in line
    line = usage_error(
        [*DINO, "--knn-train", "30", "--knn-k", "50", "--out", str(tmp_path)], capsys
    )
    assert "--knn-train 30 is smaller than --knn-k 50" in line
    line = usage_error([*DINO, "--knn-test", "-3", "--out", str(tmp_path / "r")], capsys)
    assert "--knn-test must be >= 0" in line
    assert not (tmp_path / "r").exists()


def test_dino_config_errors_are_usage_errors(tmp_path, capsys):
    line = usage_error(
        [*DINO, "--warmup-epochs", "5", "--epochs", "2", "--out", str(tmp_path)], capsys
    )
    assert "warmup_epochs (5) must lie in [0, epochs=2]" in line
    line = usage_error([*DINO, "--batch-size", "0", "--out", str(tmp_path)], capsys)
    assert "batch_size must be >= 1" in line
    line = usage_error(
        [*DINO, "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path)],
        capsys,
    )
    assert "CIFAR-10 files" in line and "download=True" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_dino_and_baselines_cuda_without_a_gpu(tmp_path, capsys):
    line = usage_error([*DINO, "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert "--device cuda: no GPU is available" in line
    line = usage_error(["autoencoder", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert "--device cuda: no GPU is available" in line


@pytest.mark.parametrize(
    "argv,message",
    [
        (["autoencoder", "--steps", "0"], "steps must be >= 1, got 0"),
        (["autoencoder", "--batch-size", "-4"], "batch_size must be >= 1, got -4"),
        (["autoencoder", "--lr", "nan"], "lr must be a positive number, got nan"),
        (["autoencoder", "--code-dim", "0"], "code_dim must be >= 1, got 0"),
        (["supervised", "--checkpoint-every", "0"], "checkpoint_every must be >= 1, got 0"),
        (["contrastive", "--temperature", "0"], "temperature must be a positive number"),
        (["supervised", "--arch", "vgg"], "unknown arch 'vgg'"),
        (["supervised", "--conv-stem"], "conv_stem applies to ViTs only, not to 'small_cnn'"),
        (["supervised", "--arch", "vit_nano", "--patch-size", "5"], "patch_size must divide"),
        (["autoencoder", "--device", "tpu9"], "--device 'tpu9' is not a device name"),
        (["contrastive", "--seed", str(2**70)], "seed must be a 64-bit integer"),
    ],
)
def test_baseline_flags(tmp_path, capsys, argv, message):
    line = usage_error([*argv, "--out", str(tmp_path / "run")], capsys)
    assert message in line
    assert not (tmp_path / "run").exists()


def test_baseline_out_that_is_a_file(a_file, capsys):
    line = usage_error(["contrastive", "--out", str(a_file)], capsys)
    assert f"--out '{a_file}' is an existing file" in line


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sam", "--steps", "0"], "steps must be >= 1, got 0"),
        (["sam", "--eval-scenes", "0"], "--eval-scenes must be >= 1, got 0"),
        (["sam", "--model", "vit_giant"], "unknown SAM model 'vit_giant'"),
        (["sam", "--device", "tpu9"], "--device 'tpu9' is not a device name"),
        (["unet", "--eval-scenes", "-1"], "--eval-scenes must be >= 1, got -1"),
    ],
)
def test_sam_and_unet_flags(tmp_path, capsys, argv, message):
    line = usage_error([*argv, "--out", str(tmp_path / "run")], capsys)
    assert message in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["sam", "unet"])
def test_sam_and_unet_out_that_is_a_file(a_file, capsys, command):
    line = usage_error([command, "--out", str(a_file)], capsys)
    assert f"--out '{a_file}' is an existing file" in line


def test_ship_dino_needs_a_run_folder(tmp_path, capsys):
    argv = ["ship-dino", "--run", str(tmp_path / "none"), "--name", "x", "--description", "d"]
    line = usage_error(argv, capsys)
    assert "has no metrics.json: expected the --out folder of a finished training run" in line


@pytest.mark.parametrize("command", ["sam", "unet", "autoencoder", "contrastive", "supervised"])
@pytest.mark.parametrize("name", ["../../escaped", "a/b", ""])
def test_ship_names_that_are_paths_are_usage_errors(tmp_path, capsys, command, name):
    line = usage_error([command, "--ship", name, "--out", str(tmp_path / "run")], capsys)
    assert f"error: --ship {name!r} must be a plain file name" in line
    assert not (tmp_path / "run").exists()


def test_ship_dino_name_that_is_a_path_is_a_usage_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    argv = ["ship-dino", "--run", str(run), "--name", "../../x", "--description", "d"]
    line = usage_error(argv, capsys)
    assert "../../x" in line and "plain" in line
