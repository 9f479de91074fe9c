"""Every `bash` and `python` block of the README and of the documentation site runs as written:
a page's blocks in order, in one fresh directory (a tutorial's later steps use its earlier
ones), each Python block in a fresh interpreter, each shell block under `set -euo pipefail`
with this interpreter's scripts (`hashpivot`) on the PATH. A `print(...)  # value` comment
names what the line must print (unless it holds "…"). The site builds with `mkdocs build
--strict` (every link and page there). Blocks fenced `text` are not run: the quickstart's
`make demo` / `make test` (CI runs `make test`; tests/test_passages.py runs the demo) and
`hashpivot serve` (tests/test_serve.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def blocks(page: Path):
    return FENCE.findall(page.read_text(encoding="utf-8"))


def test_the_readme_and_the_tutorial_have_blocks_to_run():
    assert len(blocks(ROOT / "README.md")) >= 3
    assert len(blocks(ROOT / "docs" / "tutorial.md")) >= 4


@pytest.mark.parametrize(
    "page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_page_blocks_run(page, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for lang, code in blocks(page):
        if "import ray" in code:
            pytest.importorskip("ray")
        cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail"]
        r = subprocess.run(
            cmd,
            input=None if lang == "python" else code,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert r.returncode == 0, f"{lang} block:\n{code}\n{r.stdout}{r.stderr[-3000:]}"
        if lang == "python":  # a print whose comment is a plain literal (no "…") must print it
            expected = [
                c.strip()
                for c in re.findall(r"^print\(.*?\)\s+#\s*(.+)$", code, re.M)
                if "…" not in c
            ]
            lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
            for want in expected:
                assert any(want in ln for ln in lines), (want, r.stdout)


def test_the_docs_site_builds_strict(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "python" / "index.html").is_file()
