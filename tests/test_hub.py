"""Tests for teachkit.hub: real downloads from a local HTTP server, real files, no mocks."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from teachkit import hub
from teachkit.infra.download import (
    CACHE_ENV_VAR,
    ChecksumMismatchError,
    IncompleteDownloadError,
    file_sha256,
)
from teachkit.infra.weights import read_state_dict, strip_prefixes

# --------------------------------------------------------------------------- fixtures

TINY = dict(embed_dim=8, depth=2, num_heads=2, patch_size=4, img_size=16, mlp_ratio=4)


def official_vit_shapes(
    embed_dim: int, depth: int, num_heads: int, patch_size: int, img_size: int, mlp_ratio: int
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a backbone state dict in the official DINO `vision_transformer.py`."""
    d, hidden = embed_dim, embed_dim * mlp_ratio
    n = (img_size // patch_size) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, n + 1, d),
        "patch_embed.proj.weight": (d, 3, patch_size, patch_size),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (d,),
            b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d),
            b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,),
            b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (hidden, d),
            b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (d, hidden),
            b + "mlp.fc2.bias": (d,),
        }
    shapes |= {"norm.weight": (d,), "norm.bias": (d,)}
    return shapes


def official_vit_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in official_vit_shapes(**TINY).items()}


class _Block(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, hidden)
        self.mlp.fc2 = nn.Linear(hidden, d)


