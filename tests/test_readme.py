"""Every Python block of the README runs as written (each in a fresh interpreter, in an empty
directory) and prints what its comments say where they name a literal value."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_readme_block_runs(block, tmp_path):
    code = BLOCKS[block]
    if "import ray" in code:
        pytest.importorskip("ray")
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    # a print whose comment is a plain literal (no "…") must print it
    expected = [
        c.strip() for c in re.findall(r"^print\(.*?\)\s+#\s*(.+)$", code, re.M) if "…" not in c
    ]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    for want in expected:
        assert any(want in ln for ln in lines), (want, r.stdout)
