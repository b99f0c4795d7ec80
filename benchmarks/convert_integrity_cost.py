#!/usr/bin/env python
"""What the integrity work costs a conversion: ``convert_npz`` of one generated official npz, this checkout vs a
baseline checkout (e.g. main before issue 14) vs this checkout with ``os.fsync`` disabled, interleaved, each run
in a fresh process; prints wall and CPU (user+sys) medians.

    python benchmarks/convert_integrity_cost.py --baseline /path/to/other/checkout [--arch mixer_b16_zoo] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mixer_zoo.reference.flax_mixer import make_official_npz
from mixer_zoo.util.report import format_table, write_json

CHILD = """
import os, resource, sys, time
if sys.argv[4] == "nofsync":
    os.fsync = lambda fd: None
from mixer_zoo.tools.convert import convert_npz
import mixer_zoo
assert mixer_zoo.__file__.startswith(sys.argv[3]), mixer_zoo.__file__
r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
convert_npz(sys.argv[1], sys.argv[2], progress=False)
wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
print(wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="another checkout of mixer-zoo to compare with")
    parser.add_argument("--arch", default="mixer_b16_zoo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[1])
    variants = [("baseline", str(Path(args.baseline).resolve()), "fsync"), ("this checkout", here, "fsync"),
                ("this checkout, no fsync", here, "nofsync")]
    times = {name: [] for name, _, _ in variants}
    with tempfile.TemporaryDirectory(prefix="mixer-zoo-integrity-cost-") as tmp:
        src = make_official_npz(Path(tmp) / "checkpoint.npz", args.arch, 1000, seed=0)
        for r in range(args.rounds):
            for name, root, mode in variants:
                out = Path(tmp) / f"out{r}-{mode}-{len(times[name])}-{name.split()[0]}"
                env = dict(os.environ, PYTHONPATH=root, MIXER_ZOO_CACHE=str(Path(tmp) / "cache"))
                done = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), root, mode], env=env,
                                      cwd=tmp, capture_output=True, text=True, check=True)
                times[name].append(tuple(map(float, done.stdout.split()[-2:])))
                print(f"round {r + 1}: {name}: {times[name][-1][0]:.2f} s wall, {times[name][-1][1]:.2f} s CPU", flush=True)
        size = src.stat().st_size
    rows = [dict(variant=name, file_mb=size / 1e6, wall_median_s=statistics.median(t[0] for t in runs),
                 cpu_median_s=statistics.median(t[1] for t in runs), load_average=os.getloadavg()[0])
            for name, runs in times.items()]
    print(format_table(rows))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
