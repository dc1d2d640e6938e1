"""Loopback HTTP server for tests: static files with single byte ranges, every request logged."""
from __future__ import annotations

import functools
import http.server
import io
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges, as web servers and object stores serve them.

    Each request is appended to ``server.requests`` as (method, path) and the size of each
    ranged response to ``server.served``; GETs of the paths in ``server.slow`` take half a
    second (lets concurrent downloads overlap)."""

    def log_message(self, *args):
        pass

    def send_head(self):
        self.server.requests.append((self.command, self.path))
        if self.command == "GET" and self.path in self.server.slow:
            time.sleep(0.5)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if not match or not os.path.isfile(path):
            return super().send_head()
        with open(path, "rb") as f:
            data = f.read()
        start = int(match.group(1))
        end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.end_headers()
        self.server.served.append(max(0, end - start + 1))
        return io.BytesIO(data[start:end + 1])


@contextmanager
def serve(root: str | Path) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """Serve the files under ``root`` on a free loopback port; yields (base URL, server)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    server.requests, server.served, server.slow = [], [], set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
