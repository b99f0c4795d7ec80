"""Fault injection: many processes at once, SIGKILL at random points, flipped bits in every file kind, a full
disk and a read-only destination, against the real download, conversion, install and load code.

The goal for every case: no corrupt file handed out (a result is either a one-line error or exactly the
right weights), no traceback, and no leftovers once the command has been run again. Each case is counted;
the session ends with one line of counts (cases tried, passed, per scenario). Runs on a tiny Mixer (files
of ~200 KB) and a local HTTP server on 127.0.0.1 that the tests start and stop; bounded in time.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

pytest.importorskip("flax")

from fault_workers import state_digest  # noqa: E402
from integrity_helpers import TAG, LocalServer, leftovers, make_tiny_npz, one_line_error, tiny_architecture  # noqa: E402
from mixer_zoo.cli import main as cli_main  # noqa: E402
from mixer_zoo.formats.npz import npz_to_timm_state_dict  # noqa: E402
from mixer_zoo.mmpretrain.cifar import BASE_FOLDER, load_split, write_cifar10  # noqa: E402
from mixer_zoo.reference.flax_mixer import load_official_npz  # noqa: E402
from mixer_zoo.tools.publish import install_in_cache  # noqa: E402
from mixer_zoo.weights.download import download  # noqa: E402
from mixer_zoo.weights.hub_cache import WeightsError  # noqa: E402
from mixer_zoo.weights.integrity import content_sha256, verify_config  # noqa: E402
from mixer_zoo.weights.manifest import get_entry  # noqa: E402

REPO = get_entry(TAG)["hf_hub_id"]
N = 4  # processes at once
TALLY = defaultdict(lambda: [0, 0])  # scenario -> [tried, passed]
NOTES = defaultdict(int)


FAILED = []


def record(scenario: str, ok: bool, note: str = "", what: str = "") -> bool:
    """Count one case; a failed one fails the test it belongs to (see ``_every_case_passes``)."""
    TALLY[scenario][0] += 1
    TALLY[scenario][1] += bool(ok)
    if note:
        NOTES[note] += 1
    if not ok:
        FAILED.append(f"{scenario}: {what or 'case'} #{TALLY[scenario][0]}")
    return bool(ok)


@pytest.fixture(autouse=True)
def _every_case_passes():
    before = len(FAILED)
    yield
    assert FAILED[before:] == []


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not TALLY:
            return
        tried, passed = (sum(v[i] for v in TALLY.values()) for i in (0, 1))
        parts = ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in TALLY.items())
        notes = "; ".join(f"{k}: {v}" for k, v in sorted(NOTES.items()))
        terminalreporter.write_line(f"fault injection: {tried} cases tried, {passed} passed ({parts})"
                                    + (f"; {notes}" if notes else ""))


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    plugin = _Summary()
    if request.config.pluginmanager.get_plugin("mixer-zoo-faults") is None:
        request.config.pluginmanager.register(plugin, name="mixer-zoo-faults")
    yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny checkpoints, their expected weights, a reference conversion, a lock folder; tiny arch on."""
    root = tmp_path_factory.mktemp("faults")
    saved = os.environ.get("MIXER_ZOO_CACHE")
    os.environ["MIXER_ZOO_CACHE"] = str(root / "locks")
    import huggingface_hub.constants as hf_constants

    saved_offline, hf_constants.HF_HUB_OFFLINE = hf_constants.HF_HUB_OFFLINE, True
    with tiny_architecture():
        npz = make_tiny_npz(root / "src" / "Mixer-T.npz", seed=11)
        other = make_tiny_npz(root / "src" / "Other.npz", seed=12)
        ref = root / "reference"
        assert cli_main(["convert", str(npz), "--out", str(ref), "--quiet"]) == 0
        yield dict(root=root, npz=npz, other=other, ref=ref, locks=str(root / "locks"),
                   digest=state_digest(npz_to_timm_state_dict(load_official_npz(npz))),
                   other_digest=state_digest(npz_to_timm_state_dict(load_official_npz(other))))
    hf_constants.HF_HUB_OFFLINE = saved_offline
    if saved is None:
        os.environ.pop("MIXER_ZOO_CACHE", None)
    else:
        os.environ["MIXER_ZOO_CACHE"] = saved


