"""Downloads from a real HTTP server on 127.0.0.1: cache, resume (Range), retry after a cut, sha256."""
import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mixer_zoo.weights.download import cached_path, download

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at /ckpt/Mixer-T.npz, honouring ``Range``; can cut the first responses short or
    ignore ranges, and records what each request asked for and got."""

    def __init__(self):
        self.requests, self.cut_after, self.honour_range = [], [], True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/ckpt/Mixer-T.npz":
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and server.honour_range:
                    start = int(header.split("=")[1].split("-")[0])
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(0) if server.cut_after else None
                sent = body[:cut] if cut is not None else body
                server.requests.append(dict(range=header, sent=len(sent)))
                self.wfile.write(sent)
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ckpt/Mixer-T.npz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_downloads_into_the_cache_and_reuses_it(server, tmp_path):
    path = download(server.url, sha256=SHA, cache_dir=tmp_path, progress=False)
    assert path == cached_path(server.url, tmp_path) and path.read_bytes() == PAYLOAD
    assert path.parent.name == "ckpt"  # the URL's folder is kept: releases share file names
    again = download(server.url, sha256=SHA, cache_dir=tmp_path, progress=False)
    assert again == path and len(server.requests) == 1
    assert [p.name for p in path.parent.iterdir()] == ["Mixer-T.npz"]


def test_resumes_a_partial_file_with_a_range_request(server, tmp_path):
    dest = cached_path(server.url, tmp_path)
    dest.parent.mkdir(parents=True)
    have = len(PAYLOAD) // 3
    dest.with_name(dest.name + ".part").write_bytes(PAYLOAD[:have])
    path = download(server.url, sha256=SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [dict(range=f"bytes={have}-", sent=len(PAYLOAD) - have)]


def test_a_cut_connection_is_resumed_by_the_next_attempt(server, tmp_path):
    server.cut_after = [1 << 20]
    path = download(server.url, sha256=SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, f"bytes={1 << 20}-"]


def test_a_server_ignoring_ranges_restarts_the_file(server, tmp_path):
    server.honour_range = False
    dest = cached_path(server.url, tmp_path)
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(b"x" * 1000)
    assert download(server.url, sha256=SHA, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_sha256_mismatch_fails_and_keeps_nothing(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(RuntimeError, match=f"sha256 mismatch: expected {wrong}, got {SHA}"):
        download(server.url, sha256=wrong, cache_dir=tmp_path, progress=False)
    folder = cached_path(server.url, tmp_path).parent
    assert list(folder.iterdir()) == []


def test_a_corrupted_cache_entry_is_downloaded_again(server, tmp_path):
    dest = cached_path(server.url, tmp_path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"corrupted")
    assert download(server.url, sha256=SHA, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_http_errors_are_one_line(server, tmp_path):
    missing = server.url.replace("Mixer-T", "Mixer-Z")
    with pytest.raises(RuntimeError, match=r"Mixer-Z.npz: download failed: HTTP 404") as info:
        download(missing, cache_dir=tmp_path, progress=False)
    assert "\n" not in str(info.value)


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "c"))
    url = "https://storage.googleapis.com/mixer_models/sam/Mixer-B_16.npz"
    assert cached_path(url) == tmp_path / "c" / "storage.googleapis.com" / "mixer_models" / "sam" / "Mixer-B_16.npz"
