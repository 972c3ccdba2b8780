"""Timing shared by the benchmarks: best of N wall-clock runs (the least disturbed by a noisy machine)."""
from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Seconds of the fastest of `repeats` calls, after one untimed warm-up call (allocations, kernel choice)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
