"""Engine A/B by instruction count: the same searches under valgrind's callgrind with two builds.

    python bench/engine_instructions.py --builds OLD_DIR NEW_DIR

Instructions executed inside the compiled module (the self cost of every function of
``_core``, summed by ``callgrind_annotate``) for one batch of 100 real queries over the shared
corpus: repeatable for the same binary and inputs whatever else the machine does, where
timings on this VM drift by tens of percent. The index is saved by the OLD build (a format the
NEW one reads). Needs valgrind (Debian's package) and the shared corpus.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, SMOKE

MODES = {  # search keyword arguments, as Python source
    "asym": "dict(candidates=100, rerank=False)",
    "filter": "dict(allowed=np.arange(0, 10000, 10), rerank=False, candidates=100)",
    "hamming": "dict(scoring='hamming', rerank=False)",
    "default": "dict()",
}
SETTINGS = [(128, "asym"), (128, "filter"), (64, "asym"), (128, "hamming"), (128, "default")]
if SMOKE:  # the smoke test checks that the script runs: one setting (each is two valgrind runs)
    SETTINGS = SETTINGS[:1]

SAVE = """
import sys, numpy as np, hashpivot as hp
x = np.load(sys.argv[1])
for bits in (64, 128):
    hp.Index.build(x, n_bits=bits, n_pivots=8).save(f"{sys.argv[2]}/idx{bits}")
"""
RUN = """
import sys, numpy as np, hashpivot as hp
idx = hp.Index.load(sys.argv[1])
q = np.load(sys.argv[2])[:100]
idx.search(q, 10, threads=1, **%s)
"""


def instructions(build: str, script: str, args, out: Path) -> int:
    env = dict(os.environ, PYTHONPATH=str(Path(build).resolve()))
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
         script, *map(str, args)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(
        int(line.split()[0].replace(",", ""))
        for line in text.splitlines()
        if "_core.cpython" in line
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builds", nargs=2, required=True, metavar=("OLD", "NEW"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, PYTHONPATH=str(Path(a.builds[0]).resolve()))
        subprocess.run(
            [sys.executable, "-c", SAVE, str(SHARED / "embeddings.npy"), d], env=env, check=True
        )
        print("| search | old | new | new / old |\n|---|---|---|---|")
        for bits, mode in SETTINGS:
            args = (f"{d}/idx{bits}", SHARED / "query_embeddings.npy")
            got = [
                instructions(b, RUN % MODES[mode], args, Path(d) / f"cg.{i}")
                for i, b in enumerate(a.builds)
            ]
            print(f"| {bits} bits, {mode} | {got[0]:,} | {got[1]:,} | {got[1] / got[0]:.3f} |")


if __name__ == "__main__":
    main()
