"""Shared by the integrity tests and the fault-injection suite: a tiny Mixer that converts and loads in
milliseconds, a local HTTP server on 127.0.0.1 the test starts and stops, and checks of what a run left.

``tiny_architecture`` shrinks ``mixer_s32_zoo`` (in this process, or in a fault worker) to a 2-block,
16-wide Mixer: the real conversion, publishing and ``pretrained=True`` code runs on it unchanged, with files
of about 200 KB instead of 76 MB.
"""
from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional

TAG = "mixer_s32_zoo.gsam_in1k"
ARCH = "mixer_s32_zoo"
TINY = dict(patch_size=32, num_blocks=2, embed_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32)


@contextlib.contextmanager
def tiny_architecture() -> Iterator[Dict[str, int]]:
    """``mixer_s32_zoo`` with TINY dims for the duration (the dict is shared by every module that reads it)."""
    from mixer_zoo.model.architectures import ARCHITECTURES, param_count
    from mixer_zoo.weights.manifest import get_entry

    saved = ARCHITECTURES[ARCH]
    entry = get_entry(TAG)  # the cached manifest's entry: its num_params must describe the tiny file
    saved_params = entry["num_params"]
    ARCHITECTURES[ARCH] = dict(TINY)
    entry["num_params"] = param_count(ARCH)
    try:
        yield dict(TINY)
    finally:
        ARCHITECTURES[ARCH] = saved
        entry["num_params"] = saved_params


def make_tiny_npz(path: Path, num_classes: int = 1000, seed: int = 0) -> Path:
    from mixer_zoo.reference.flax_mixer import make_official_npz

    return make_official_npz(path, dict(TINY, img_size=224), num_classes, seed)


def leftovers(*folders: Path) -> List[str]:
    """Temp files, ``.part`` files and staging folders under ``folders`` (lock files are meant to stay)."""
    from mixer_zoo.util.files import is_temp_name

    found = []
    for folder in folders:
        if not folder.exists():
            continue
        for item in folder.rglob("*"):
            if ".locks" in item.parts:
                continue
            name = item.name
            if is_temp_name(name) or name.endswith((".part", ".partial")):
                found.append(str(item))
    return found


class LocalServer:
    """Serves ``files`` (``/path`` -> bytes) on 127.0.0.1 only, on a free port, until ``close()``.

    Knobs, per server: honour ``Range`` or not, send ``Content-Length`` or not, cut the next responses after
    N bytes (``cut_after``), answer 416 past the end (with ``Content-Range: bytes */N``), ``redirects``
    (``/path`` -> Location), and a delay per 64 KiB chunk so concurrent clients overlap. Every request is
    recorded."""

    CHUNK = 64 << 10

    def __init__(self, files: Dict[str, bytes], chunk_delay: float = 0.0) -> None:
        self.files = dict(files)
        self.requests: List[dict] = []
        self.cut_after: List[int] = []
        self.honour_range = True
        self.send_length = True
        self.redirects: Dict[str, str] = {}
        self.headers: Dict[str, Dict[str, str]] = {}  # extra response headers per path (a Hub endpoint's)
        self.chunk_delay = chunk_delay
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one response per connection: the body ends when it closes

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

            def do_HEAD(self):
                server.handle(self, head=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def handle(self, h: BaseHTTPRequestHandler, head: bool = False) -> None:
        header = h.headers.get("Range")
        with self.lock:
            record = dict(path=h.path, range=header, status=None, sent=0, method="HEAD" if head else "GET")
            self.requests.append(record)
            cut = None if head else self.cut_after.pop(0) if self.cut_after else None
        if h.path in self.redirects:
            record["status"] = 302
            h.send_response(302)
            h.send_header("Location", self.redirects[h.path])
            h.end_headers()
            return
        body = self.files.get(h.path)
        if body is None:
            record["status"] = 404
            h.send_error(404)
            return
        start = int(header.split("=")[1].split("-")[0]) if header and self.honour_range else 0
        if start >= len(body) and start:
            record["status"] = 416
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(body)}")
            h.end_headers()
            return
        part = body[start:]
        record["status"] = 206 if start else 200
        h.send_response(record["status"])
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if self.send_length:
            h.send_header("Content-Length", str(len(part)))
        for key, value in self.headers.get(h.path, {}).items():
            h.send_header(key, value)
        h.end_headers()
        if head:
            return
        limit = len(part) if cut is None else min(cut, len(part))
        try:
            for offset in range(0, limit, self.CHUNK):  # bounded: one pass over the body
                h.wfile.write(part[offset:min(offset + self.CHUNK, limit)])
                record["sent"] = min(offset + self.CHUNK, limit)
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed on purpose)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def one_line_error(stderr: str, command: str) -> Optional[str]:
    """The error line of a CLI run, or None when stderr is not exactly one ``mixer-zoo CMD: error:`` line
    (after any progress/waiting notes)."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("waiting for another process")]
    if len(lines) == 1 and lines[0].startswith(f"mixer-zoo {command}: error: ") and "Traceback" not in stderr:
        return lines[0]
    return None
