"""tests/schedule.py: pytest-xdist's files handed out longest first, as xdist runs them (issue 31).

Driven here without processes: two fake workers that record what they are sent, and a run simulated test by test
(each takes the seconds the table says), as xdist's controller calls the scheduler."""

from __future__ import annotations

import json
import types

import pytest

pytest.importorskip("xdist")

from tests import schedule  # noqa: E402


class Worker:
    """What the scheduler sees of a worker: it is sent test indices and told to shut down."""

    def __init__(self, name):
        self.name, self.sent, self.shutting_down = name, [], False
        self.gateway = types.SimpleNamespace(id=name)

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True


def config():
    return types.SimpleNamespace(getvalue=lambda name: ["2*popen"] if name == "tx" else None,
                                 option=types.SimpleNamespace(loadscopereorder=True))


# 10 quick tests in a.py (1 s each), one 60 s notebook, two 30 s tests in b.py, four of 1 s in c.py
SECONDS = {"a.py": [1.0] * 10, "nb.ipynb": [60.0], "b.py": [30.0, 30.0], "c.py": [1.0] * 4}
COLLECTION = [f"{f}::t{i}" for f, times in SECONDS.items() for i in range(len(times))]


def run(scheduler_class, durations):
    """Each worker runs what it was sent in order, the one that is free first going next, as xdist does (a
    worker runs a test only once it knows the next one, or is told to stop); returns each worker's files in the
    order it started them, and when the last test ends."""
    s = scheduler_class(config())
    s._durations = durations  # what LongestFirst read from tests/durations.json
    workers = [Worker("w0"), Worker("w1")]
    for w in workers:
        s.add_node(w)
        s.add_node_collection(w, COLLECTION)
    s.schedule()
    clock, done, started = {w: 0.0 for w in workers}, {w: 0 for w in workers}, {w: [] for w in workers}
    while True:
        ready = [w for w in workers if done[w] < len(w.sent) and (done[w] + 1 < len(w.sent) or w.shutting_down)]
        if not ready:
            break
        w = min(ready, key=lambda w: clock[w])
        nodeid = COLLECTION[w.sent[done[w]]]
        f, i = nodeid.split("::")
        if not started[w] or started[w][-1] != f:
            started[w].append(f)
        clock[w] += SECONDS[f][int(i[1:])]
        done[w] += 1
        s.mark_test_complete(w, w.sent[done[w] - 1])
    assert sorted(i for w in workers for i in w.sent) == list(range(len(COLLECTION))), "every test once"
    return [started[w] for w in workers], max(clock.values())


MEASURED = {"a.py": {"seconds": 10.0, "tests": 10}, "nb.ipynb": {"seconds": 60.0, "tests": 1},
            "b.py": {"seconds": 60.0, "tests": 2}, "c.py": {"seconds": 4.0, "tests": 4}}


def test_the_longest_files_go_first_and_the_run_ends_sooner_than_xdists_order():
    from xdist.scheduler import LoadFileScheduling

    order, end = run(schedule.LongestFirst, MEASURED)
    assert {order[0][0], order[1][0]} == {"nb.ipynb", "b.py"}, order  # the two 60 s files start at once
    _, xdist_end = run(LoadFileScheduling, MEASURED)
    # then a.py and c.py fill in: 60 + 10 and 60 + 4, 70 s (the best split of the 134 s would be 67); xdist's order
    # (most tests first: a.py, c.py, b.py, nb.ipynb) leaves the 60 s notebook to the end: 124 s
    assert (end, xdist_end) == (70.0, 124.0)


def test_a_file_not_measured_costs_its_tests_times_the_median_measured_test():
    costs = schedule.file_costs({"a.py": 10, "c.py": 4, "new.py": 3}, MEASURED)
    # per-test seconds measured: 1 (a.py), 60 (nb), 30 (b.py), 1 (c.py): median 15.5
    assert costs == {"a.py": 10.0, "c.py": 4.0, "new.py": 46.5}
    assert schedule.file_costs({"x.py": 5}, {}) == {"x.py": 5.0}  # no table: the number of tests


def test_the_table_is_read_as_data_and_a_broken_one_is_ignored(tmp_path):
    path = tmp_path / "durations.json"
    assert schedule.read_durations(path) == {}  # missing
    path.write_text("{not json")
    assert schedule.read_durations(path) == {}
    path.write_text(json.dumps({"a.py": {"seconds": 3, "tests": 2}, "b.py": 7, "c.py": {"seconds": 1}}))
    assert schedule.read_durations(path) == {"a.py": {"seconds": 3, "tests": 2}}


def test_the_committed_table_is_read_whole():
    """Every entry of tests/durations.json is one the scheduler uses (a file gone since costs nothing: its entry is
    never looked up; ``python -m tools.durations`` rewrites the table from a run's JUnit report)."""
    raw = json.loads(schedule.DURATIONS.read_text(encoding="utf-8"))
    table = schedule.read_durations()
    assert table and len(table) == len(raw), "tests/durations.json has entries the scheduler cannot read"
    assert any(f.endswith(".ipynb") for f in table) and any(f.startswith("tests/parity/") for f in table)
