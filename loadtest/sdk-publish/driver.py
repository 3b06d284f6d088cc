"""Concurrent publishes through the Python SDK (asyncio) against a Redis: job events of 100
jobs (10 users), `concurrency` in flight at once, or batches of `batch` events. Prints one
JSON line: events, seconds. Run by measure.py, which reads Redis's CPU and I/O counters.

    python driver.py <redis url> <events> <concurrency> <batch> <auto-pipelining: on|off>
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from sse_publisher import AsyncPublisher, RedisOptions


async def main(url: str, events: int, concurrency: int, batch: int, pipelining: bool) -> None:
    options = RedisOptions(pool_size=concurrency, auto_pipeline=pipelining)
    publisher = await AsyncPublisher.connect(url, options)
    jobs = [publisher.job(f"bench-{n}", f"user-{n % 10}") for n in range(100)]
    for job in jobs:
        await job.stage("start")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.monotonic()
    counter = iter(range(events))

    async def worker() -> None:
        for n in counter:
            if batch > 1:
                b = publisher.batch().progress(jobs[n % 100], n % 100)
                for m in [next(counter, None) for _ in range(batch - 1)]:
                    if m is not None:
                        b.progress(jobs[m % 100], m % 100)
                results = await b.send()
                assert all(isinstance(r, str) for r in results), results
            else:
                await jobs[n % 100].progress(n % 100)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps({"events": events, "seconds": time.monotonic() - started}), flush=True)
    await publisher.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "on"))
