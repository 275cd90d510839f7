"""The order in which pytest-xdist's ``--dist loadfile`` hands out the test files: longest first (issue 31).

xdist's own order is by the number of tests in a file, most first, which puts the files of one long item (the 19
notebooks, 1 to 3 minutes each, and single long tests) last: a worker can then sit idle while the other finishes
the notebook it was given (a worker holds the next file before it starts the last test of the one it runs: it
must know the test after it, to tear down the right fixtures). On CI's suite the cost was small (measured
2026-12-02: both workers busy 97% of the first pass; replayed from its JUnit report, xdist's order and this one end
within seconds of each other), but it grows with every long one-item file, and this order does not depend on how
many tests a file holds.

Here each file costs what it took when last measured (``durations.json`` beside this file, seconds per file,
written by ``python -m tools.durations JUNIT.xml``), and a file not yet measured costs its number of tests times the
median second a measured test takes. The longest file goes first: the "longest processing time first" rule, whose
makespan on two machines is at most 7/6 of the best, and whose tail is the shortest files. A stale table costs
only balance, never a test: every collected test is handed out once, as before.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from xdist.scheduler import LoadFileScheduling

DURATIONS = Path(__file__).with_name("durations.json")


def read_durations(path: Path = DURATIONS) -> dict[str, dict[str, float]]:
    """``{file: {"seconds": s, "tests": n}}`` as measured; empty when the table is missing or unreadable."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in table.items() if isinstance(v, dict) and {"seconds", "tests"} <= v.keys()}


def file_costs(units: dict[str, int], durations: dict[str, dict[str, float]]) -> dict[str, float]:
    """Seconds each file is expected to take: its measured time, or its tests times the median measured test."""
    per_test = [v["seconds"] / v["tests"] for v in durations.values() if v["tests"] > 0]
    default = statistics.median(per_test) if per_test else 1.0
    return {f: durations[f]["seconds"] if f in durations else n * default for f, n in units.items()}


class LongestFirst(LoadFileScheduling):
    """``--dist loadfile`` with the longest file first (the module docstring)."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        self._durations = read_durations()
        self._ordered = False

    def _assign_work_unit(self, node) -> None:
        if not self._ordered:  # the queue is whole at the first assignment: order it once
            costs = file_costs({f: len(tests) for f, tests in self.workqueue.items()}, self._durations)
            for f in sorted(self.workqueue, key=lambda f: -costs[f]):
                self.workqueue.move_to_end(f)
            self._ordered = True
        super()._assign_work_unit(node)
