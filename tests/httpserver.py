"""A small HTTP server on 127.0.0.1 for testing downloads without the internet.

``serve_files({"genki4k.tar": path, ...})`` is a context manager that starts a
threaded :mod:`http.server` on a free loopback port, serves the given files at
``/<name>``, and yields a :class:`FileServer` whose ``url(name)`` gives the
address.  It honours ``Range: bytes=N-`` requests (answering 206), and can be
told to misbehave so tests can check how the client copes:

* ``server.drop_after = n``: announce the full ``Content-Length`` but close the
  connection after sending ``n`` bytes (a dropped connection), once per
  request until reset to None;
* ``server.support_range = False``: ignore ``Range`` and send the whole file;
* ``server.trickle = (n, seconds)``: send the body ``n`` bytes at a time with a
  pause of ``seconds`` between writes (a slow or stalled server).

Every request's path and ``Range`` header are recorded in ``server.requests``.
"""
from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, Path]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = {name: Path(path) for name, path in files.items()}
        self.drop_after: int | None = None
        self.support_range = True
        self.trickle: tuple[int, float] | None = None
        self.requests: list[tuple[str, str | None]] = []

    def url(self, name: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/{name}"


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        self.server.requests.append((name, range_header))
        path = self.server.files.get(name)
        if path is None or not path.is_file():
            self.send_error(404, "not found")
            return
        size = path.stat().st_size
        start = 0
        if range_header and self.server.support_range and range_header.startswith("bytes="):
            first = range_header[len("bytes="):].split("-", 1)[0]
            start = int(first) if first.isdigit() else 0
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        budget = self.server.drop_after
        trickle = self.server.trickle
        with open(path, "rb") as handle:
            handle.seek(start)
            while True:
                if trickle is not None:
                    time.sleep(trickle[1])
                chunk = handle.read(trickle[0] if trickle is not None else 1 << 16)
                if not chunk:
                    break
                if budget is not None:
                    chunk = chunk[:budget]
                    budget -= len(chunk)
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if budget is not None and budget <= 0:
                    self.close_connection = True
                    return


@contextlib.contextmanager
def serve_files(files: dict[str, Path]) -> Iterator[FileServer]:
    """Serve ``files`` (URL name -> local path) on 127.0.0.1 until the block ends."""
    server = FileServer(files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
