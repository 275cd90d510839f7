"""Writes ``tests/durations.json``, the seconds each test file took, from a JUnit XML report of a test run: what
``tests/schedule.py`` orders pytest-xdist's files by (longest first).

    python -m pytest -n 2 --dist loadfile --nbmake notebooks tests --junitxml=/tmp/junit.xml
    python -m tools.durations /tmp/junit.xml            # rewrites tests/durations.json
    python -m tools.durations /tmp/junit.xml --out /tmp/d.json --top 12     # the 12 longest files

``.ci/run`` writes both passes' reports (``.ci-junit-first.xml``, ``.ci-junit-second.xml``) and prints their
longest files: a CI run's own report is the one to refresh the table from (the same 2 cores, nothing else running).

A file's time is the sum of its tests' (setup, call and teardown: JUnit's ``time``), its module fixtures included.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import xml.etree.ElementTree as ET  # a report our own test run wrote
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "durations.json"


def file_of(case: ET.Element) -> str:
    """The test file of one ``<testcase>``: ``file`` when pytest wrote it, else from ``classname``."""
    if case.get("file"):
        return case.get("file").replace(os.sep, "/")
    name = case.get("classname", "")
    if name.endswith(".ipynb"):  # nbmake's items: notebooks.10_train_toy.ipynb
        return name[: -len(".ipynb")].replace(".", "/") + ".ipynb"
    parts = name.split(".")
    for i in range(len(parts), 0, -1):  # tests.parity.test_x.Class -> tests/parity/test_x.py
        candidate = "/".join(parts[:i]) + ".py"
        if (OUT.parent.parent / candidate).is_file():
            return candidate
    return name


def durations(junit: Path) -> dict[str, dict[str, float]]:
    seconds: dict[str, float] = defaultdict(float)
    tests: dict[str, int] = defaultdict(int)
    for case in ET.parse(junit).getroot().iter("testcase"):
        f = file_of(case)
        seconds[f] += float(case.get("time", 0))
        tests[f] += 1
    return {f: {"seconds": round(seconds[f], 1), "tests": tests[f]} for f in sorted(seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("junit", type=Path, help="the JUnit XML report of a run (pytest --junitxml=...)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--top", type=int, default=0, help="also print the N longest files")
    args = parser.parse_args(argv)
    table = durations(args.junit)
    for f in sorted(table, key=lambda f: -table[f]["seconds"])[:args.top]:
        print(f"{table[f]['seconds'] / 60:6.1f} min  {table[f]['tests']:4d} tests  {f}")
    text = "{\n" + ",\n".join(f" {json.dumps(f)}: {json.dumps(v)}" for f, v in table.items()) + "\n}\n"  # a line each
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp", encoding="utf-8") as f:
        f.write(text)
    os.replace(f.name, args.out)
    total = sum(v["seconds"] for v in table.values())
    print(f"{args.out}: {len(table)} files, {total / 60:.1f} worker-minutes")


if __name__ == "__main__":
    main()
