"""``mixer_zoo.util.files``: the one way files are written (unique exclusive temp, fsync, rename) and locked."""
import os
import time

import pytest

from conftest import run_in_threads
from mixer_zoo.util import files


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"new and half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        files.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    files.atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    assert oct(target.stat().st_mode & 0o777) == oct(files.umask_mode(0o666))


def test_exclusive_creation_never_follows_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for planted in (tmp_path / "link", tmp_path / "dangling"):
        planted.symlink_to(victim if planted.name == "link" else tmp_path / "nowhere")
        with pytest.raises(FileExistsError):
            files.create_exclusive(planted)
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()


def test_temp_names_are_unique_and_recognised(tmp_path):
    names = set()
    for _ in range(50):
        fd, path = files.unique_temp(tmp_path, "model.safetensors")
        os.close(fd)
        names.add(path.name)
        assert files.is_temp_name(path.name)
    assert len(names) == 50
    assert files.remove_temps(tmp_path, "model.safetensors") == 50 and not list(tmp_path.iterdir())
    assert not files.is_temp_name("model.safetensors") and not files.is_temp_name(".model.safetensors.partial")


def test_atomic_copy_refuses_a_source_that_is_not_what_was_validated(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    digest = files.atomic_copy(src, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == b"payload"
    with pytest.raises(ValueError, match="changed while being copied"):
        files.atomic_copy(src, tmp_path / "b", sha256="0" * 64)
    assert not (tmp_path / "b").exists() and sorted(os.listdir(tmp_path)) == ["a", "src"]
    assert files.atomic_copy(src, tmp_path / "c", sha256=digest) == digest


def test_an_os_error_gets_the_file_name():
    error = files.named(OSError(28, "No space left on device"), "/x/y")
    assert error.filename == "/x/y" and error.errno == 28
    assert files.named(FileNotFoundError(2, "gone", "/a"), "/b").filename == "/a"


def test_the_lock_lets_one_writer_in_at_a_time(tmp_path):
    lock = tmp_path / "locks" / "x.lock"
    inside, overlaps = [], []

    def writer(i):
        with files.locked(lock, "x", quiet=True):
            inside.append(i)
            overlaps.append(len(inside))
            time.sleep(0.02)
            inside.remove(i)

    run_in_threads(writer, 6)
    assert overlaps == [1] * 6
    with files.locked(lock, "x", quiet=True):
        with pytest.raises(TimeoutError, match="still locked by another process"):
            with files.locked(lock, "x", timeout=0.1, quiet=True):
                pass
