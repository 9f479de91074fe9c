"""Every script under bench/ runs end to end on tiny data, so that a benchmark cannot rot unseen.

Each runs in its own process (two at a time: most are one-threaded Python, and one after the
other they took two minutes of CI) with ``HASHPIVOT_BENCH_SMOKE=1`` (bench/common.py: every timing
taken once) against a small stand-in for the shared corpus written here (the same file layout:
embeddings.npy, query_embeddings.npy, corpus.jsonl, queries.jsonl), with its caches in a
temporary folder. Only the exit status and the report's headings are checked: timings stay
out of tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

import hashpivot

BENCH = Path(__file__).resolve().parents[1] / "bench"
PASSAGES, QUERIES, DIM, TOPICS = 2_000, 600, 384, 40
SCRIPT_SECONDS = 300  # a hung script fails its test instead of stalling CI
PARALLEL = 2  # scripts running at once (the CI machine's cores)
N = "3000"  # rows for the scripts that draw their own corpus

# script (a second run of one: "script#what"): (arguments, text its output must hold)
SCRIPTS = {
    "bench_add.py": (["--n", N], "search QPS"),
    "bench_asymmetric.py": (["--n", N], "Full scan"),
    "bench_build.py": (["--n", N], "|"),
    "bench_defaults.py": (["--n", str(PASSAGES)], "tune() without queries"),
    "bench_embed.py": ([], "passages/s"),
    "bench_build_memory.py": (["--n", N, "--dim", "64", "--bits", "64"], "peak anonymous"),
    "bench_distributed.py": (["--passages", "8"], "Ray Data"),
    "bench_engine.py": (["--rounds", "1"], "|"),
    "bench_filter.py": (["--n", N], "|"),
    "bench_hamming.py": (
        ["--sizes", N, "--nq", "1,10", "--k", "10", "--threads", "1", "--repeats", "1"],
        "|",
    ),
    "bench_latency.py": (["--rounds", "1"], "|"),
    "bench_latency.py#scale": (["--rounds", "1", "--scale", N, "--nprobe", "8"], "latency"),
    "bench_partition.py": (["--n", N, "--queries", "20", "--components", "8"], "Best QPS"),
    "bench_pivot.py": (["--synthetic", N, "--n-queries", "20", "--repeats", "1"], "|"),
    "bench_scale.py": (["--n", N, "--quick"], "Best one-thread"),
    "bench_second_stage.py": (["--n", N, "--nprobe", "8", "--rounds", "1"], "reranked"),
    "bench_tune.py": (["--n", N], "|"),
    "bench_ubinary.py": ([], "recall@10"),
    "engine_instructions.py": ([], "|"),
    "estimator_study.py": (["--n", N, "--bits", "64"], "|"),
    "estimator_study.py#extended": (["--n", N, "--bits", "64", "--extended"], "re-estimate"),
    "gpu_itq.py": (["--rows", N], "fit cpu"),
    "pivot_block_bound.py": (["--n", N], "skipped leaves"),
    "scale_corpus.py": (["--n", N, "--kind", "realistic", "--hnsw"], "recall"),
}


def test_every_script_is_listed():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py"}
    assert scripts == {s.split("#")[0] for s in SCRIPTS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A clustered stand-in for the shared corpus: topics, passages near them, queries too."""
    d = tmp_path_factory.mktemp("shared")
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((TOPICS, DIM))

    def draw(n: int) -> np.ndarray:
        x = topics[rng.integers(0, TOPICS, n)] + 0.8 * rng.standard_normal((n, DIM))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    x, q = draw(PASSAGES), draw(QUERIES)
    np.save(d / "embeddings.npy", x)
    np.save(d / "query_embeddings.npy", q)
    best = np.argmax(q @ x.T, axis=1)
    with open(d / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(PASSAGES):
            page = f"man1/page{i // 4}"
            f.write(
                json.dumps(
                    {"id": f"{page}#{i % 4}", "doc": page, "title": page, "text": f"passage {i}"}
                )
                + "\n"
            )
    with open(d / "queries.jsonl", "w", encoding="utf-8") as f:
        for j in range(QUERIES):
            relevant = [f"man1/page{best[j] // 4}#{best[j] % 4}"]
            f.write(json.dumps({"qid": f"q{j}", "text": f"query {j}", "relevant": relevant}))
            f.write("\n")
    return d


def run_script(script: str, corpus: Path, cwd: Path) -> Optional[subprocess.CompletedProcess]:
    """One script on the stand-in corpus (None: it needs a tool this machine lacks)."""
    args, _ = SCRIPTS[script]
    if script == "engine_instructions.py" and not shutil.which("valgrind"):
        return None
    package = str(Path(hashpivot.__file__).resolve().parents[1])  # the build under test
    if script == "bench_engine.py" or script == "engine_instructions.py":
        args = ["--builds", package, package, *args]
    env = dict(
        os.environ,
        PYTHONPATH=package,
        HASHPIVOT_BENCH_SMOKE="1",
        HASHPIVOT_SHARED_DATA=str(corpus),
        HASHPIVOT_SCALE_CACHE=str(cwd / "cache"),
        MPLBACKEND="Agg",
    )
    return subprocess.run(
        [sys.executable, str(BENCH / script.split("#")[0]), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_SECONDS,
    )


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory, request):
    """The selected scripts, started when the first test asks, PARALLEL at a time: a future
    each."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if item.originalname == "test_bench_script_runs"
    }
    pool = ThreadPoolExecutor(max_workers=PARALLEL)
    futures: Dict[str, Future] = {
        s: pool.submit(run_script, s, corpus, tmp_path_factory.mktemp(s.replace(".", "_")))
        for s in sorted(selected)
    }
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs(script, runs):
    done = runs[script].result()
    if done is None:
        pytest.skip("valgrind is not installed")
    expected = SCRIPTS[script][1]
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
