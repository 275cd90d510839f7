"""Small helpers shared by the benchmark scripts: timing, peak memory, and a printed table.

Peak CPU memory is the process's resident-set high-water mark (VmHWM), reset just before the
measured call through /proc/self/clear_refs, minus the resident memory at that moment. It runs
in-process: forking a process whose OpenMP thread pool is running can deadlock the child.
"""

from __future__ import annotations

import gc
import re
import statistics
import time

import torch


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def peak_memory(fn) -> int:
    """Extra peak memory (bytes) that calling ``fn()`` needs on CPU (for CUDA use torch.cuda stats)."""
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    fn()
    return max(_status_kib("VmHWM") - before, 0) * 1024


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