class TinyDinoBackbone(nn.Module):
    """Same parameter names and shapes as the official DINO ViT (no forward needed here)."""

    def __init__(self, embed_dim, depth, num_heads, patch_size, img_size, mlp_ratio) -> None:
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(_Block(embed_dim, embed_dim * mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)


def checkpoint_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Server:
    """A loopback HTTP server; ``routes[path] = (body, announced Content-Length)``.

    ``raw[path] = write`` answers that path with ``write(wfile)``: raw bytes, for
    responses a well-behaved server would not send (cut chunks, no length, stalls).
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, int]] = {}
        self.raw: dict[str, Callable[[io.BufferedIOBase], None]] = {}
        self.hits: dict[str, int] = {}
        self.release = threading.Event()  # set at teardown: stalled handlers return
        routes, raw, hits = self.routes, self.raw, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                hits[self.path] = hits.get(self.path, 0) + 1
                if self.path in raw:
                    raw[self.path](self.wfile)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, announced = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(announced))
                self.end_headers()
                self.wfile.write(body)  # possibly fewer bytes than announced ...
                self.wfile.flush()
                self.close_connection = True  # ... then hang up

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, body: bytes, announced: int | None = None) -> str:
        self.routes[path] = (body, len(body) if announced is None else announced)
        return self.url(path)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = Server()
    srv.thread.start()
    yield srv
    srv.release.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- downloads


def test_download_verifies_hash_and_loads_official_layout(server: Server, cache: Path) -> None:
    state = official_vit_state_dict()
    data = checkpoint_bytes(state)
    entry = hub.WeightsEntry(
        "tiny_dino", server.serve("/tiny/dino_tiny.pth", data), sha(data), "dino", TINY
    )

    path = hub.download(entry, cache_dir=cache, progress=False)
    assert path == cache / "dino_tiny.pth"
    assert file_sha256(path) == sha(data)
    assert sorted(p.name for p in cache.iterdir()) == ["dino_tiny.pth"]  # no temp files

    loaded = hub.load_state_dict(entry, cache_dir=cache, progress=False)
    assert loaded.keys() == state.keys()
    model = hub.load_into(TinyDinoBackbone(**TINY), loaded)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    assert server.hits["/tiny/dino_tiny.pth"] == 1  # the second call used the cache


def test_corrupted_bytes_are_refused_and_nothing_is_left(server: Server, cache: Path) -> None:
    good = checkpoint_bytes(official_vit_state_dict())
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    url = server.serve("/corrupt.pth", bytes(bad))

    with pytest.raises(ChecksumMismatchError, match=f"expected {sha(good)}, got {sha(bad)}"):
        hub.download(url, cache_dir=cache, sha256=sha(good), progress=False)
    assert not (cache / "corrupt.pth").exists()
    assert list(cache.iterdir()) == []


def test_interrupted_transfer_leaves_nothing_loadable(server: Server, cache: Path) -> None:
    data = checkpoint_bytes(official_vit_state_dict())
    half = data[: len(data) // 2]
    url = server.serve("/cut.pth", half, announced=len(data))

    with pytest.raises(IncompleteDownloadError, match=f"{len(half)} of {len(data)} bytes"):
        hub.download(url, cache_dir=cache, sha256=sha(data), progress=False)
    assert list(cache.iterdir()) == []
    # Even unverified, a truncated transfer is caught by the byte count.
    with pytest.raises(IncompleteDownloadError):
        hub.download(url, cache_dir=cache, verify=False, progress=False)
    assert list(cache.iterdir()) == []
    with pytest.raises(ValueError, match="neither an existing file"):
        hub.load_state_dict(cache / "cut.pth")


def test_http_error_leaves_nothing(server: Server, cache: Path) -> None:
    with pytest.raises(urllib.error.HTTPError, match="404"):
        hub.download(server.url("/missing.pth"), cache_dir=cache, verify=False, progress=False)
    assert list(cache.iterdir()) == []


def test_cached_file_is_reverified_and_replaced(server: Server, cache: Path) -> None:
    data = checkpoint_bytes(official_vit_state_dict())
    url = server.serve("/w.pth", data)
    path = hub.download(url, cache_dir=cache, sha256=sha(data), progress=False)
    path.write_bytes(b"bit rot")

    with pytest.warns(UserWarning, match="discarding it"):
        again = hub.download(url, cache_dir=cache, sha256=sha(data), progress=False)
    assert again.read_bytes() == data
    assert server.hits["/w.pth"] == 2


def test_unknown_hash_requires_explicit_opt_out(server: Server, cache: Path) -> None:
    data = checkpoint_bytes(official_vit_state_dict())
    url = server.serve("/nohash.pth", data)
    with pytest.raises(ValueError, match="verify=False"):
        hub.download(url, cache_dir=cache, progress=False)
    assert "/nohash.pth" not in server.hits  # refused before any request
    path = hub.download(url, cache_dir=cache, verify=False, progress=False)
    assert path.read_bytes() == data


def test_cache_dir_from_environment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env_cache"))
    data = b"abc"
    path = hub.download(server.serve("/x.bin", data), sha256=sha(data), progress=False)
    assert path == tmp_path / "env_cache" / "x.bin"


# --------------------------------------------------------------------------- loading


def test_local_path_and_wrapped_checkpoints(tmp_path: Path) -> None:
    state = official_vit_state_dict()
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    assert hub.load_state_dict(plain).keys() == state.keys()

    # A full DINO training checkpoint: teacher/student wrapped, with DDP + multi-crop prefixes.
    wrapped = {
        "student": {f"module.backbone.{k}": v + 1 for k, v in state.items()},
        "teacher": {f"backbone.{k}": v for k, v in state.items()}
        | {"head.last_layer.weight": torch.ones(3, 8)},
        "epoch": 100,
    }
    full = tmp_path / "checkpoint.pth"
    torch.save(wrapped, full)
    teacher = hub.load_state_dict(str(full))  # teacher is preferred
    model = hub.load_into(TinyDinoBackbone(**TINY), teacher, ignore_prefixes=("head.",))
    torch.testing.assert_close(model.cls_token, state["cls_token"])
    student = hub.load_state_dict(full, checkpoint_key="student")
    torch.testing.assert_close(student["norm.bias"], state["norm.bias"] + 1)
    with pytest.raises(ValueError, match="no key 'ema'"):
        hub.load_state_dict(full, checkpoint_key="ema")


def test_strict_loading_lists_missing_unexpected_and_shapes() -> None:
    state = official_vit_state_dict()
    del state["blocks.0.attn.qkv.bias"]
    state["blocks.0.attn.qkv_bias"] = torch.zeros(24)  # a renamed key
    state["pos_embed"] = torch.zeros(1, 50, 8)  # another resolution
    model = TinyDinoBackbone(**TINY)
    before = model.blocks[0].attn.qkv.weight.detach().clone()

    with pytest.raises(ValueError) as err:
        hub.load_into(model, state)
    msg = str(err.value)
    assert "missing keys (1): blocks.0.attn.qkv.bias" in msg
    assert "unexpected keys (1): blocks.0.attn.qkv_bias" in msg
    assert "pos_embed: checkpoint (1, 50, 8) vs model (1, 17, 8)" in msg
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, before)  # nothing was loaded


def test_registry_and_unknown_names() -> None:
    expected = {"dino_vits16", "dino_vits8", "dino_vitb16", "dino_vitb8", "dino_resnet50"}
    expected |= {"sam_vit_b", "sam_vit_l", "sam_vit_h"}
    assert set(hub.REGISTRY) == expected
    for entry in hub.REGISTRY.values():
        assert entry.url.startswith("https://dl.fbaipublicfiles.com/")
        assert entry.url.endswith(".pth") and entry.filename in entry.url
        assert entry.sha256 is None or len(entry.sha256) == 64
    assert hub.get_entry("dino_vits16").filename == "dino_deitsmall16_pretrain.pth"
    assert hub.get_entry("dino_vitb8").architecture["embed_dim"] == 768
    with pytest.raises(ValueError, match=r"unknown pretrained weights 'dino_vits32'.*dino_vits16"):
        hub.get_entry("dino_vits32")
    with pytest.raises(ValueError, match="dino_vitb16"):
        hub.load_state_dict("dino_vit_small")
    with pytest.raises(ValueError, match="64 hex digits"):
        hub.download("dino_vits16", sha256="abc", progress=False)
    with pytest.raises(ValueError, match="verify=False"):  # DINO hashes are unknown
        hub.download("dino_vits16", progress=False)


def test_strip_prefixes_only_strips_leading() -> None:
    t = torch.zeros(1)
    out = strip_prefixes({"module.backbone.a": t, "blocks.module.b": t})
    assert set(out) == {"a", "blocks.module.b"}


def test_the_reader_keeps_a_models_own_backbone_prefix(tmp_path: Path) -> None:
    """The course's models name a part ``backbone`` (contrastive, supervised): their files
    are read with ``prefixes=()``; an official DINO teacher file is unwrapped and stripped."""
    t = torch.zeros(2)
    path = tmp_path / "own.pt"
    torch.save({"backbone.w": t, "projector.w": t}, path)
    assert set(read_state_dict(path, prefixes=())) == {"backbone.w", "projector.w"}
    torch.save({"teacher": {"module.backbone.w": t, "module.head.w": t}, "epoch": 3}, path)
    assert set(read_state_dict(path)) == {"w", "head.w"}
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nothing.pt"):
        read_state_dict(tmp_path / "nothing.pt")


# ------------------------------------------------------------- cut, stalled, not a checkpoint


def no_length(body: bytes) -> Callable[[io.BufferedIOBase], None]:
    """HTTP/1.0 without Content-Length: the body ends where the server hangs up."""

    def write(wfile: io.BufferedIOBase) -> None:
        wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body)

    return write


def test_unverified_download_cut_without_content_length_is_not_cached(
    server: Server, cache: Path
) -> None:
    data = checkpoint_bytes(official_vit_state_dict())
    server.raw["/cut.pth"] = no_length(data[: len(data) // 2])
    url = server.url("/cut.pth")
    with pytest.raises(IncompleteDownloadError, match=f"{url} ended after {len(data) // 2}"):
        hub.download(url, cache_dir=cache, verify=False, progress=False)
    assert list(cache.iterdir()) == []  # neither the file nor a .part
    # The complete file, still without a length, is accepted and loads.
    server.raw["/cut.pth"] = no_length(data)
    path = hub.download(url, cache_dir=cache, verify=False, progress=False)
    assert path.read_bytes() == data
    assert hub.load_state_dict(path).keys() == official_vit_state_dict().keys()


def test_unverified_legacy_format_checkpoint(server: Server, cache: Path) -> None:
    buf = io.BytesIO()
    torch.save(official_vit_state_dict(), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    server.raw["/old.pth"] = no_length(data[:-100])
    with pytest.raises(ValueError, match="is not a readable PyTorch checkpoint"):
        hub.download(server.url("/old.pth"), cache_dir=cache, verify=False, progress=False)
    assert list(cache.iterdir()) == []
    server.raw["/old.pth"] = no_length(data)
    path = hub.download(server.url("/old.pth"), cache_dir=cache, verify=False, progress=False)
    assert hub.load_state_dict(path).keys() == official_vit_state_dict().keys()


def test_cut_chunked_transfer_is_an_incomplete_download(server: Server, cache: Path) -> None:
    def write(wfile: io.BufferedIOBase) -> None:
        wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")  # one 1 KiB chunk, then hang up

    server.raw["/chunked.pth"] = write
    url = server.url("/chunked.pth")
    with pytest.raises(IncompleteDownloadError, match=f"download of {url} was cut"):
        hub.download(url, cache_dir=cache, sha256="0" * 64, progress=False)
    assert list(cache.iterdir()) == []


def test_stalled_server_names_the_url(server: Server, cache: Path) -> None:
    def stall_mid_body(wfile: io.BufferedIOBase) -> None:
        wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"PK" * 100)
        wfile.flush()
        server.release.wait(10)

    def never_answer(wfile: io.BufferedIOBase) -> None:
        server.release.wait(10)

    server.raw["/slow.pth"] = stall_mid_body
    server.raw["/silent.pth"] = never_answer
    slow, silent = server.url("/slow.pth"), server.url("/silent.pth")
    with pytest.raises(TimeoutError, match=f"server of {slow} sent nothing for 0.3 s after"):
        hub.download(slow, cache_dir=cache, verify=False, progress=False, timeout=0.3)
    with pytest.raises(TimeoutError, match=f"server of {silent} sent nothing .* before answering"):
        hub.download(silent, cache_dir=cache, verify=False, progress=False, timeout=0.3)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    "body,message",
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"<html>404 Not Found</html>", r"is not a PyTorch checkpoint \(it starts with b'<html>4"),
    ],
)
def test_unverified_empty_or_foreign_file_is_refused(
    server: Server, cache: Path, body: bytes, message: str
) -> None:
    url = server.serve("/w.pth", body)
    with pytest.raises(ValueError, match=f"download of {url} .*{message}"):
        hub.download(url, cache_dir=cache, verify=False, progress=False)
    assert list(cache.iterdir()) == []


def test_truncated_cached_file_is_discarded_and_downloaded_again(
    server: Server, cache: Path
) -> None:
    data = checkpoint_bytes(official_vit_state_dict())
    cache.mkdir()
    (cache / "w.pth").write_bytes(data[:1000])  # what an older version could leave behind
    url = server.serve("/w.pth", data)
    with pytest.warns(UserWarning, match="whose end is missing.*discarding it"):
        path = hub.download(url, cache_dir=cache, verify=False, progress=False)
    assert path.read_bytes() == data and server.hits["/w.pth"] == 1


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", r"is empty"),
        (b"not a checkpoint at all", r"is not a PyTorch checkpoint"),
        (None, r"is a zip archive whose end is missing"),  # a truncated torch.save file
        (b"\x80\x02}q\x00(X", r"as a PyTorch checkpoint \(.*is it truncated"),  # cut pickle
    ],
)
def test_unreadable_local_files_are_named(tmp_path: Path, content, message) -> None:
    path = tmp_path / "weights.pth"
    if content is None:
        content = checkpoint_bytes(official_vit_state_dict())[:-50]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot load {path}.*{message}"):
        hub.load_state_dict(path)
    torch.save([1, 2, 3], path)  # a checkpoint, but no state dict in it
    with pytest.raises(ValueError, match=f"{path}: expected a dict checkpoint, got list"):
        hub.load_state_dict(path)


def test_stale_part_files_are_removed(server: Server, cache: Path) -> None:
    data = b"abc"
    cache.mkdir()
    stale, live = cache / ".x.bin.dead1.part", cache / ".x.bin.live2.part"
    other = cache / ".y.bin.dead3.part"  # another file's part: not ours to judge
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    hub.download(server.serve("/x.bin", data), cache_dir=cache, sha256=sha(data), progress=False)
    assert not stale.exists()
    assert live.exists() and other.exists()  # a download that may still be running


def test_download_and_load_into_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds; got 0"):
        hub.download("http://127.0.0.1:9/x.pth", cache_dir=tmp_path, verify=False, timeout=0)
    a_file = tmp_path / "cache_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"the cache directory {a_file} is a file"):
        hub.download("http://127.0.0.1:9/x.pth", cache_dir=a_file, verify=False)
    model = TinyDinoBackbone(**TINY)
    with pytest.raises(ValueError, match="must be a mapping of names to tensors; got list"):
        hub.load_into(model, [1, 2])
    with pytest.raises(ValueError, match=r"values must be tensors; not so for \['epoch'\]"):
        hub.load_into(model, {**official_vit_state_dict(), "epoch": 3})
