"""The wheel runs on a CPU without AVX: the suite runs the kernels under qemu-user emulating a
Nehalem (x86-64-v2: SSE4.2 and POPCNT, the floor numpy itself needs) when qemu-x86_64 is
installed (`apt-get install qemu-user`); the portable path is covered everywhere through
HASHPIVOT_ISA=portable (tests/test_kernels.py)."""

import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np, hashpivot as hp
    from hashpivot import _core
    assert hp.cpu_features()["isa"] == "popcnt", hp.cpu_features()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (3000, 16), dtype=np.uint8)
    D, I = hp.hamming_knn(codes[:3], codes, 5)
    ref = np.unpackbits(codes[:3, None] ^ codes[None], axis=2).sum(2)
    assert (np.sort(ref, 1)[:, :5] == D).all()
    idx = hp.Index.from_codes(codes, layout="partitioned")
    assert (idx.search_codes(codes[:2], 3)[0][:, 0] == 0).all()
    S, ids = hp.asymmetric_knn(rng.standard_normal((1, 128)).astype(np.float32), codes, 3)
    q = rng.standard_normal((2, 64)).astype(np.float32)
    store = rng.standard_normal((3000, 64)).astype(np.float32)
    S, R = _core.rerank(q, np.tile(np.arange(100), (2, 1)).astype(np.int64), store, None, 5)
    assert (R[:, 0] == np.argmax(q @ store[:100].T, 1)).all()
    print("no-avx ok")
""")


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-user")
def test_runs_without_avx_under_qemu():
    r = subprocess.run(["qemu-x86_64", "-cpu", "Nehalem", sys.executable, "-c", SCRIPT],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "no-avx ok" in r.stdout, r.stdout + r.stderr