@pytest.fixture(scope="module")
def procs():
    """A forkserver that imported torch, timm and this checkout's mixer_zoo once: a worker then starts in
    ~0.1 s. (Python 3.11's forkserver ignores the parent's sys.path, so it gets the checkout via PYTHONPATH.)"""
    import multiprocessing.forkserver

    import fault_workers

    here = Path(__file__).resolve().parent
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(here.parent), str(here)] + ([saved] if saved else []))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fault_workers"])
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    warm = ctx.Process(target=fault_workers.state_digest, args=({},))
    warm.start()
    warm.join(300)  # waits for the server's imports, so timings below are the workers' own
    return ctx


def start(ctx, world, name, **task):
    task = dict(task, locks=world["locks"], result=str(world["root"] / "results" / f"{name}.json"))
    Path(task["result"]).parent.mkdir(exist_ok=True)
    for suffix in ("", ".stderr"):
        Path(task["result"] + suffix).unlink(missing_ok=True)
    import fault_workers

    p = ctx.Process(target=fault_workers.run, args=(task,), daemon=True)
    p.start()
    p.task = task
    return p


def kill(p) -> None:
    """SIGKILL the worker unless it already ended (the forkserver, its parent, reaps it)."""
    try:
        os.kill(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.join()


def finish(p, timeout=120):
    p.join(timeout)
    if p.is_alive():
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        raise AssertionError(f"worker {p.task['action']} did not finish in {timeout} s")
    path = Path(p.task["result"])
    stderr = Path(str(path) + ".stderr").read_text() if Path(str(path) + ".stderr").exists() else ""
    return (json.loads(path.read_text()) if path.exists() else None), stderr


def folder_state(folder: Path):
    """("complete", weights digest) for an intact converted folder, ("incomplete", None) for one without
    config.json or weights, ("MIXED", reason) when its config does not belong to its weights."""
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not (weights.is_file() and config.is_file() and (folder / "README.md").is_file()):
        return ("incomplete", None)
    try:
        computed, recorded = content_sha256(weights)
        if recorded != computed or not verify_config(config, computed):
            return ("MIXED", "records do not match")
    except ValueError as e:
        return ("MIXED", str(e))
    from safetensors.torch import load_file
    return ("complete", state_digest(load_file(str(weights))))


def clean_cli(code_stderr, command):
    code, stderr = code_stderr["code"], code_stderr["stderr"]
    return "Traceback" not in stderr and (code == 0 or one_line_error(stderr, command) is not None)


# ---- N processes at once ----------------------------------------------------------------------------------

def test_concurrent_downloads_of_one_file(procs, world):
    payload = world["npz"].read_bytes() * 8
    server = LocalServer({"/m/Mixer-T.npz": payload}, chunk_delay=0.01)
    try:
        cache = world["root"] / "dl-concurrent"
        workers = [start(procs, world, f"dl{i}", action="download", url=server.url("/m/Mixer-T.npz"),
                         cache=str(cache)) for i in range(N)]
        want = hashlib.sha256(payload).hexdigest()
        for p in workers:
            result, stderr = finish(p)
            record("concurrency", result and result.get("sha256") == want and "Traceback" not in stderr)
    finally:
        server.close()
    assert len([r for r in server.requests if r["status"] == 200]) == 1  # one fetched, the others waited
    assert record("concurrency", leftovers(cache) == [])
    assert TALLY["concurrency"][0] == TALLY["concurrency"][1]


def test_concurrent_conversions_into_one_folder(procs, world):
    out = world["root"] / "conv-concurrent"
    argv = ["convert", str(world["npz"]), "--out", str(out), "--quiet"]
    for force in (True, False):
        shutil.rmtree(out, ignore_errors=True)
        workers = [start(procs, world, f"cv{i}", action="cli", argv=argv + (["--force"] if force else []))
                   for i in range(N)]
        results = [finish(p)[0] for p in workers]
        codes = sorted(r["code"] for r in results)
        expected = [0] * N if force else [0] + [2] * (N - 1)  # without --force the first one wins
        for r in results:
            record("concurrency", clean_cli(r, "convert") and (r["code"] == 0 or "not empty" in r["stderr"]))
        assert codes == expected, results
        assert record("concurrency", folder_state(out) == ("complete", world["digest"]) and leftovers(out.parent) == [])


def test_concurrent_installs_and_loads(procs, world):
    hub = world["root"] / "hub-concurrent"
    installers = [start(procs, world, f"in{i}", action="cli", hub_cache=str(hub),
                        argv=["publish", str(world["ref"]), "--repo-id", REPO, "--local-cache"]) for i in range(2)]
    loaders = [start(procs, world, f"ld{i}", action="load", hub_cache=str(hub)) for i in range(N)]
    for p in installers:
        result, _ = finish(p)
        record("concurrency", result["code"] == 0 and "Traceback" not in result["stderr"])
    for p in loaders:
        result, stderr = finish(p)
        outcomes = result["outcomes"]
        wrong = [o for o in outcomes if o["ok"] and o["digest"] != world["digest"]]
        unclean = [o for o in outcomes if not o["ok"] and (o["error"] != "WeightsError" or "\n" in o["message"])]
        record("concurrency", not wrong and not unclean and "Traceback" not in stderr)
    model = timm.create_model(TAG, pretrained=True, cache_dir=str(hub))
    assert record("concurrency", state_digest(model.state_dict()) == world["digest"] and leftovers(hub) == [])
    assert TALLY["concurrency"][0] == TALLY["concurrency"][1]


def _local_hub(weights: bytes, **knobs) -> LocalServer:
    """A "Hub" on 127.0.0.1 serving TAG's model.safetensors the way huggingface_hub asks for it."""
    path = f"/{REPO}/resolve/main/model.safetensors"
    server = LocalServer({path: weights}, **knobs)
    server.headers[path] = {"X-Repo-Commit": "c" * 40, "ETag": f'"{hashlib.sha256(weights).hexdigest()}"'}
    return server


@pytest.mark.parametrize("served", ["intact", "cut once", "bit-flipped"])
def test_concurrent_pretrained_loads_from_a_local_hub(procs, world, served):
    weights = (world["ref"] / "model.safetensors").read_bytes()
    body = _flipped(weights, len(weights) - 1000, 3) if served == "bit-flipped" else weights
    server = _local_hub(body, chunk_delay=0.005)
    if served == "cut once":
        server.cut_after = [len(body) // 2]
    hub = world["root"] / f"hub-remote-{served.replace(' ', '-')}"
    try:
        loaders = [start(procs, world, f"rl{i}", action="load", hub_cache=str(hub), endpoint=server.base, attempts=1)
                   for i in range(N)]
        for p in loaders:
            result, stderr = finish(p)
            outcome = result["outcomes"][-1] if result and result.get("outcomes") else result
            if outcome and outcome.get("ok"):
                ok = served != "bit-flipped" and outcome["digest"] == world["digest"]
            else:
                ok = (outcome and outcome.get("error") == "WeightsError" and "\n" not in outcome["message"]
                      and (served != "bit-flipped" or "content sha256 mismatch" in outcome["message"]))
                NOTES[f"loads refused ({served} Hub file)"] += bool(ok)
            record("concurrency", ok and "Traceback" not in stderr, what=f"{served}: {outcome}")
    finally:
        server.close()
    assert any(r["path"] == f"/{REPO}/resolve/main/model.safetensors" and r["method"] == "GET" for r in server.requests)


# ---- SIGKILL at a random point, then the same command again ------------------------------------------------

def _calibrate(procs, world, name, **task):
    began = time.perf_counter()
    result, _ = finish(start(procs, world, name, **task))
    return time.perf_counter() - began, result


def test_killed_conversions_leave_nothing_a_rerun_does_not_fix(procs, world):
    rng = random.Random(14)
    base = world["root"] / "kill-convert"
    base.mkdir()
    duration, _ = _calibrate(procs, world, "kc-cal", action="cli",
                             argv=["convert", str(world["npz"]), "--out", str(base / "cal"), "--quiet"])
    for i in range(10):
        out = base / f"out{i}"
        over_old = i % 2 == 1  # --force over a folder holding other weights
        if over_old:
            assert cli_main(["convert", str(world["other"]), "--out", str(out), "--quiet"]) == 0
        argv = ["convert", str(world["npz"]), "--out", str(out), "--quiet"] + (["--force"] if over_old else [])
        p = start(procs, world, f"kc{i}", action="cli", argv=argv)
        time.sleep(rng.uniform(0.0, 0.8 * duration))  # mostly inside the run (its exit takes the rest)
        kill(p)
        state = folder_state(out) if out.exists() else ("absent", None)
        staged = bool(leftovers(base))
        mixed = state[0] == "MIXED" or (state[0] == "complete" and state[1] not in (world["digest"], world["other_digest"]))
        code = cli_main(argv)
        if code != 0:  # "not empty": the killed run had finished, or was killed between the moves of a commit
            NOTES["reruns refused as 'not empty', then run with --force" + (
                " (the killed run had finished the folder)" if state[0] == "complete" else "")] += 1
            code = cli_main(argv + ["--force"])
        ok = (not mixed and code == 0 and folder_state(out) == ("complete", world["digest"])
              and leftovers(base) == [])
        record("kills", ok, note=f"conversions killed {'before' if p.exitcode == -9 else 'after'} they ended",
               what=f"{argv} state after kill {state}")
        NOTES["conversion kills that left staging behind (removed by the rerun)"] += staged


def test_killed_downloads_resume_or_restart_cleanly(procs, world):
    rng = random.Random(15)
    payload = os.urandom(1 << 20)
    server = LocalServer({"/k/big.bin": payload}, chunk_delay=0.02)
    try:
        url = server.url("/k/big.bin")
        duration, _ = _calibrate(procs, world, "kd-cal", action="download", url=url,
                                 cache=str(world["root"] / "kd-cal"))
        for i in range(5):
            cache = world["root"] / f"kd{i}"
            p = start(procs, world, f"kd{i}", action="download", url=url, cache=str(cache))
            time.sleep(rng.uniform(0.05, duration))
            kill(p)
            final = next((f for f in cache.rglob("big.bin")), None) if cache.exists() else None
            NOTES["download kills that left a .part behind"] += bool(leftovers(cache))
            handed_out_bad = final is not None and final.read_bytes() != payload
            before = len(server.requests)
            path = download(url, cache_dir=cache, progress=False)
            resumed = any(r["range"] for r in server.requests[before:])
            ok = not handed_out_bad and path.read_bytes() == payload and leftovers(cache) == []
            record("kills", ok, note="download resumed from its .part" if resumed else "")
    finally:
        server.close()


def test_killed_installs_never_load_wrong_weights(procs, world):
    rng = random.Random(16)
    for i in range(3):
        hub = world["root"] / f"ki{i}"
        p = start(procs, world, f"ki{i}", action="cli", hub_cache=str(hub),
                  argv=["publish", str(world["ref"]), "--repo-id", REPO, "--local-cache"])
        time.sleep(rng.uniform(0.0, 0.6))
        kill(p)
        try:
            good = state_digest(timm.create_model(TAG, pretrained=True, cache_dir=str(hub)).state_dict()) == world["digest"]
        except WeightsError as e:
            good = "\n" not in str(e)
        install_in_cache(world["ref"], REPO, cache_dir=hub)
        again = state_digest(timm.create_model(TAG, pretrained=True, cache_dir=str(hub)).state_dict())
        record("kills", good and again == world["digest"] and leftovers(hub) == [])


# ---- flipped bits in every file kind -----------------------------------------------------------------------

def _flips(size: int, count: int, seed: int):
    """``count`` (offset, bit) pairs: the first and last bytes, headers, and random places everywhere."""
    rng = random.Random(seed)
    fixed = [0, 1, 4, 8, 9, 30, size // 2, size - 1, size - 22, size - 10]
    offsets = [o for o in fixed if 0 <= o < size] + [rng.randrange(size) for _ in range(count)]
    return [(o, rng.randrange(8)) for o in offsets]


def _flipped(data: bytes, offset: int, bit: int) -> bytes:
    raw = bytearray(data)
    raw[offset] ^= 1 << bit
    return bytes(raw)


def _convert_flipped(world, src: Path, data: bytes, offset: int, bit: int, capsys) -> tuple:
    src.write_bytes(_flipped(data, offset, bit))
    out = world["root"] / "flip-out"
    shutil.rmtree(out, ignore_errors=True)
    code = cli_main(["convert", str(src), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    return code, err, out


@pytest.mark.parametrize("kind", ["npz", "pth"])
def test_bit_flips_in_sources_are_caught_or_harmless(world, tmp_path, kind, capsys):
    if kind == "npz":
        data = world["npz"].read_bytes()
    else:
        from safetensors.torch import load_file

        pth = tmp_path / "clean.pth"
        torch.save(load_file(str(world["ref"] / "model.safetensors")), pth)
        data = pth.read_bytes()
    src = tmp_path / f"flipped.{kind}"
    for offset, bit in _flips(len(data), 40, seed={"npz": 1, "pth": 2}[kind]):
        code, err, out = _convert_flipped(world, src, data, offset, bit, capsys)
        if code == 0:  # a byte nothing reads (a zip timestamp, ...): the weights must be the clean ones
            ok = folder_state(out) == ("complete", world["digest"])
            NOTES[f"{kind} flips in bytes that do not matter"] += ok
        else:
            ok = one_line_error(err, "convert") is not None and not out.exists()
        record("bit flips", ok and leftovers(world["root"] / "flip-out", tmp_path) == [],
               what=f"{kind} byte {offset} bit {bit}: exit {code}, {err.strip()[-200:]}")


@pytest.fixture
def hub_snapshot(world, tmp_path):
    hub = tmp_path / "hub"
    return hub, install_in_cache(world["ref"], REPO, cache_dir=hub)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_bit_flips_in_cached_files_never_load(world, hub_snapshot, name):
    hub, snapshot = hub_snapshot
    path = snapshot / name
    data = path.read_bytes()
    original_config = json.loads((snapshot / "config.json").read_text())
    for offset, bit in _flips(len(data), 40, seed=len(name)):
        path.write_bytes(_flipped(data, offset, bit))
        try:
            model = timm.create_model(TAG, pretrained=True, cache_dir=str(hub))
            same_config = json.loads((snapshot / "config.json").read_text()) == original_config
            ok = state_digest(model.state_dict()) == world["digest"] and same_config
        except WeightsError as e:
            ok = "\n" not in str(e) and str(path) in str(e) and "mixer-zoo cache clean" in str(e)
        record("bit flips", ok, what=f"{name} byte {offset} bit {bit}")
    path.write_bytes(data)


def test_bit_flips_in_a_cifar_batch_are_refused_or_confined_to_the_flipped_byte(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, 12)]
    write_cifar10(tmp_path, (images, labels), (images[:6], labels[:6]))
    path = tmp_path / BASE_FOLDER / "test_batch"
    data = path.read_bytes()
    for offset, bit in _flips(len(data), 40, seed=3):
        path.write_bytes(_flipped(data, offset, bit))
        try:
            got_images, got_labels = load_split(tmp_path, "test")
        except ValueError as e:
            record("bit flips", "\n" not in str(e) and str(path) in str(e))
            continue
        pixels = int((got_images != images[:6]).sum()) if got_images.shape == images[:6].shape else -1
        changed = pixels + sum(a != b for a, b in zip(got_labels.tolist(), labels[:6]))
        # the format has no checksum: a flipped pixel or in-range label byte is data, read as written
        ok = 0 <= changed <= 1 and got_labels.dtype == np.int64
        NOTES["CIFAR flips read as a changed data byte (no checksum in the format)"] += changed == 1
        record("bit flips", ok)
    path.write_bytes(data)


# ---- a full disk, a read-only destination ---------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(name, options):
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _remount(point, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True, capture_output=True)


def test_a_full_disk_then_room_again(world, tmpfs, capsys):
    payload = os.urandom(300_000)
    server = LocalServer({"/f/big.bin": payload})
    try:
        disk = tmpfs("full", "size=64k")  # the tiny weights alone are ~200 KB
        code = cli_main(["convert", str(world["npz"]), "--out", str(disk / "out"), "--quiet"])
        line = one_line_error(capsys.readouterr().err, "convert")
        record("full disk", code == 2 and line and "No space left on device" in line and list(disk.iterdir()) == [])
        code = cli_main(["convert", str(world["ref"]), "--to", "npz", "--out", str(disk / "x.npz")])
        line = one_line_error(capsys.readouterr().err, "convert")
        record("full disk", code == 2 and line and str(disk / "x.npz") in line and list(disk.iterdir()) == [])
        try:
            install_in_cache(world["ref"], REPO, cache_dir=disk / "hub")
            record("full disk", False)
        except OSError as e:
            record("full disk", e.filename is not None and "No space" in e.strerror and leftovers(disk) == [])
        try:
            download(server.url("/f/big.bin"), cache_dir=disk / "dl", progress=False)
            record("full disk", False)
        except OSError as e:
            record("full disk", e.filename is not None and not list((disk / "dl").rglob("big.bin")))
        _remount(disk, "size=8m")  # room again: every command completes, nothing left over
        path = download(server.url("/f/big.bin"), cache_dir=disk / "dl", progress=False)
        snapshot = install_in_cache(world["ref"], REPO, cache_dir=disk / "hub")
        code = cli_main(["convert", str(world["npz"]), "--out", str(disk / "out"), "--quiet"])
        ok = (code == 0 and path.read_bytes() == payload and folder_state(disk / "out") == ("complete", world["digest"])
              and (snapshot / "model.safetensors").is_file() and leftovers(disk) == [])
        record("full disk", ok)
    finally:
        server.close()


def test_a_read_only_destination(world, tmpfs, capsys):
    import huggingface_hub.constants as hf_constants

    ro = tmpfs("ro", "ro,size=1m")
    for argv, where in ((["convert", str(world["npz"]), "--out", str(ro / "out"), "--quiet"], ro / "out"),
                        (["convert", str(world["npz"]), "--out", str(ro), "--quiet"], ro),
                        (["publish", str(world["ref"]), "--repo-id", REPO, "--local-cache"], ro)):
        saved, hf_constants.HF_HUB_CACHE = hf_constants.HF_HUB_CACHE, str(ro)  # publish --local-cache's default
        try:
            code = cli_main(argv)
        finally:
            hf_constants.HF_HUB_CACHE = saved
        line = one_line_error(capsys.readouterr().err, argv[0])
        record("read-only", code == 2 and line and "Read-only file system" in line and str(ro) in line)
    server = LocalServer({"/r/x.bin": b"x" * 1000})
    try:
        download(server.url("/r/x.bin"), cache_dir=ro, progress=False)
        record("read-only", False)
    except OSError as e:
        record("read-only", e.filename is not None and str(ro) in e.filename)
    finally:
        server.close()
