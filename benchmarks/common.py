"""Small helpers shared by the benchmark scripts: timing, peak memory, and a printed table.

Peak CPU memory is the process's resident-set high-water mark (VmHWM), reset just before the
measured call through /proc/self/clear_refs, minus the resident memory at that moment, after
glibc's malloc_trim has returned freed memory to the OS (else memory freed by an earlier run and
reused by this one would not count). It runs in-process: forking a process whose OpenMP thread
pool is running can deadlock the child.
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


def _trim():
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measurements may then under-count reused memory
        pass


def peak_memory(fn) -> int:
    """Extra peak memory (bytes) that calling ``fn()`` needs on CPU (for CUDA use torch.cuda stats)."""
    gc.collect()
    _trim()  # hand freed memory back to the OS, so that reusing it shows up as growth again
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


# ------------------------------------------------------------------ full-size models, GPU measurements
def full_configs() -> dict:
    """Config dicts of the published ms-1.7b models: {"unet", "vae", "text"} (t2vlab.configs)."""
    from t2vlab import configs

    return {"unet": dict(configs.UNET), "vae": dict(configs.VAE), "text": dict(configs.TEXT_ENCODER)}


def randomize_(model, seed=0, std=0.02):
    """Random weights, cheaply, for a model built on meta then ``to_empty``: every weight and bias
    N(0, std) from one seeded generator on the model's device; GroupNorm/LayerNorm weights 1, biases 0."""
    params = list(model.parameters())
    g = torch.Generator(device=params[0].device).manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    p.fill_(1.0 if name == "weight" else 0.0)
                else:
                    p.normal_(0, std, generator=g)
    return model


def measure(fn, device="cpu"):
    """(seconds, extra peak bytes) of one call of ``fn()``. On a CUDA device: synchronized wall time and
    the allocator's peak above what was allocated before the call; on CPU: ``peak_memory``."""
    out = {}

    def timed():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        out["s"] = time.perf_counter() - t0

    if torch.device(device).type != "cuda":
        mem = peak_memory(timed)
        return out["s"], mem
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    timed()
    return out["s"], torch.cuda.max_memory_allocated() - before


def cuda_time(fn, repeats=10, warmup=3) -> float:
    """Median seconds of ``fn()`` on the current GPU, timed with CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)
