"""The manylinux wheel (`make wheel`) installs into a new virtual environment without building
anything, and a saved index loads and searches there without importing torch."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hashpivot as hp

ROOT = Path(__file__).resolve().parents[1]
WHEELS = sorted((ROOT / "dist").glob("hashpivot-*manylinux*.whl"))

SEARCH = textwrap.dedent("""
    import sys, numpy as np, hashpivot as hp
    index = hp.Index.load(sys.argv[1])
    scores, ids = index.search(np.load(sys.argv[2]), 10)
    assert "torch" not in sys.modules, "searching imported torch"
    np.save(sys.argv[3], ids)
    print(hp.__version__, hp.cpu_features()["isa"])
""")


@pytest.mark.skipif(not WHEELS, reason="no wheel in dist/ (`make wheel` builds it)")
def test_wheel_installs_without_building_and_searches_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    q = rng.standard_normal((5, 64)).astype(np.float32)
    index = hp.Index.build(x, n_bits=64)
    index.save(tmp_path / "idx")
    np.save(tmp_path / "q.npy", q)
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--only-binary=:all:"]
    no_compiler = dict(os.environ, CC="/bin/false", CXX="/bin/false", PIP_NO_CACHE_DIR="0")
    subprocess.run([*pip, "--no-deps", str(WHEELS[-1])], check=True, env=no_compiler)
    subprocess.run([*pip, "numpy>=2", "tqdm"], check=True, env=no_compiler)
    r = subprocess.run(
        [
            str(env / "bin" / "python"),
            "-c",
            SEARCH,
            str(tmp_path / "idx"),
            str(tmp_path / "q.npy"),
            str(tmp_path / "ids.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), index.search(q, 10)[1])
