"""Shared fixtures: one intra-op thread for small-tensor tests, and a loopback HTTP server
for the download tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch


class _Files(BaseHTTPRequestHandler):
    """Serves ``server.files[path] = bytes``; ``server.truncate[path] = n`` sends n bytes only."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.truncate.get(self.path)  # type: ignore[attr-defined]
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


class LoopbackServer:
    """An HTTP server on 127.0.0.1 with an ephemeral port, serving in-memory files."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
        self.httpd.files = {}
        self.httpd.truncate = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path: str, body: bytes, *, truncate_at: int | None = None) -> str:
        """Serve ``body`` at ``path``; returns its URL."""
        self.httpd.files[path] = body
        if truncate_at is not None:
            self.httpd.truncate[path] = truncate_at
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture(scope="module")
def one_thread():
    """On two shared CPU cores, OpenMP threads stall each other, and tiny tensors gain
    nothing from a thread pool: modules of small-model tests run with one intra-op thread
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
