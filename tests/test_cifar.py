"""CIFAR-10 loading through the full profile's code path, on a small archive in CIFAR's format."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from teachkit.data.cifar import TEST_FILES, TRAIN_FILES, cifar10_classes, load_cifar10

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batches(per_file: int = 6, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in (*TRAIN_FILES, *TEST_FILES):
        out[name] = {
            "batch_label": name,
            "labels": rng.integers(0, 10, per_file).tolist(),
            "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_file)],
        }
    return out


def _archive(batches: dict[str, dict]) -> bytes:
    """A .tar.gz laid out as the official cifar-10-python.tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {name: pickle.dumps(b, protocol=2) for name, b in batches.items()}
        files["batches.meta"] = pickle.dumps({"label_names": NAMES, "num_cases_per_batch": 6})
        for name, body in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_download_extract_and_load_round_trip(tmp_path, loopback_server):
    batches = _batches()
    body = _archive(batches)
    url = loopback_server.add("/cifar-10-python.tar.gz", body)
    md5 = hashlib.md5(body).hexdigest()

    images, labels = load_cifar10(tmp_path, train=True, download=True, url=url, md5=md5)
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    first = batches["data_batch_1"]
    assert torch.equal(images[:6], torch.from_numpy(first["data"].reshape(6, 3, 32, 32)))
    assert labels[:6].tolist() == first["labels"]

    test_images, test_labels = load_cifar10(tmp_path, train=False)  # already on disk
    assert test_images.shape == (6, 3, 32, 32)
    assert test_labels.tolist() == batches["test_batch"]["labels"]
    assert cifar10_classes(tmp_path) == NAMES


def test_wrong_checksum_is_refused(tmp_path, loopback_server):
    url = loopback_server.add("/cifar-10-python.tar.gz", _archive(_batches()))
    with pytest.raises(RuntimeError, match="not found or corrupted|integrity"):
        load_cifar10(tmp_path, train=True, download=True, url=url, md5="0" * 32)


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(tmp_path, train=False)


def test_a_file_in_the_wrong_format_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8),
                                                      "labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"expected 'data' of shape \(n, 3072\)"):
        load_cifar10(tmp_path, train=False)


# --------------------------------------------------------------------------- bad input, issue 13


def _write_test_batch(tmp_path, data, labels, protocol=2):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=protocol))
    return path


@pytest.mark.parametrize(
    ("data", "labels", "match"),
    [
        (np.full((2, 3072), 300.7), [0, 1], r"pixels must be integers in 0..255, got float64"),
        (np.full((2, 3072), 7.0), [0, 1], r"pixels must be integers in 0..255, got float64"),
        (np.full((2, 3072), 300, np.int64), [0, 1], r"pixels .* values 300..300"),
        (np.full((2, 3072), -1, np.int16), [0, 1], r"pixels .* values -1..-1"),
        (np.zeros((2, 3072), np.uint8), [0, 10], r"labels must be integers in 0..9, .*0..10"),
        (np.zeros((2, 3072), np.uint8), [-1, 3], r"labels must be integers in 0..9"),
        (np.zeros((2, 3072), np.uint8), [0.5, 1.0], r"labels must be integers in 0..9, got float"),
        (np.zeros((2, 3072), np.uint8), [0, 1, 2], r"2 images but 3 labels"),
    ],
)
def test_out_of_range_or_float_values_are_refused(tmp_path, data, labels, match):
    path = _write_test_batch(tmp_path, data, labels)
    with pytest.raises(ValueError, match=f"{path}: {match}"):
        load_cifar10(tmp_path, train=False)


@pytest.mark.parametrize(
    "body",
    [
        b"",  # EOFError
        b"\x80\x02}q\x00(X\x04\x00\x00\x00da",  # a pickle cut short
        b"garbage, not a pickle",  # UnpicklingError
        None,  # a real batch, truncated
    ],
)
def test_corrupt_files_raise_value_error_naming_the_file(tmp_path, body):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    if body is None:
        body = pickle.dumps(_batches()["test_batch"], protocol=2)[:-500]
    (folder / "test_batch").write_bytes(body)
    with pytest.raises(ValueError, match=f"{folder / 'test_batch'} is not a readable CIFAR-10"):
        load_cifar10(tmp_path, train=False)
    (folder / "batches.meta").write_bytes(body)
    with pytest.raises(ValueError, match="batches.meta is not a readable CIFAR-10 file"):
        cifar10_classes(tmp_path)


def test_valid_integer_pixels_of_any_dtype_load(tmp_path):
    data = np.arange(2 * 3072).reshape(2, 3072) % 256  # int64, in range
    _write_test_batch(tmp_path, data, np.array([3, 9], dtype=np.int32))
    images, labels = load_cifar10(tmp_path, train=False)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images.flatten(1), torch.from_numpy(data).to(torch.uint8))
    assert labels.tolist() == [3, 9]


class _RunsCode:
    """Unpickling this calls ``os.system``: what a malicious 'CIFAR' file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["test_batch", "batches.meta"])
def test_a_pickle_that_would_run_code_is_refused_unread(tmp_path, where):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    batch = _batches()["test_batch"]
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES}))
    evil = {"data": batch["data"], "labels": batch["labels"], "x": _RunsCode(marker)}
    if where == "batches.meta":
        evil = {"label_names": NAMES, "x": _RunsCode(marker)}
    (folder / where).write_bytes(pickle.dumps(evil, protocol=2))
    message = rf"{folder / where} is not a CIFAR-10 file: its pickle asks for (posix|nt)\.system"
    with pytest.raises(ValueError, match=message):
        if where == "batches.meta":
            cifar10_classes(tmp_path)
        else:
            load_cifar10(tmp_path, train=False)
    assert not marker.exists()


def test_batches_in_every_pickle_form_of_numpy_arrays_load(tmp_path):
    """NumPy 1's names (the official archive: numpy.core.multiarray), NumPy 2's, and
    protocol 5 (numpy._core.numeric._frombuffer) are all CIFAR's arrays."""
    data = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    for protocol in (2, 5):
        path = _write_test_batch(tmp_path, data, [1, 2], protocol=protocol)
        images, labels = load_cifar10(tmp_path, train=False)
        assert torch.equal(images.flatten(1), torch.from_numpy(data)) and labels.tolist() == [1, 2]
    body = pickle.dumps({"data": data, "labels": [1, 2]}, protocol=2)
    path.write_bytes(body.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"cnumpy.core.multiarray\n_reconstruct" in path.read_bytes()
    images, _ = load_cifar10(tmp_path, train=False)
    assert torch.equal(images.flatten(1), torch.from_numpy(data))
