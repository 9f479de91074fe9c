"""Shared helpers for the benchmarks: medians of repeated timings and Markdown tables.

``HASHPIVOT_BENCH_SMOKE=1`` (tests/test_bench_smoke.py) times every function once, so that
each script runs end to end on tiny data in seconds; its numbers then mean nothing.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

# The shared man-page corpus (10,000 passages, 1,453 real queries); tests point it elsewhere.
SHARED = Path(
    os.environ.get(
        "HASHPIVOT_SHARED_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "manpages-ja",
    )
)
SMOKE = os.environ.get("HASHPIVOT_BENCH_SMOKE") == "1"


def rounds(n: int) -> int:
    """n timing rounds, or one in a smoke run."""
    return 1 if SMOKE else n


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    repeats, warmup = rounds(repeats), (0 if SMOKE else warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown_table(header: Sequence[str], rows: List[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(lines)


def interleaved_rates(
    fns: Dict[str, Callable[[], object]], items: int, repeats: int = 5, min_time: float = 0.2
) -> Dict[str, float]:
    """Items per second of each function, median of `repeats` samples taken in turn (one of
    each per round, so a slow spell of a shared machine hits every side alike); a sample
    repeats its call until it lasts at least `min_time` seconds."""
    repeats, min_time = rounds(repeats), (0.0 if SMOKE else min_time)
    loops = {}
    for name, fn in fns.items():  # warm up and size the samples
        t0 = time.perf_counter()
        fn()
        loops[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)) + 1)
    rates: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            rates[name].append(loops[name] * items / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}
