"""Shared helpers for the benchmarks: medians of repeated timings and Markdown tables."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Sequence


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
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
