#!/usr/bin/env python3
"""Redis's cost of the publish script alone: starts its own redis-server (loopback, a free
port, stopped by PID), creates 2,000 jobs (one owner each), then runs `publish_job.lua` N
times over them from one client, DEPTH calls per write (1 = one round trip each), and
prints per event: Redis CPU (/proc), each command's calls and µs (`INFO commandstats`;
`evalsha` includes the commands its script calls), and the script's reply.

    python3 loadtest/bench/script_cost.py [--script FILE] [--events N] [--depth D] [--batch B]

--batch B: B events per call of the batch script (`publish_batch.lua` after the three
publish scripts wrapped as functions, as docs/protocol.md assembles it), B jobs of B users
per call; DEPTH such calls per write.

What loadtest/bench/profile-notes.md sections 8 and 10 measured the scripts and round trips with."""

import argparse
import os
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "..", "..", "publisher-sdk", "wire", "lua")
DEFAULT_SCRIPT = os.path.join(LUA, "publish_job.lua")


def batch_script():
    """The batch script as `sse_wire::scripts::PUBLISH_BATCH` assembles it."""
    read = lambda name: open(os.path.join(LUA, name + ".lua")).read()
    return (f"local function publish_job(KEYS, ARGV)\n{read('publish_job')}\nend\n"
            f"local function publish_user(KEYS, ARGV)\n{read('publish_user')}\nend\n"
            f"local function publish_topic(KEYS, ARGV)\n{read('publish_topic')}\nend\n" + read("publish_batch"))


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def read(self):
        line = self.file.readline()
        kind = line[:1]
        if kind in b"+-:":
            return line[1:-2]
        if kind == b"$":
            n = int(line[1:])
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(max(int(line[1:]), 0))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(encode(*args))
        return self.read()


def job_call(i, seq):
    """Keys and arguments of one `publish_job.lua` call."""
    user, job, p = f"u{i}", f"j{i}", "b:"
    data = ('{"jobId":"%s","type":"progress","ts":1732245600123,"progress":%d,"seq":%d,'
            '"t_us":1732245600123000,"stage":"%s"}' % (job, seq % 101, seq, "x" * 40))
    keys = [f"{p}{{u:{user}}}:job:{job}", f"{p}{{u:{user}}}:joblog:{job}", f"{p}{{u:{user}}}:log", f"{p}{{u:{user}}}:jobs"]
    args = [job, user, "progress", data, int(time.time() * 1000), 1000, 10000, 0, 86400000, 604800000,
            f"{p}{{u:{user}}}:job:{job}", f"{p}{{u:{user}}}", "PUBLISH", 0, 600000, "status", '"active"', "progress", seq % 101]
    return keys, args


def publish(sha, i, seq):
    keys, args = job_call(i, seq)
    return encode("EVALSHA", sha, len(keys), *keys, *args)


def publish_batch(sha, calls):
    """One batch-script call of several `(i, seq)` job events."""
    keys, args = [], [len(calls)]
    for i, seq in calls:
        k, a = job_call(i, seq)
        keys += k
        args += ["job", len(k), len(a), *a]
    return encode("EVALSHA", sha, len(keys), *keys, *args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", default=DEFAULT_SCRIPT)
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0, help="events per call of the batch script (0: publish_job.lua)")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                client = Client(port)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        sha = client.call("SCRIPT", "LOAD", open(a.script).read()).decode()
        for i in range(2000):
            client.sock.sendall(publish(sha, i, 0))
            client.read()
        per_call = max(a.batch, 1)
        if a.batch:
            batch_sha = client.call("SCRIPT", "LOAD", batch_script()).decode()
            one = lambda n: publish_batch(batch_sha, [((n + b) % 2000, (n + b) // 2000 + 1) for b in range(a.batch)])
        else:
            one = lambda n: publish(sha, n % 2000, n // 2000 + 1)
        client.call("CONFIG", "RESETSTAT")
        stat = lambda: sum(int(x) for x in open(f"/proc/{redis.pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
        before = stat()
        sent, reply = 0, None
        while sent < a.events:
            client.sock.sendall(b"".join(one(sent + d * per_call) for d in range(a.depth)))
            for _ in range(a.depth):
                reply = client.read()
            sent += a.depth * per_call
        cpu = (stat() - before) / os.sysconf("SC_CLK_TCK")
        for line in client.call("INFO", "commandstats").decode().split("\r\n"):
            if line.startswith("cmdstat_") and "config" not in line:
                name, rest = line[8:].split(":", 1)
                kv = dict(x.split("=") for x in rest.split(","))
                print(f"{name:10} {int(kv['calls']) / sent:5.2f} calls/event  {float(kv['usec_per_call']):6.2f} µs/call")
        print(f"Redis CPU per event: {1e6 * cpu / sent:.1f} µs ({sent} events, depth {a.depth}, batch {a.batch}); "
              f"last reply {reply if not a.batch else reply[-1]}")
    finally:
        redis.terminate()
        redis.wait(5)


if __name__ == "__main__":
    main()
