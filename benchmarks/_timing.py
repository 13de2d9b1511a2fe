"""The timing rule every benchmark here uses: best of several runs after one warm-up call."""

import time


def best_time_and_result(fn, repeats, warm=True):
    """Return the shortest of `repeats` timed calls of `fn` and the last call's result.

    With `warm`, one untimed call first (tracing and first-call costs excluded).
    """
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def best_time(fn, repeats):
    """Return the shortest of `repeats` timed calls of `fn`, after an untimed warm-up (tracing excluded)."""
    return best_time_and_result(fn, repeats)[0]
