"""Where the test suite's CPU time goes: sums the files `SENET_CPU_PROFILE=DIR tests/run.sh
--runslow` writes (one per test process: each test's own CPU seconds and its finished
child processes').

    python benchmarks/suite_cpu.py DIR [--top 30]

Prints each backend's total (own + children), each test process's span (from the first
test's start to the last test's end: a process that ends early leaves a core idle), and the
tests and files that cost the most.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("directory")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    rows = collections.defaultdict(list)
    spans = []
    for path in glob.glob(os.path.join(args.directory, "cpu-*.json")):
        backend = os.path.basename(path).split("-")[1]
        with open(path) as f:
            tests = json.load(f)
        rows[backend] += [[node, own, max(0.0, kids)] for node, own, kids, *_ in tests]
        if tests and len(tests[0]) == 5:  # with start and end times
            spans.append((min(t[3] for t in tests), max(t[4] for t in tests), backend,
                          sum(t[1] + t[2] for t in tests), tests[-1][0].split("::")[0]))
    if not rows:
        raise SystemExit(f"no cpu-*.json in {args.directory}: run SENET_CPU_PROFILE="
                         f"{args.directory} tests/run.sh --runslow first")
    for backend, tests in sorted(rows.items()):
        own, kids = sum(t[1] for t in tests), sum(t[2] for t in tests)
        print(f"{backend}: {len(tests)} tests, {own + kids:.0f} CPU-s "
              f"({own:.0f} own, {kids:.0f} in child processes)")
    if spans:
        t0 = min(s[0] for s in spans)
        print("\ntest processes: start-end s from the first test, CPU-s, last file:")
        for start, end, backend, cpu, last in sorted(spans, key=lambda s: s[1]):
            print(f"  {start - t0:5.0f}-{end - t0:4.0f}  {cpu:6.0f}  {backend}  {last}")
    every = [(backend, *t) for backend, tests in rows.items() for t in tests]
    by_file = collections.Counter()
    for backend, node, own, kids in every:
        by_file[f"{node.split('::')[0]} ({backend})"] += own + kids
    print("\nfiles, CPU-s:")
    for name, cpu in by_file.most_common(args.top):
        print(f"  {cpu:7.1f}  {name}")
    print("\ntests, CPU-s (own + children):")
    for backend, node, own, kids in sorted(every, key=lambda t: -(t[2] + t[3]))[:args.top]:
        print(f"  {own + kids:7.1f}  ({own:.1f} + {kids:.1f})  {node} ({backend})")


if __name__ == "__main__":
    main()
