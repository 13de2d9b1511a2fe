"""The timing rule every benchmark here uses: best of several runs after one warm-up call."""

import time


def best_time(fn, repeats):
    """Return the shortest of `repeats` timed calls of `fn`, after an untimed warm-up (tracing excluded)."""
    fn()  # warm-up: tracing and first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
