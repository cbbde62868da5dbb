"""Where a long run keeps its checkpoints (:func:`teachkit.profiles.run_dir`): in the
student's Google Drive on Colab once it is mounted, in ``runs/NAME`` everywhere else,
and never anywhere else for a name that is not one plain folder name (issue 25)."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from teachkit import profiles
from teachkit.profiles import on_colab, run_dir


@pytest.fixture
def not_colab(monkeypatch):
    """A machine that is not Colab, whatever machine runs the tests."""
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", None)  # find_spec then answers None


@pytest.fixture
def colab(monkeypatch):
    """A Colab runtime as Colab marks it: the release tag is set."""
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261201-060000_RC00")


@pytest.fixture
def drive(tmp_path, monkeypatch):
    """A mounted Drive: ``COLAB_DRIVE`` points at a folder that exists."""
    root = tmp_path / "content" / "drive" / "MyDrive"
    root.mkdir(parents=True)
    monkeypatch.setattr(profiles, "COLAB_DRIVE", root)
    return root


def test_the_drive_root_is_where_colab_mounts_it():
    assert profiles.COLAB_DRIVE == Path("/content/drive/MyDrive")


def test_off_colab_a_run_goes_to_runs(not_colab, drive, recwarn):
    assert not on_colab()
    # even where a folder like the Drive's exists: it is not Colab's
    assert run_dir("dino_cifar10") == Path("runs") / "dino_cifar10"
    assert not recwarn.list


def test_colab_is_recognised_by_its_release_tag(not_colab, colab):
    assert on_colab()


def test_colab_is_recognised_by_its_module(not_colab, monkeypatch):
    module = types.ModuleType("google.colab")
    module.__spec__ = importlib.machinery.ModuleSpec("google.colab", None)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    assert on_colab()


def test_on_colab_with_the_drive_mounted_a_run_goes_to_the_drive(not_colab, colab, drive):
    path = run_dir("dino_cifar10")
    assert path == drive / "teachkit" / "runs" / "dino_cifar10"
    assert path.is_absolute()
    assert not path.exists(), "run_dir names the folder; the trainer makes it"


def test_on_colab_without_the_drive_a_run_stays_on_the_runtime_and_says_how_to_keep_it(
    not_colab, colab, tmp_path, monkeypatch
):
    monkeypatch.setattr(profiles, "COLAB_DRIVE", tmp_path / "not_mounted" / "MyDrive")
    with pytest.warns(UserWarning, match=r"drive\.mount\(\"/content/drive\"\)") as caught:
        path = run_dir("dino_cifar10")
    assert path == Path("runs") / "dino_cifar10"
    assert "not mounted" in str(caught[0].message)
    assert not (tmp_path / "not_mounted").exists(), "run_dir must never mount or make the Drive"


@pytest.mark.parametrize("name", ["", "  ", ".", "..", "a/b", "../escape", "/abs", "a\\b"])
def test_a_name_that_is_not_one_plain_folder_is_refused(not_colab, colab, drive, name):
    with pytest.raises(ValueError, match="must be one plain folder name") as err:
        run_dir(name)
    assert repr(name) in str(err.value), "the message names what was given"
    assert "e.g. 'dino_cifar10'" in str(err.value), "and what is expected"


def test_a_name_that_is_not_a_string_is_refused(not_colab):
    with pytest.raises(TypeError, match="must be a str, got PosixPath"):
        run_dir(Path("dino_cifar10"))
