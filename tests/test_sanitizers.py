"""The C++ core under AddressSanitizer + UndefinedBehaviorSanitizer: build tests/cpp, run it."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("g++") is None,
    reason="needs cmake and g++ (installed by `make test`)",
)
def test_cpp_kernels_under_asan_ubsan(tmp_path):
    build = tmp_path / "asan"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            *gen,
            "-DCMAKE_BUILD_TYPE=Debug",
            "-DHASHPIVOT_SANITIZE=ON",
            "-DHASHPIVOT_BUILD_TOOLS=ON",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "hashpivot_test", "-j2"],
        check=True,
        capture_output=True,
    )
    env = dict(
        os.environ,
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    out = subprocess.run([str(build / "hashpivot_test")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout
