"""A worker that publishes numbered `log` lines to one job, one every `--interval-ms`, until
its standard input closes (or `--max` lines), with the Python SDK (`sse_publisher`, as
installed into publisher-sdk/python/.venv): the Python worker of workers.test.js. Same
flags and output as the Rust worker (publisher-sdk/examples/log_worker.rs) and the Node
one (log_worker.mjs): `published <n> <event id>` per line, `done <count>` at the end.
"""

from __future__ import annotations

import argparse
import sys
import threading

from sse_publisher import EventOptions, Publisher, PublishError, RedisOptions


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True, help="redis://host:port, or http://host:port (a gateway)")
    parser.add_argument("--prefix", default="sse:", help="the gateways' --redis-prefix")
    parser.add_argument("--token", default="", help="a publisher token (HTTP)")
    parser.add_argument("--job", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--interval-ms", type=int, default=20)
    parser.add_argument("--max", type=int, default=5000)
    args = parser.parse_args()

    # Standard input closing is the signal to stop.
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()

    n = 0
    try:
        if args.broker.startswith("http://"):
            publisher = Publisher.http(args.broker, args.token)
        else:
            publisher = Publisher.connect(args.broker, RedisOptions(prefix=args.prefix))
        with publisher:
            job = publisher.job(args.job, args.owner)
            while n < args.max and not stop.is_set():
                n += 1
                # The key makes a retry of an attempt whose outcome is unknown safe.
                options = EventOptions(idempotency_key=f"{args.name}:{args.job}:{n}")
                event_id = job.log("info", f"{args.name} {n}", options=options)
                print(f"published {n} {event_id}", flush=True)
                stop.wait(args.interval_ms / 1000)
    except PublishError as error:
        print(f"log_worker.py: {error!r}", file=sys.stderr)
        return 1
    print(f"done {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
