"""Small helpers shared by the benchmark scripts: timing, peak memory, and a printed table.

Peak CPU memory is measured in a forked child process: the child notes its resident memory
before the measured call and its high-water mark (ru_maxrss) after, and reports the difference.
A fresh process per measurement keeps one run's allocations from hiding another's.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _child(fn, queue):
    try:
        before = _rss_bytes()
        fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        queue.put(max(peak - before, 0))
    except BaseException as e:  # report, do not hang the parent
        queue.put(e)


def peak_memory(fn) -> int:
    """Extra peak memory (bytes) that calling ``fn()`` needs on CPU (CUDA: use torch.cuda stats)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, BaseException):
        raise result
    return result


def time_call(fn, repeats=3, warmup=1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(headers, rows, title=None):
    """Print a Markdown table (so it pastes straight into docs/benchmarks.md)."""
    cells = [[str(c) for c in headers]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if title:
        print(f"\n### {title}\n")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def mib(n_bytes) -> str:
    return f"{n_bytes / 2**20:.1f}"
