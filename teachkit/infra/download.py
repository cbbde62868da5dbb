"""Hashed, atomic downloads into a cache folder: the transfer behind :mod:`teachkit.hub`.

Bytes go to a temporary ``.part`` file beside the final one; only a complete file whose
sha256 matches (or, without a known sha256, a complete PyTorch checkpoint) is renamed
into place, so an interrupted or corrupted transfer never leaves a file a later run would
load. ``.part`` files of killed downloads are removed once nothing has written to them
for ten minutes. :func:`teachkit.hub.download` is the entry point.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

__all__ = [
    "CACHE_ENV_VAR",
    "ChecksumMismatchError",
    "IncompleteDownloadError",
    "checkpoint_problem",
    "check_sha256_format",
    "download_file",
    "file_sha256",
    "resolve_cache_dir",
]

CACHE_ENV_VAR = "TEACHKIT_CACHE"
_CHUNK = 1 << 20  # bytes read per network / disk read
_STALE_PART_S = 600.0  # a .part file untouched this long belongs to a dead download


class ChecksumMismatchError(ValueError):
    """A file's sha256 is not the expected one (the file was refused)."""


class IncompleteDownloadError(ConnectionError):
    """The transfer ended early: fewer bytes than announced, a cut chunked transfer, or
    (for a file without a known sha256) a checkpoint whose end is missing."""


def check_sha256_format(value: str, *, what: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise ValueError(f"{what} must be 64 hex digits; got {value!r}")


def resolve_cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where downloads are kept: ``path``, else ``$TEACHKIT_CACHE``, else ``~/.cache/teachkit``."""
    if path is None:
        path = os.environ.get(CACHE_ENV_VAR) or Path("~/.cache/teachkit")
    return Path(path).expanduser()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file as 64 lower-case hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    filename: str,
    sha256: str | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into the cache as ``filename`` (once), verified; return its path.

    The mechanics behind :func:`teachkit.hub.download`, which resolves registry names
    and documents the behaviour, the arguments and the errors: an atomic ``.part`` file,
    the byte count, the sha256 (or, without one, a complete PyTorch checkpoint), a cached
    file hashed again before it is returned.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    expected = sha256
    if expected is not None:
        check_sha256_format(expected, what="sha256")
        expected = expected.lower()
    elif verify:
        raise ValueError(
            f"no sha256 is known for {url}, so it cannot be verified. Pass sha256='<64 hex "
            "digits>' if you know it, or verify=False to download it unverified."
        )

    folder = resolve_cache_dir(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the cache directory {folder} is a file; pass a folder as cache_dir")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / filename
    _remove_stale_parts(final)

    if final.exists():
        if expected is None:
            problem = checkpoint_problem(final, thorough=False)
            if problem is None:
                return final
            reason = problem
        else:
            actual = file_sha256(final)
            if actual == expected:
                return final
            reason = f"has sha256 {actual}, expected {expected}"
        warnings.warn(
            f"cached file {final} {reason}; discarding it and downloading again",
            stacklevel=3,
        )
        final.unlink()

    _fetch_atomically(url, final, expected, progress=progress, timeout=timeout)
    return final


def _part_prefix(final: Path) -> str:
    return f".{final.name}."


def _remove_stale_parts(final: Path) -> None:
    """Delete ``.part`` files of ``final`` that no download has written to for a while.

    A running download writes at least every ``timeout`` seconds (or fails), so a file
    untouched for :data:`_STALE_PART_S` belongs to a process that was killed.
    """
    now = time.time()
    for part in final.parent.glob(f"{_part_prefix(final)}*.part"):
        try:
            if now - part.stat().st_mtime > _STALE_PART_S:
                part.unlink()
        except FileNotFoundError:  # another process removed it first
            pass


def _timeout_error(url: str, timeout: float, received: int | None) -> TimeoutError:
    got = "before answering" if received is None else f"after {received} bytes"
    return TimeoutError(
        f"the server of {url} sent nothing for {timeout:g} s {got}; nothing was saved. "
        "Try again later, or pass a larger timeout="
    )


def _fetch_atomically(
    url: str, final: Path, expected: str | None, *, progress: bool, timeout: float
) -> None:
    """Stream ``url`` to a temporary file in ``final``'s folder, verify, then rename."""
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=_part_prefix(final), suffix=".part")
    tmp = Path(tmp_name)
    received: int | None = None
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=final.name,
                disable=not progress,
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise IncompleteDownloadError(
                f"download of {url} stopped after {received} of {total} bytes; "
                "nothing was saved, try again"
            )
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise ChecksumMismatchError(
                f"sha256 mismatch for {url}: expected {expected}, got {actual} "
                f"({received} bytes); the file was refused and not saved"
            )
        if expected is None:
            _refuse_unless_checkpoint(tmp, url, received)
        os.replace(tmp, final)
    except TimeoutError as err:
        raise _timeout_error(url, timeout, received) from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise _timeout_error(url, timeout, received) from err
        raise
    except (http.client.IncompleteRead, ConnectionResetError, ConnectionAbortedError) as err:
        raise IncompleteDownloadError(
            f"download of {url} was cut after {received or 0} bytes "
            f"({type(err).__name__}); nothing was saved, try again"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


def _refuse_unless_checkpoint(tmp: Path, url: str, received: int) -> None:
    """Raise unless the unverified download ``tmp`` is a complete PyTorch checkpoint."""
    problem = checkpoint_problem(tmp, thorough=True)
    if problem is None:
        return
    if problem.startswith("is a zip archive"):  # the start of a checkpoint, not its end
        raise IncompleteDownloadError(
            f"download of {url} ended after {received} bytes, but the file {problem}: the "
            "transfer was cut (the server announced no length). Nothing was saved, try again"
        )
    raise ValueError(
        f"the download of {url} ({received} bytes) {problem}; it was refused and not saved"
    )


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
_PICKLE_PROTO = b"\x80"  # the legacy torch.save format starts with a pickle


def checkpoint_problem(path: Path, *, thorough: bool) -> str | None:
    """What makes ``path`` unreadable as a PyTorch checkpoint, or ``None`` if nothing.

    A zip checkpoint is complete when its central directory (the archive's last bytes) is
    there; that is cheap to check. A legacy file is only checked with ``thorough`` (a
    full ``torch.load``).
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            return f"is a zip archive whose end is missing or damaged ({err})"
        return None
    if head.startswith(_PICKLE_PROTO):
        if thorough:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - whatever torch.load says, it is unreadable
                return f"is not a readable PyTorch checkpoint ({type(err).__name__}: {err})"
        return None
    return f"is not a PyTorch checkpoint (it starts with {head!r})"
