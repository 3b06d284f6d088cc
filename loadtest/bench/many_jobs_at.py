#!/usr/bin/env python3
"""The many-jobs scenario of bench.py at another publish rate, for chosen kinds, printing
each kind's median round; nothing is written to docs/. For questions such as "does this
change help at 10,000 events/s", side by side with --before-bin's build.

    python3 loadtest/bench/many_jobs_at.py --rate 10000 [--kinds gw-redis,gw-redis@before]
                                           [--before-bin DIR] [--rounds 3]

The rate must be a multiple of 2,000 (bench.py's rate): the events published scale with it
(10 s of publishing), and so does the count Redis's cost is divided by."""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

BASE_RATE = 2000

FIELDS = ("cpu_us_per_delivery", "server_cpu_us", "redis_cpu_us_per_event", "redis_reads_per_event",
          "redis_writes_per_event", "latency_p50_us", "latency_p99_us", "delivered", "lost", "dups", "ooo")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--kinds", default="gw-redis,gw-redis@before")
    ap.add_argument("--before-bin", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.rate % BASE_RATE:
        ap.error(f"--rate must be a multiple of {BASE_RATE}")
    factor = a.rate // BASE_RATE
    bench.BEFORE_BIN = os.path.abspath(a.before_bin) if a.before_bin else None
    bench.ROUNDS = a.rounds
    load, per_event = bench.load, bench.redis_per_event

    def scaled_load(work, name, args, **kw):
        args = list(args)
        for flag in ("--rate", "--events"):
            i = args.index(flag)
            args[i + 1] = int(args[i + 1]) * factor
        return load(work, name, args, **kw)

    bench.load = scaled_load
    bench.redis_per_event = lambda before, after, events: per_event(before, after, events * factor)
    try:
        res = bench.many_jobs(tempfile.mkdtemp(prefix="sse-bench-"), False, kinds=a.kinds.split(","), tag="many-jobs-at")
    finally:
        bench.stop_all()
    for kind, r in res.items():
        print(kind, " ".join(f"{f}={r.get(f)}" for f in FIELDS))


if __name__ == "__main__":
    main()
