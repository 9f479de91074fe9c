"""Peak memory of ``Index.build`` from an ``np.memmap``: what a large corpus costs to index.

For each layout a child process maps the input, imports hashpivot and torch (the baseline),
builds with ``store="float32"`` and reports the peak of its anonymous memory (``RssAnon``,
sampled every 2 ms: the input's pages are file-backed and do not count) above that baseline,
with ``MALLOC_ARENA_MAX=1``. The input is standard normal float32 rows written once to a
temporary folder (or ``--input`` an existing ``.npy``).

    python bench/bench_build_memory.py --n 1000000 --dim 384      # the README's figures
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent("""
    import sys, threading, time, numpy as np
    import hashpivot as hp, torch  # imported before the baseline
    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    x = np.load(sys.argv[1], mmap_mode="r")
    base = anon(); peak = [base]; stop = [False]
    def watch():
        while not stop[0]:
            peak[0] = max(peak[0], anon()); time.sleep(0.002)
    t = threading.Thread(target=watch, daemon=True); t.start()
    t0 = time.perf_counter()
    hp.Index.build(x, layout=sys.argv[2], n_bits=int(sys.argv[3]), progress=False)
    seconds = time.perf_counter() - t0
    stop[0] = True; t.join()
    print(peak[0] - base, seconds)
""")
WRITE_ROWS = 100_000  # rows generated and written at once


def write_input(path: Path, n: int, dim: int) -> None:
    rng = np.random.default_rng(7)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, WRITE_ROWS):
        x[s : s + WRITE_ROWS] = rng.standard_normal((min(WRITE_ROWS, n - s), dim))
    x.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--bits", type=int, default=128)
    ap.add_argument("--layouts", nargs="+", default=["flat", "ivf"])
    ap.add_argument("--input", default=None, help="an existing float32 .npy (n, dim)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(a.input) if a.input else Path(tmp) / "x.npy"
        if not a.input:
            write_input(path, a.n, a.dim)
        x = np.load(path, mmap_mode="r")
        mb = x.nbytes / 1e6
        print(f"# Build memory: {x.shape[0]:,} x {x.shape[1]} float32 memmap ({mb:,.0f} MB)\n")
        print("| layout | peak anonymous MB above imports | x input | build s |")
        print("|---|---|---|---|")
        env = dict(os.environ, MALLOC_ARENA_MAX="1")
        for layout in a.layouts:
            cmd = [sys.executable, "-c", CHILD, str(path), layout, str(a.bits)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            peak, seconds = out.stdout.split()[-2:]
            peak_mb = int(peak) / 1e6
            print(f"| {layout} | {peak_mb:,.0f} | {peak_mb / mb:.2f} | {float(seconds):.1f} |")


if __name__ == "__main__":
    main()
