"""The wheel runs on a CPU without AVX: the suite runs the module under qemu-user emulating a
Nehalem (x86-64-v2: SSE4.2 and POPCNT, the floor numpy itself needs) when qemu-x86_64 is
installed (`apt-get install qemu-user`); the portable path is covered everywhere through
HASHPIVOT_ISA=portable (tests/test_kernels.py)."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hashpivot as hp

# Loads an index saved by this (AVX) process and searches it on the emulated CPU: every stage of
# the engine (asymmetric scan, rescore, exact rerank, partitions) must give the same answer.
SCRIPT = textwrap.dedent("""
    import sys, numpy as np, hashpivot as hp
    assert hp.cpu_features()["isa"] == "popcnt", hp.cpu_features()
    root = sys.argv[1]
    q = np.load(root + "/q.npy")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (3000, 16), dtype=np.uint8)
    D, I = hp.hamming_knn(codes[:3], codes, 5)
    ref = np.unpackbits(codes[:3, None] ^ codes[None], axis=2).sum(2)
    assert (np.sort(ref, 1)[:, :5] == D).all()
    for name in ("flat", "ivf"):
        S, ids = hp.Index.load(root + "/" + name).search(q, 10)
        assert (ids == np.load(root + "/" + name + "-ids.npy")).all(), name
    print("no-avx ok")
""")


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-user")
def test_runs_without_avx_under_qemu(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    q = rng.standard_normal((5, 64)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    for name, layout in (("flat", "flat"), ("ivf", "ivf")):
        index = hp.Index.build(x, n_bits=64, layout=layout)
        index.save(tmp_path / name)
        np.save(tmp_path / f"{name}-ids.npy", index.search(q, 10)[1])
    r = subprocess.run(
        ["qemu-x86_64", "-cpu", "Nehalem", sys.executable, "-c", SCRIPT, str(tmp_path)],
        # OpenBLAS (numpy's matmul) picks its kernels from more than the emulated CPUID and
        # dies on an AVX instruction under qemu: name the emulated core for it
        env=dict(os.environ, OPENBLAS_CORETYPE="Nehalem"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and "no-avx ok" in r.stdout, r.stdout + r.stderr
