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


# ---- integrity under concurrency and faults (issue 14) --------------------------------------------------------

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from integrity_helpers import LocalServer, leftovers  # noqa: E402
from mixer_zoo.weights.download import DownloadError  # noqa: E402


@pytest.fixture
def local():
    s = LocalServer({"/ckpt/Mixer-T.npz": PAYLOAD, "/other/x.npz": b"elsewhere"})
    yield s
    s.close()


def test_concurrent_downloads_of_one_file_all_get_it_whole_from_one_request(local, tmp_path):
    local.chunk_delay = 0.01  # ~0.5 s per download: the four calls overlap
    url = local.url("/ckpt/Mixer-T.npz")
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download(url, cache_dir=tmp_path, progress=False), range(4)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == PAYLOAD
    assert len(local.requests) == 1  # the others waited on the lock and found the finished file
    assert leftovers(tmp_path) == []


def test_a_cut_response_without_content_length_is_never_cached_as_final(local, tmp_path):
    local.send_length = False
    local.cut_after = [1 << 20]
    path = download(local.url("/ckpt/Mixer-T.npz"), cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD  # the Range probe found the rest
    assert [r["status"] for r in local.requests] == [200, 206]
    local.requests.clear()
    local.honour_range = False  # now nothing can tell a cut from the end: refuse, keep nothing final
    local.cut_after = [1 << 20]
    with pytest.raises(DownloadError, match="never confirmed the file's size") as err:
        download(local.url("/ckpt/Mixer-T.npz"), cache_dir=tmp_path / "b", progress=False, retries=1)
    assert "\n" not in str(err.value)
    assert not cached_path(local.url("/ckpt/Mixer-T.npz"), tmp_path / "b").exists()


def test_an_oversized_stale_part_meets_416_and_is_downloaded_again(local, tmp_path):
    url = local.url("/ckpt/Mixer-T.npz")
    part = cached_path(url, tmp_path).with_name("Mixer-T.npz.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD + b"stale tail from another version")
    assert download(url, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert [r["status"] for r in local.requests] == [416, 200]
    assert not part.exists()


def test_redirects_stay_within_the_origin(local, tmp_path):
    local.redirects = {"/moved.npz": "/ckpt/Mixer-T.npz", "/ftp.npz": "ftp://127.0.0.1/x.npz",
                       "/away.npz": "http://localhost:1/x.npz", "/asset.npz": "http://objects.githubusercontent.com/x"}
    assert download(local.url("/moved.npz"), cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    for path in ("/ftp.npz", "/away.npz", "/asset.npz"):  # github's asset host only over https
        with pytest.raises((DownloadError, RuntimeError), match="redirect") as err:
            download(local.url(path), cache_dir=tmp_path, progress=False)
        assert "\n" not in str(err.value)
    assert not any(r["path"] == "/x.npz" for r in local.requests)


def test_a_symlink_planted_at_the_part_name_is_not_followed(local, tmp_path):
    url = local.url("/ckpt/Mixer-T.npz")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    dest = cached_path(url, tmp_path / "cache")
    dest.parent.mkdir(parents=True)
    dest.with_name("Mixer-T.npz.part").symlink_to(victim)
    assert download(url, cache_dir=tmp_path / "cache", progress=False).read_bytes() == PAYLOAD
    assert victim.read_text() == "precious"


def test_a_cached_file_failing_the_format_check_is_fetched_again_and_a_bad_download_removed(local, tmp_path):
    url = local.url("/ckpt/Mixer-T.npz")
    dest = cached_path(url, tmp_path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD[:1000])  # what an unverified cut download used to leave

    def needs_full_size(path):
        if path.stat().st_size != len(PAYLOAD):
            raise ValueError("not a zip")

    assert download(url, cache_dir=tmp_path, progress=False, validate=needs_full_size).read_bytes() == PAYLOAD
    local.files["/ckpt/Mixer-T.npz"] = b"an error page, not a checkpoint"
    with pytest.raises(DownloadError, match="not usable \\(not a zip\\).*removed"):
        download(url, cache_dir=tmp_path / "b", progress=False, validate=needs_full_size)
    assert not cached_path(url, tmp_path / "b").exists() and leftovers(tmp_path / "b") == []


def test_only_http_urls_are_downloaded(tmp_path):
    for url in ("file:///etc/passwd", "ftp://example.com/x.npz"):
        with pytest.raises(DownloadError, match="only http"):
            download(url, cache_dir=tmp_path, progress=False)
