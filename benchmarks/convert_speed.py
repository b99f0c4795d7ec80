#!/usr/bin/env python
"""Item 8 of issue 3: converting an L/16-shaped official npz (~830 MB) vs copying the file.

Generates a random official-layout checkpoint in a temp folder, then alternates ``shutil.copyfile`` and
``convert_npz`` (each conversion in a fresh subprocess, so its peak RSS is its own) and prints the ratios
measured in this one run: conversion time / copy time, and peak RSS / file size (targets: both <= 1.5).

    python benchmarks/convert_speed.py [--arch mixer_l16_zoo] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mixer_zoo.util.hardware import cpu_model_name
from mixer_zoo.weights.download import sha256_of
from mixer_zoo.reference.flax_mixer import make_official_npz
from mixer_zoo.util.report import format_table, write_json

# Runs in a child: imports first (their memory is reported apart), then the timed conversion.
CHILD = """
import json, sys, time
from mixer_zoo.tools.convert import convert_npz

def peak_rss():
    # VmHWM of this process; ru_maxrss would carry the parent's peak across fork+exec on Linux
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

baseline = peak_rss()
start = time.perf_counter()
convert_npz(sys.argv[1], sys.argv[2], progress=False)
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds=seconds, peak_rss=peak_rss(), baseline_rss=baseline)))
"""


def convert_in_child(src: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], check=True, capture_output=True,
                            text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mixer_l16_zoo")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mixer-zoo-convert-bench-") as tmp:
        tmp = Path(tmp)
        src = make_official_npz(tmp / "checkpoint.npz", args.arch, args.num_classes, seed=0)
        size = src.stat().st_size
        print(f"generated {args.arch} npz: {size / 1e6:.0f} MB", flush=True)
        copies, hashes, conversions = [], [], []
        shutil.copyfile(src, tmp / "warm.npz")  # first touch of the disk path, not measured
        (tmp / "warm.npz").unlink()
        for i in range(args.repeats):
            start = time.perf_counter()
            shutil.copyfile(src, tmp / "copy.npz")
            copies.append(time.perf_counter() - start)
            (tmp / "copy.npz").unlink()
            start = time.perf_counter()
            sha256_of(src)  # the converter must hash the source for the metadata: a floor for its time
            hashes.append(time.perf_counter() - start)
            conversions.append(convert_in_child(src, tmp / "out"))
            shutil.rmtree(tmp / "out")
            print(f"  round {i + 1}: copy {copies[-1]:.2f} s, sha256 {hashes[-1]:.2f} s, convert {conversions[-1]['seconds']:.2f} s", flush=True)

    copy_s = statistics.median(copies)
    hash_s = statistics.median(hashes)
    convert_s = statistics.median(c["seconds"] for c in conversions)
    peak = max(c["peak_rss"] for c in conversions)
    baseline = max(c["baseline_rss"] for c in conversions)
    rows = [dict(arch=args.arch, file_mb=size / 1e6, copy_s=copy_s, convert_s=convert_s,
                 time_ratio=convert_s / copy_s,
                 sha256_s=hash_s, sha256_ratio=hash_s / copy_s, peak_rss_mb=peak / 1e6, import_rss_mb=baseline / 1e6,
                 rss_ratio=peak / size, hardware=f"{cpu_model_name()}, {os.cpu_count()} cores")]
    print(format_table(rows))
    print("targets: time_ratio <= 1.5, rss_ratio <= 1.5 (peak RSS of the converting process, imports included);\n"
          "sha256_ratio: hashing the source alone (the metadata records it), a floor for time_ratio")
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
