#!/usr/bin/env python3
"""`make bench`: the scenarios of loadtest/README.md against the gateway (embedded broker
and Redis), Nginx + Nchan + Redis, and the raw-write floor, in one run on this machine.
Writes docs/benchmarks.md, docs/bench/*.png and docs/bench/results.json.

Every process it starts is on loopback, stopped by its own PID (SIGTERM, then SIGKILL);
every load run is bounded in connections and time. Servers are pinned to CPU 0 and load
generators to CPU 1 where the scenario says so (taskset).

    python3 loadtest/bench/bench.py [--quick] [--only idle,broadcast,...] [--out DIR] [--label NAME] [--why TEXT]
                                    [--rounds N] [--before-bin DIR]

--before-bin DIR: release binaries (sse-gateway, sse-floor, sse-load) built from the code
before a change; broadcast then also runs that floor, and many_jobs that gateway with Redis
(HTTP and SDK publish, the SDK being in sse-load), as "(before)" rows interleaved with the
current ones, so a change is measured side by side in one run.
"""

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
SECRET = "bench-only-secret-0123456789abcdefghij"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
SERVER_CPU = "0"
CLIENT_CPU = "1" if (os.cpu_count() or 1) > 1 else "0"
BEFORE_BIN = None  # --before-bin: the binaries of the code before a change
FLOOR_C = None  # the C floor (loadtest/bench/floor.c), compiled into the work dir when cc is there
ROUNDS = None  # --rounds: overrides broadcast's and many_jobs' interleaved rounds
BATCH_EVENTS = 10  # events per `POST /v1/events:batch` of the batch scenario
STARTED = []  # every Popen this script started, for cleanup by PID
COMMANDS = {}  # name → the sse-load command as run, for the report (paths made relative)


def log(*a):
    print("[bench]", *a, flush=True)


def binary(kind, name):
    """A program of the build `kind` runs with: `<kind>@before` runs --before-bin's."""
    return os.path.join(BEFORE_BIN if kind.endswith("@before") else BIN, name)


def build_floor_c(work):
    """Compiles loadtest/bench/floor.c with `cc -O2`; None when there is no C compiler."""
    cc = shutil.which("cc")
    if not cc:
        log("no cc: the C floor is not measured")
        return None
    out = os.path.join(work, "floor-c")
    r = subprocess.run([cc, "-O2", "-o", out, os.path.join(os.path.dirname(__file__), "floor.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("floor.c did not compile; the C floor is not measured:", r.stderr.strip())
        return None
    return out


def proc_cpu_s(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, cpu=None, logfile=None, env=None):
    if cpu is not None:
        cmd = ["taskset", "-c", cpu] + cmd
    out = open(logfile, "wb") if logfile else subprocess.DEVNULL
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    STARTED.append(p)
    return p


def stop(p, grace=5):
    if p is None or p.poll() is not None:
        return
    try:
        os.kill(p.pid, signal.SIGTERM)
        p.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)
    except ProcessLookupError:
        pass


def stop_all():
    for p in reversed(STARTED):
        stop(p, grace=3)


def wait_http(url, timeout=20, ca=None):
    context = ssl.create_default_context(cafile=ca) if ca else None
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def metrics(url):
    out = {}
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Redis:
    def __init__(self, work, cpu=SERVER_CPU):
        self.port = free_port()
        self.proc = start(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--maxclients", "100000"],
                          cpu, os.path.join(work, f"redis-{self.port}.log"))
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING") == "PONG":
                break
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}"
        self.pid = self.proc.pid

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return r.stdout.strip()

    def counters(self):
        """What Redis has done so far: CPU seconds (/proc), per command (`INFO commandstats`:
        calls and µs, calls from scripts included) and its reads and writes (`INFO stats`)."""
        out = {"cpu_s": proc_cpu_s(self.pid), "commands": {}}
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                kv = dict(x.split("=", 1) for x in rest.split(","))
                out["commands"][name] = {"calls": int(kv["calls"]), "usec": int(kv["usec"])}
        for line in self.cli("INFO", "stats").splitlines():
            key, _, value = line.partition(":")
            if key in ("total_reads_processed", "total_writes_processed", "total_commands_processed"):
                out[key] = int(value)
        return out

    def stop(self):
        stop(self.proc)


def test_certificate(work):
    """A CA and a certificate it signs for 127.0.0.1 (openssl, P-256), in `work`:
    (ca, cert, key) paths."""
    d = tempfile.mkdtemp(prefix="tls-", dir=work)
    p = lambda name: os.path.join(d, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", p("key.pem"), "-out", p("csr.pem"), "-subj", "/CN=127.0.0.1")
    with open(p("ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", p("csr.pem"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial",
        "-out", p("cert.pem"), "-days", "2", "-extfile", p("ext.cnf"))
    return p("ca.pem"), p("cert.pem"), p("key.pem")


class Gateway:
    def __init__(self, work, redis=None, cpu=SERVER_CPU, prefix="sse:", extra=(), program=None, tls=None):
        """`program`: the gateway binary (default: this build's); `tls`: (ca, cert, key) from
        test_certificate: HTTPS on the listener."""
        self.port, self.mport = free_port(), free_port()
        cmd = [program or os.path.join(BIN, "sse-gateway"), "--listen", f"127.0.0.1:{self.port}",
               "--metrics-listen", f"127.0.0.1:{self.mport}", "--jwt-secret", SECRET,
               "--max-connections-per-user", "100000", "--job-stream-maxlen", "1100",
               "--heartbeat", "15s", "--log-format", "json", *extra]
        if redis:
            cmd += ["--redis-url", redis.url, "--redis-prefix", prefix]
        self.ca = tls[0] if tls else None
        if tls:
            cmd += ["--tls-cert", tls[1], "--tls-key", tls[2]]
        self.proc = start(cmd, cpu, os.path.join(work, f"gateway-{self.port}.log"), env={**os.environ, "RUST_LOG": "warn"})
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.pid = self.proc.pid
        wait_http(self.url + "/readyz", ca=self.ca)

    def metrics(self):
        return metrics(f"http://127.0.0.1:{self.mport}/metrics")

    def stop(self):
        stop(self.proc, grace=35)


class Nchan:
    def __init__(self, work, redis, cpu=SERVER_CPU, buffer=1100):
        self.port = free_port()
        d = tempfile.mkdtemp(prefix="nchan-", dir=work)
        with open(os.path.join(os.path.dirname(__file__), "nchan.conf.in")) as f:
            conf = f.read()
        for k, v in {"@NCHAN_MODULE@": NCHAN_MODULE, "@DIR@": d, "@PORT@": str(self.port),
                     "@REDIS_PORT@": str(redis.port), "@BUFFER@": str(buffer)}.items():
            conf = conf.replace(k, v)
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = start(["nginx", "-c", path, "-p", d], cpu, os.path.join(d, "stdout.log"))
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/healthz")
        kids = children(self.proc.pid)
        self.pid = kids[0] if kids else self.proc.pid  # the one worker

    def stop(self):
        # QUIT: graceful, the master ends its worker (both started by us).
        stop(self.proc)


class Floor:
    """`sse-floor` (Rust), or the C floor when `c` (same program, same protocol)."""

    def __init__(self, work, cpu=SERVER_CPU, program=None, c=False):
        self.port = free_port()
        addr = f"127.0.0.1:{self.port}"
        cmd = [program, addr] if c else [program or os.path.join(BIN, "sse-floor"), "--listen", addr]
        self.proc = start(cmd, cpu, os.path.join(work, f"floor-{self.port}.log"))
        self.url = f"http://127.0.0.1:{self.port}"
        self.pid = self.proc.pid
        wait_http(self.url + "/healthz")

    def stop(self):
        stop(self.proc)


def load(work, name, args, cpu=CLIENT_CPU, timeout=300, background=False, program=None):
    path = os.path.join(work, f"{name}.json")
    cmd = [program or os.path.join(BIN, "sse-load"), "--jwt-secret", SECRET, "--json", path, *map(str, args)]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu] + cmd
    log("  $", " ".join(c if c != SECRET else "$SECRET" for c in cmd))
    COMMANDS[name] = " ".join("$SECRET" if c == SECRET else c.replace(work, "$WORK").replace(ROOT + os.sep, "") for c in cmd)
    if background:
        p = subprocess.Popen(cmd, stdout=open(path + ".txt", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(p)
        return p, path
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"sse-load failed: {r.stdout}\n{r.stderr}")
    print(r.stdout, end="", flush=True)
    with open(path) as f:
        return json.load(f)


def start_target(work, kind, cpu=SERVER_CPU, prefix="sse:"):
    """(server, redis or None, load args) for one target; `<kind>@before` runs the
    --before-bin build of it."""
    redis = None
    base = kind.split("@")[0]
    if base in ("gw-redis", "gw-redis-sdk", "gw-redis-batch", "nchan"):
        redis = Redis(work, cpu)
    if base == "gw-emb":
        server = Gateway(work, None, cpu, program=binary(kind, "sse-gateway"))
    elif base == "gw-tls":
        server = Gateway(work, None, cpu, program=binary(kind, "sse-gateway"), tls=test_certificate(work))
    elif base in ("gw-redis", "gw-redis-sdk", "gw-redis-batch"):
        server = Gateway(work, redis, cpu, prefix, program=binary(kind, "sse-gateway"))
    elif base == "nchan":
        server = Nchan(work, redis, cpu)
    elif base == "floor-c":
        server = Floor(work, cpu, program=FLOOR_C, c=True)
    else:
        server = Floor(work, cpu, program=binary(kind, "sse-floor"))
    watch = ["--watch", f"server={server.pid}"]
    if redis:
        watch += ["--watch", f"redis={redis.pid}"]
    target = {"gw-emb": "gateway", "gw-tls": "gateway", "gw-redis": "gateway", "gw-redis-sdk": "gateway", "gw-redis-batch": "gateway",
              "nchan": "nchan", "floor": "floor", "floor-c": "floor"}[base]
    args = ["--target", target, "--url", server.url, *watch]
    if base == "gw-tls":
        args += ["--ca-file", server.ca]
    if base == "gw-redis-sdk":
        args += ["--redis-url", redis.url, "--redis-prefix", prefix]
    return server, redis, args


def cpu_of(report, phase, procs):
    p = report.get("phases", {}).get(phase, {}).get("procs", {})
    return sum(p.get(k, {}).get("cpu_s", 0.0) for k in procs)


LABELS = {"gw-emb": "gateway (embedded)", "gw-tls": "gateway (embedded), HTTPS (HTTP/1.1 over TLS)", "gw-redis": "gateway + Redis (HTTP publish)",
          "gw-redis-sdk": "gateway + Redis (SDK publish)",
          "gw-redis-batch": f"gateway + Redis (HTTP batch publish, {BATCH_EVENTS} events per request)", "nchan": "Nchan + Redis", "floor": "floor (raw writes)",
          "floor-c": "floor in C (raw writes)"}


def median_of(rs):
    """One figure set from interleaved rounds: each figure the median round's (None as 0),
    losses summed (one lost event in any round counts), the rounds kept beside."""
    numbers = [k for k in rs[0] if isinstance(rs[0][k], (int, float)) or rs[0][k] is None]
    median = {k: sorted(x[k] or 0 for x in rs)[len(rs) // 2] for k in numbers}
    for k in ("lost", "dups", "ooo", "delivered"):
        if k in median:
            median[k] = sum(x[k] for x in rs)
    median["rounds"] = rs
    return median


# ---------------------------------------------------------------- scenarios

# Idle rows that differ only in how the client opens its stream: (server kind, extra
# sse-load arguments). "-ka": the stream is the second request on its connection, after a
# page (a browser that loaded one first; a proxy reusing an upstream keep-alive
# connection); "-h2c": the stream over h2c with prior knowledge, one per connection;
# "-h2c8": eight streams share each h2c connection (a browser's streams to one host).
IDLE_WAYS = {"gw-emb-ka": ("gw-emb", ["--keep-alive-first", "/healthz"]), "gw-emb-h2c": ("gw-emb", ["--h2c"]),
             "gw-emb-h2c8": ("gw-emb", ["--h2c", "--h2c-streams", "8"])}


def idle(work, q):
    n = 3000 if q else 19000
    steps = [0, n // 10, n // 4, n // 2, 3 * n // 4, n]
    res = {}
    kinds = ["gw-emb", "gw-emb-ka", "gw-emb-h2c", "gw-emb-h2c8", "gw-tls", "gw-redis", "nchan", "floor"]
    if BEFORE_BIN:
        # The code before a change, beside it in the same run (its plain, kept-alive and
        # h2c streams, and with Redis).
        kinds[4:4] = ["gw-emb@before", "gw-emb-ka@before", "gw-emb-h2c@before"]
        # And its Redis kind, beside the current one.
        kinds.insert(kinds.index("gw-redis") + 1, "gw-redis@before")
    for kind in kinds:
        log(f"idle: {kind}")
        base, _, tag = kind.partition("@")
        server_kind, extra = IDLE_WAYS.get(base, (base, []))
        server, redis, args = start_target(work, server_kind + ("@" + tag if tag else ""))
        try:
            r = load(work, f"idle-{kind}", args + extra + ["--stream", "user", "--topics", n, "--connections", n,
                                                           "--connect-rate", 5000, "--rss-steps", ",".join(map(str, steps)),
                                                           "--settle", "1s", "--topic-prefix", "idle",
                                                           "--source-addrs", "127.0.0.2,127.0.0.3", "--max-duration", "90s"])
        finally:
            server.stop()
            redis and redis.stop()
        st = r["rss_steps"]
        first, last = st[0], st[-1]
        growth = (last["procs"].get("server", 0) - first["procs"].get("server", 0))
        res[kind] = {"established": r["connections"]["established"], "failed": r["connections"]["failed_by_reason"],
                     "rss_start_kib": first["procs"].get("server"), "rss_end_kib": last["procs"].get("server"),
                     "kib_per_conn": growth / max(1, last["connections"]),
                     "redis_kib_per_conn": (last["procs"].get("redis", 0) - first["procs"].get("redis", 0)) / max(1, last["connections"]) if redis else None,
                     "steps": [(s["connections"], s["procs"].get("server")) for s in st]}
    return res


def broadcast(work, q):
    """Three interleaved rounds (one in quick mode); each figure is the median round's.

    One round's ratio to the floor moves by ±0.2 on this shared machine (neighbours, CPU
    frequency), more than the differences being measured; interleaving the servers and
    taking medians keeps that noise out of the comparison."""
    subs, events = (1000, 30) if q else (5000, 100)
    rounds = ROUNDS or (1 if q else 3)
    kinds = ["gw-emb", "gw-redis", "nchan", "floor"] + (["floor-c"] if FLOOR_C else [])
    if BEFORE_BIN:
        # The code before a change: its floor, and its gateway (embedded and Redis), each
        # round beside the current ones.
        kinds += ["floor@before", "gw-emb@before", "gw-redis@before"]
    runs = {kind: [] for kind in kinds}
    for n in range(rounds):
        for kind in runs:
            log(f"broadcast: {kind} (round {n + 1} of {rounds})")
            server, redis, base = start_target(work, kind)
            try:
                r = load(work, f"broadcast-{kind}-{n}".replace("@", "-"), base + ["--topics", 1, "--connections", subs, "--connect-rate", 5000,
                                                                "--publish", "http", "--events", events, "--rate", 10,
                                                                "--topic-prefix", "bc", "--source-addrs", "127.0.0.2",
                                                                "--max-duration", "60s"],
                         program=binary(kind, "sse-load"))
            finally:
                server.stop()
                redis and redis.stop()
            delivered = r["events"]["unique"]
            runs[kind].append({"delivered": delivered, "lost": r["events"]["lost"], "dups": r["events"]["duplicates"],
                               "ooo": r["events"]["out_of_order"],
                               "cpu_us_per_delivery": 1e6 * cpu_of(r, "deliver", ["server"]) / max(1, delivered),
                               "cpu_us_per_delivery_with_redis": 1e6 * cpu_of(r, "deliver", ["server", "redis"]) / max(1, delivered),
                               "last_sub_p50_us": r["fanout_last_us"].get("p50"), "last_sub_p99_us": r["fanout_last_us"].get("p99"),
                               "latency_p50_us": r["latency_us"].get("p50"), "latency_p99_us": r["latency_us"].get("p99")})
    res = {kind: median_of(rs) for kind, rs in runs.items()}
    # The floor of record: the cheaper of the two floor programs in this run (median CPU
    # per delivery); every ratio to "the floor" is to it.
    floors = [k for k in ("floor", "floor-c") if k in res]
    res["floor_ref"] = min(floors, key=lambda k: res[k]["cpu_us_per_delivery"])
    return res


def redis_per_event(before, after, events):
    """Redis's cost per published event between two `Redis.counters()`: CPU (/proc), reads
    and writes (system calls' worth), and per command its calls and µs (`INFO commandstats`
    counts the commands a script calls too, so `evalsha`'s µs include theirs)."""
    d = lambda k: after.get(k, 0) - before.get(k, 0)
    commands = {}
    for name, a in after["commands"].items():
        b = before["commands"].get(name, {"calls": 0, "usec": 0})
        calls = a["calls"] - b["calls"]
        if calls > 0 and not name.startswith(("info", "config")):
            commands[name] = {"calls_per_event": calls / events, "usec_per_event": (a["usec"] - b["usec"]) / events,
                              "usec_per_call": (a["usec"] - b["usec"]) / calls}
    return {"events": events, "cpu_us_per_event": 1e6 * d("cpu_s") / max(1, events),
            "reads_per_event": d("total_reads_processed") / max(1, events),
            "writes_per_event": d("total_writes_processed") / max(1, events),
            "commands": commands}


def many_jobs(work, q, kinds=None, tag="many-jobs"):
    """Interleaved rounds (three; one in quick mode), each figure the median round's.

    For the kinds with Redis, Redis's own cost per published event is measured around the
    deliver phase alone (sse-load waits on a go file after its ramp): CPU from /proc,
    commands from `INFO commandstats`, reads and writes from `INFO stats`."""
    jobs, rate, secs = (500, 1000, 3) if q else (2000, 2000, 10)
    rounds = ROUNDS or (1 if q else 3)
    kinds = kinds or ["gw-emb", "gw-redis", "gw-redis-sdk", "nchan", "floor"]
    if BEFORE_BIN and tag == "many-jobs":
        kinds += ["gw-redis@before", "gw-redis-sdk@before"]
    runs = {kind: [] for kind in kinds}
    for n in range(rounds):
        for kind in kinds:
            log(f"{tag}: {kind} (round {n + 1} of {rounds})")
            server, redis, base = start_target(work, kind, prefix="mj:")
            via = "sdk-redis" if kind.startswith("gw-redis-sdk") else "http"
            batched = ["--publish-batch", BATCH_EVENTS] if kind.split("@")[0] == "gw-redis-batch" else []
            name = f"{tag.replace('-', '')}-{kind}-{n}".replace("@", "-")
            ready, go = os.path.join(work, name + ".ready"), os.path.join(work, name + ".go")
            per_event = None
            try:
                proc, path = load(work, name, base + ["--topics", jobs, "--connections", jobs, "--connect-rate", 5000,
                                                      "--publish", via, "--events", rate * secs, "--rate", rate,
                                                      "--topic-prefix", "mj", "--source-addrs", "127.0.0.2",
                                                      "--ready-file", ready, "--go-file", go, "--max-duration", "90s",
                                                      *batched],
                                  background=True, program=binary(kind, "sse-load"))
                deadline = time.time() + 60
                while not os.path.exists(ready) and proc.poll() is None and time.time() < deadline:
                    time.sleep(0.05)
                counters = redis.counters() if redis else None
                open(go, "w").close()
                proc.wait(120)
                if redis:
                    per_event = redis_per_event(counters, redis.counters(), rate * secs)
                with open(path) as f:
                    r = json.load(f)
            finally:
                server.stop()
                redis and redis.stop()
            delivered = r["events"]["unique"]
            run = {"delivered": delivered, "lost": r["events"]["lost"], "dups": r["events"]["duplicates"],
                   "ooo": r["events"]["out_of_order"], "publish_failed": r.get("publish", {}).get("failed"),
                   "server_cpu_us": 1e6 * cpu_of(r, "deliver", ["server"]) / max(1, delivered),
                   "redis_cpu_us": 1e6 * cpu_of(r, "deliver", ["redis"]) / max(1, delivered),
                   "cpu_us_per_delivery": 1e6 * cpu_of(r, "deliver", ["server", "redis"]) / max(1, delivered),
                   "latency_p50_us": r["latency_us"].get("p50"), "latency_p99_us": r["latency_us"].get("p99"),
                   "latency_p999_us": r["latency_us"].get("p999")}
            if per_event:
                run["redis_cpu_us_per_event"] = per_event["cpu_us_per_event"]
                run["redis_reads_per_event"] = per_event["reads_per_event"]
                run["redis_writes_per_event"] = per_event["writes_per_event"]
                run["redis"] = per_event
            log(f"  {kind}: server {run['server_cpu_us']:.1f} µs + Redis {run['redis_cpu_us']:.1f} µs per delivery"
                + (f"; Redis {per_event['cpu_us_per_event']:.1f} µs, {per_event['reads_per_event']:.2f} reads, "
                   f"{per_event['writes_per_event']:.2f} writes per event; "
                   + ", ".join(f"{c} {v['calls_per_event']:.2f}×{v['usec_per_call']:.1f} µs"
                               for c, v in sorted(per_event["commands"].items())) if per_event else ""))
            runs[kind].append(run)
    res = {}
    for kind, rs in runs.items():
        res[kind] = median_of(rs)
        with_redis = [x for x in rs if "redis" in x]
        if with_redis:
            # Commands of the median round by Redis CPU per event.
            res[kind]["redis"] = sorted(with_redis, key=lambda x: x["redis_cpu_us_per_event"])[len(with_redis) // 2]["redis"]
    return res


def batch(work, q):
    """Many jobs as in many_jobs, the events published in `POST /v1/events:batch` requests of
    BATCH_EVENTS events, beside single-event HTTP publishes and Nchan in the same
    interleaved rounds (its own scenario, so that it runs without the whole many_jobs)."""
    return many_jobs(work, q, kinds=["gw-redis", "gw-redis-batch", "nchan"], tag="batch")


def storm(work, q):
    n = 4000 if q else 20000
    res = {}
    # Not the floor: it never reads its subscribers' sockets, so it cannot notice the
    # storm's closed connections and runs out of descriptors; it is a write floor only.
    for kind in ("gw-emb", "gw-redis", "nchan"):
        log(f"connect storm: {kind}")
        server, redis, base = start_target(work, kind)
        common = ["--stream", "user", "--topics", 1000, "--storm", "--topic-prefix", "st",
                  "--source-addrs", "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5", "--max-duration", "60s"]
        try:
            fast = load(work, f"storm-max-{kind}", base + common + ["--connections", n, "--connect-concurrency", 64])
            paced = load(work, f"storm-5k-{kind}", base + common + ["--connections", n // 2, "--connect-rate", 5000,
                                                                    "--connect-concurrency", 512])
        finally:
            server.stop()
            redis and redis.stop()
        cpu = cpu_of(fast, "connect", ["server"])
        done = fast["connections"]["storm_completed"]
        res[kind] = {"max_per_s": fast["connections"]["storm_per_second"], "failed": fast["connections"]["failed_by_reason"],
                     "server_cpu_s": cpu, "per_core_per_s": done / cpu if cpu > 0 else None,
                     "redis_cpu_s": cpu_of(fast, "connect", ["redis"]),
                     "max_first_byte_p99_us": fast["first_byte_us"].get("p99"),
                     "at5k_first_byte_p50_us": paced["first_byte_us"].get("p50"),
                     "at5k_first_byte_p99_us": paced["first_byte_us"].get("p99"),
                     "at5k_failed": paced["connections"]["failed_by_reason"]}
    return res


def resume(work, q):
    clients, history = (200, 300) if q else (1000, 1001)
    res = {}
    for kind in ("gw-emb", "gw-redis", "nchan"):
        log(f"resume: {kind}")
        server, redis, base = start_target(work, kind)
        try:
            r = load(work, f"resume-{kind}", base + ["--topics", 1, "--connections", clients, "--publish", "http",
                                                      "--resume-history", history, "--connect-rate", 5000,
                                                      "--topic-prefix", "rs", "--source-addrs", "127.0.0.2",
                                                      "--drain-timeout", "60s", "--max-duration", "120s"])
        finally:
            server.stop()
            redis and redis.stop()
        c = r["complete_us"]
        res[kind] = {"completed": c.get("count", 0), "clients": clients, "events_each": history - 1,
                     "lost": r["events"]["lost"], "dups": r["events"]["duplicates"], "ooo": r["events"]["out_of_order"],
                     "replay_p50_us": c.get("p50"), "replay_p99_us": c.get("p99"), "replay_max_us": c.get("max"),
                     "server_cpu_s": cpu_of(r, "connect", ["server"]) + cpu_of(r, "deliver", ["server"]),
                     "redis_cpu_s": cpu_of(r, "connect", ["redis"]) + cpu_of(r, "deliver", ["redis"])}
    return res


def scale_out(work, q):
    nodes, per_node, events = (3, 2000, 5) if q else (5, 19000, 10)
    redis = Redis(work, cpu=None)
    gws, procs = [], []
    try:
        for _ in range(nodes):
            gws.append(Gateway(work, redis, cpu=None, prefix="so:"))
        ready = [os.path.join(work, f"so-ready-{i}") for i in range(nodes)]
        go = os.path.join(work, "so-go")
        for f in ready + [go]:
            if os.path.exists(f):
                os.remove(f)
        for i, gw in enumerate(gws):
            procs.append(load(work, f"scaleout-{i}", ["--target", "gateway", "--url", gw.url, "--stream", "user",
                                                      "--topics", 1, "--topic-prefix", "so-all", "--connections", per_node,
                                                      "--connect-rate", 3000, "--source-addrs", f"127.0.0.{2 + i}",
                                                      "--expect-events", events, "--ready-file", ready[i], "--go-file", go,
                                                      "--watch", f"server={gw.pid}", "--watch", f"redis={redis.pid}",
                                                      "--drain-timeout", "60s", "--max-duration", "200s"],
                              cpu=None, background=True))
        deadline = time.time() + 120
        while time.time() < deadline and not all(os.path.exists(f) for f in ready):
            time.sleep(0.2)
        before = [g.metrics().get("sse_gateway_events_received_total", 0) for g in gws]
        numsub = redis.cli("PUBSUB", "NUMSUB", "so:{u:so-allu0}").split()
        open(go, "w").close()
        pub = load(work, "scaleout-publisher", ["--target", "gateway", "--url", gws[0].url, "--stream", "user",
                                                "--topics", 1, "--topic-prefix", "so-all", "--connections", 0,
                                                "--publish", "sdk-redis", "--redis-url", redis.url, "--redis-prefix", "so:",
                                                "--events", events, "--rate", 0.5, "--max-duration", "60s"], cpu=None)
        reports = []
        for p, path in procs:
            p.wait(260)
            with open(path) as f:
                reports.append(json.load(f))
        after = [g.metrics().get("sse_gateway_events_received_total", 0) for g in gws]
        slow = sum(g.metrics().get("sse_gateway_slow_consumer_disconnects_total", 0) for g in gws)
        rss = [r["phases"]["connect"]["procs"].get("server", {}).get("rss_kib") for r in reports]
    finally:
        for p, _ in procs:
            stop(p)
        for g in gws:
            g.stop()
        redis.stop()
    established = sum(r["connections"]["established"] for r in reports)
    received = sum(r["events"]["unique"] for r in reports)
    lost = sum(r["events"]["lost"] for r in reports)
    lat = [r["latency_us"].get("p99") for r in reports]
    return {"nodes": nodes, "clients": established, "attempted": nodes * per_node, "events": events,
            "published": pub.get("publish", {}).get("sent"),
            "delivered": received, "lost": lost, "slow_consumer_disconnects": slow,
            "ended_by_server": sum(r["events"]["ended_by_server"] for r in reports),
            "failed": [r["connections"]["failed_by_reason"] for r in reports],
            "redis_messages_per_event": (sum(after) - sum(before)) / max(1, events),
            "numsub": numsub[1] if len(numsub) > 1 else None,
            "latency_p99_us_per_node": lat, "gateway_rss_kib": rss,
            "redis_cpu_s": sum(r["phases"].get("deliver", {}).get("procs", {}).get("redis", {}).get("cpu_s", 0) for r in reports[:1])}


def nearest_rank(values, q):
    """The q-quantile of values by nearest rank, as sse-load's percentiles."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v), max(1, math.ceil(q * len(v)))) - 1]


def merged(reports):
    """One figure set from the reports of the processes that shared one run."""
    fanout = {}
    for r in reports:
        for seq, us in r["fanout_last_by_seq"]:
            fanout[seq] = max(fanout.get(seq, 0), us)
    first_id = [x for r in reports for x in (r.get("raw") or {}).get("first_id_us", [])]
    deliver = [r["phases"].get("deliver", {}) for r in reports]
    procs = [d.get("procs", {}) for d in deliver]
    attempted = sum(r["connections"]["attempted"] for r in reports)
    held = sum(r["connections"]["held"] for r in reports)
    events = lambda k: sum(r["events"][k] for r in reports)
    delivered = events("unique")
    server_cpu = sum(p.get("server", {}).get("cpu_s", 0.0) for p in procs)
    # Every process watches the one Redis: its longest deliver window covers the others'.
    redis_cpu = max((p.get("redis", {}).get("cpu_s", 0.0) for p in procs), default=0.0)
    load_cpu = sum(p.get("sse-load", {}).get("cpu_s", 0.0) for p in procs)
    return {"attempted": attempted, "established": sum(r["connections"]["established"] for r in reports),
            "held": held, "connect_success": held / max(1, attempted),
            "failed": [r["connections"]["failed_by_reason"] for r in reports],
            "delivered": delivered, "expected": events("expected"), "lost": events("lost"),
            "dups": events("duplicates"), "ooo": events("out_of_order"),
            "ids_not_increasing": events("ids_not_increasing"), "bad_ids": events("bad_ids"),
            "ended_by_server": events("ended_by_server"),
            "events_per_read": events("received") / max(1, events("body_reads")),
            "first_id_p50_us": nearest_rank(first_id, .5), "first_id_p95_us": nearest_rank(first_id, .95),
            "first_id_p99_us": nearest_rank(first_id, .99), "first_id_count": len(first_id),
            "last_sub_p50_us": nearest_rank(list(fanout.values()), .5),
            "last_sub_p99_us": nearest_rank(list(fanout.values()), .99),
            "last_sub_max_us": max(fanout.values(), default=None), "fanout_events": len(fanout),
            "latency_p50_us_per_process": [r["latency_us"].get("p50") for r in reports],
            "latency_p99_us_per_process": [r["latency_us"].get("p99") for r in reports],
            "deliver_seconds": max((d.get("seconds", 0.0) for d in deliver), default=0.0),
            "server_cpu_s": server_cpu, "redis_cpu_s": redis_cpu, "load_cpu_s": load_cpu,
            "cpu_us_per_delivery": 1e6 * server_cpu / max(1, delivered),
            "cpu_us_per_delivery_with_redis": 1e6 * (server_cpu + redis_cpu) / max(1, delivered),
            "load_cpu_us_per_delivery": 1e6 * load_cpu / max(1, delivered),
            "server_rss_kib": [r["phases"]["connect"]["procs"].get("server", {}).get("rss_kib") for r in reports]}


def fan_in(work, tag, servers, per, common, extra_of):
    """Starts one sse-load per server (each from two loopback source addresses of its
    own, with --ready-file/--go-file) and waits until every one has finished its connect
    ramp. Returns the processes and the go file that starts their deliver phase.

    Two addresses, so that no address has more than ~8,400 connections to one server:
    connect() takes ports of one parity first, and once those (~14,100 of the 28,232 in
    32768–60999) are taken, every further connect() scans them all first, hundreds of µs
    of kernel time each, which slows the ramp and fills the connect-time tail."""
    ready = [os.path.join(work, f"{tag}-ready-{i}") for i in range(len(servers))]
    go = os.path.join(work, f"{tag}-go")
    for f in ready + [go]:
        if os.path.exists(f):
            os.remove(f)
    procs = []
    for i, server in enumerate(servers):
        procs.append(load(work, f"{tag}-{i}", common + ["--url", server.url, "--connections", per[i],
                                                        "--source-addrs", f"127.0.0.{2 + 2 * i},127.0.0.{3 + 2 * i}",
                                                        "--ready-file", ready[i], "--go-file", go,
                                                        "--watch", f"server={server.pid}", *extra_of(i)],
                          cpu=None, background=True))
    deadline = time.time() + 180
    while time.time() < deadline and not all(os.path.exists(f) for f in ready):
        if any(p.poll() is not None for p, _ in procs):
            break
        time.sleep(0.2)
    if not all(os.path.exists(f) for f in ready):
        raise RuntimeError(f"{tag}: not every sse-load reached the end of its ramp")
    return procs, go


def collect(procs, timeout=400):
    reports = []
    for p, path in procs:
        p.wait(timeout)
        with open(path) as f:
            reports.append(json.load(f))
    return reports


def topics(work, q):
    """One topic, 50,000 subscribers over 3 gateway nodes on one Redis, 10 events/s for
    10 s through the SDK's Redis transport; then the same fan-out per process against 3
    floor processes. Two rounds (gateway, floor, gateway, floor); one in quick mode.

    Unpinned: 3 servers (+ Redis) and 3 load generators share the 2 CPUs, as in the
    scale-out scenario, so the ratio to the floor compares like with like, and the
    latencies are the whole machine's."""
    nodes, total, events, rate = (3, 3000, 20, 10) if q else (3, 50000, 100, 10)
    rounds = 1 if q else 2
    per = [total // nodes + (1 if i < total % nodes else 0) for i in range(nodes)]
    topic_prefix, redis_prefix = "bt", "tp:"
    topic = f"{topic_prefix}t0"
    common = ["--stream", "topic", "--topics", 1, "--topic-prefix", topic_prefix, "--connect-rate", 1000,
              "--drain-timeout", "180s", "--max-duration", "330s", "--raw-samples"]
    res = {"nodes": nodes, "subscribers": total, "per_node": per, "events": events, "rate": rate,
           "topic": topic, "rounds": []}
    for n in range(rounds):
        log(f"topics: gateway × {nodes} + Redis, {total} subscribers (round {n + 1} of {rounds})")
        redis = Redis(work, cpu=None)
        gws, procs = [], []
        try:
            for _ in range(nodes):
                gws.append(Gateway(work, redis, cpu=None, prefix=redis_prefix, extra=("--public-topic", f"{topic_prefix}*")))
            procs, go = fan_in(work, f"topics-gw-{n}", gws, per,
                               ["--target", "gateway", *common, "--expect-events", events],
                               lambda i: ["--watch", f"redis={redis.pid}"])
            before = [g.metrics() for g in gws]
            numsub = redis.cli("PUBSUB", "NUMSUB", f"{redis_prefix}{{t:{topic}}}").split()
            open(go, "w").close()
            pub = load(work, f"topics-gw-{n}-publisher", ["--target", "gateway", "--url", gws[0].url, "--stream", "topic",
                                                          "--topics", 1, "--topic-prefix", topic_prefix, "--connections", 0,
                                                          "--publish", "sdk-redis", "--redis-url", redis.url,
                                                          "--redis-prefix", redis_prefix, "--events", events, "--rate", rate,
                                                          "--max-duration", "120s"], cpu=None)
            reports = collect(procs)
            after = [g.metrics() for g in gws]
        finally:
            for p, _ in procs:
                stop(p)
            for g in gws:
                g.stop()
            redis.stop()
        gw = merged(reports)
        delta = lambda name: sum(a.get(name, 0) - b.get(name, 0) for a, b in zip(after, before))
        gw.update({"published": pub.get("publish", {}).get("sent"), "publish_failed": pub.get("publish", {}).get("failed"),
                   "publish_seconds": pub.get("publish", {}).get("seconds"),
                   "redis_messages_per_event": delta("sse_gateway_events_received_total") / max(1, events),
                   "slow_consumer_disconnects": delta("sse_gateway_slow_consumer_disconnects_total"),
                   "numsub": numsub[1] if len(numsub) > 1 else None})
        log(f"topics: floor × {nodes}, same fan-out per process (round {n + 1} of {rounds})")
        floors, procs = [], []
        try:
            for _ in range(nodes):
                floors.append(Floor(work, cpu=None))
            procs, go = fan_in(work, f"topics-floor-{n}", floors, per,
                               ["--target", "floor", *common, "--publish", "http", "--events", events, "--rate", rate],
                               lambda i: [])
            open(go, "w").close()
            reports = collect(procs)
        finally:
            for p, _ in procs:
                stop(p)
            for f in floors:
                f.stop()
        fl = merged(reports)
        fl["publish_failed"] = sum(r.get("publish", {}).get("failed", 0) for r in reports)
        # The floor answers a publish once it has written the event to every socket, and
        # each sse-load publishes in order: a slow fan-out slows the publishing.
        fl["publish_seconds"] = max(r.get("publish", {}).get("seconds", 0.0) for r in reports)
        res["rounds"].append({"gateway": gw, "floor": fl})
        if n == 0:
            names = [f"topics-gw-0-{i}" for i in range(nodes)] + ["topics-gw-0-publisher"] + [f"topics-floor-0-{i}" for i in range(nodes)]
            res["commands"] = [COMMANDS[k] for k in names]
        log(f"topics round {n + 1}: gateway delivered {gw['delivered']} of {gw['expected']}, lost {gw['lost']}, "
            f"last subscriber p50 {gw['last_sub_p50_us']} µs p99 {gw['last_sub_p99_us']} µs, "
            f"{gw['cpu_us_per_delivery']:.2f} µs/delivery; floor {fl['cpu_us_per_delivery']:.2f} µs/delivery, "
            f"last subscriber p99 {fl['last_sub_p99_us']} µs")
    return res


SWEEP_RATES = (2000, 5000, 10000, 20000, 40000)
SWEEP_SATURATED = 0.9  # a core this busy over a point's deliver phase is saturated


def cpu_times():
    """Per CPU (cpu0, cpu1, …), jiffies from /proc/stat: (busy, total, in processes,
    in interrupts, stolen). Busy = all but idle and iowait; in processes = user + nice +
    system (what processes' utime + stime add up to); interrupts = irq + softirq (on
    loopback, much of TCP's receive work, charged to no process); stolen = the
    hypervisor's."""
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name, *v = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in v] + [0] * 8
                out[name] = (sum(v) - v[3] - v[4], sum(v), v[0] + v[1] + v[2], v[5] + v[6], v[7])
    return out


def sweep(work, q):
    """Saturation sweep: the many-jobs shape (one subscriber per job, HTTP publish) at
    rising publish rates, for each system in turn at each rate (a fresh server and Redis
    per point), so a user sees where each one's p99 and CPU per delivery turn up.

    Latency here counts from when the pacer hands an event to its publishing worker
    (`--latency-from-dispatch`): when publishes slow down, the events queued behind them
    count their wait. The one-core client publishes and reads everything, so it can be
    the first to saturate: each point records the busy share of the client's core
    (`sse-load` alone, and the whole CPU including neighbours) and of the server's
    (server + Redis), and the publish rate achieved, so a point limited by the client is
    marked as such rather than read as the server's limit."""
    jobs, rates, secs = (200, (500, 2000), 2) if q else (2000, SWEEP_RATES, 5)
    kinds = ["gw-emb", "gw-redis", "nchan"]
    res = {"jobs": jobs, "seconds": secs, "rates": list(rates), "kinds": kinds,
           "saturated_share": SWEEP_SATURATED, "points": {k: [] for k in kinds}}
    for rate in rates:
        for kind in kinds:
            if any(p.get("timed_out") for p in res["points"][kind]):
                continue
            log(f"sweep: {kind} at {rate} events/s")
            server, redis, base = start_target(work, kind, prefix="sw:")
            # A system slower than the offered rate stretches the publishing (every event
            # is published): 150 s bounds a point down to ~1,300 events/s at the top rate.
            try:
                before, t0 = cpu_times(), time.time()
                r = load(work, f"sweep-{kind}-{rate}", base + [
                    "--topics", jobs, "--connections", jobs, "--connect-rate", 5000, "--publish", "http",
                    "--events", rate * secs, "--rate", rate, "--latency-from-dispatch", "--topic-prefix", "sw",
                    "--source-addrs", "127.0.0.2", "--drain-timeout", "10s", "--max-duration", "150s"],
                    timeout=180)
                after, wall = cpu_times(), time.time() - t0
            except subprocess.TimeoutExpired:
                log(f"  {kind} @ {rate}/s: sse-load did not finish in 180 s; no higher rate for it")
                res["points"][kind].append({"rate": rate, "timed_out": True})
                continue
            finally:
                server.stop()
                redis and redis.stop()
            d = r["phases"].get("deliver", {})
            seconds = d.get("seconds") or 1e-9
            procs = d.get("procs", {})
            cpu = lambda k: procs.get(k, {}).get("cpu_s", 0.0)
            pub = r.get("publish", {})
            # `sent` counts the set-up publishes that create the gateway's jobs too.
            published = (pub.get("sent") or 0) - (jobs if kind.startswith("gw") else 0)
            delivered = r["events"]["unique"]
            busy = lambda c, i=0: ((after[c][i] - before[c][i]) / max(1, after[c][1] - before[c][1])) if c in after else None
            # What other processes ran on each CPU over the whole sse-load run: the CPU's
            # share in processes less our own processes' (all phases) — the machine is
            # shared; interrupt and stolen time apart.
            ours = lambda *names: sum(ph.get("procs", {}).get(n, {}).get("cpu_s", 0.0)
                                      for ph in r["phases"].values() for n in names) / max(1e-9, wall)
            point = {"rate": rate, "events": rate * secs, "published": published, "publish_failed": pub.get("failed"),
                     "publish_failures": pub.get("failures"), "publish_seconds": pub.get("seconds"),
                     "achieved_rate": published / max(1e-9, pub.get("seconds") or 0),
                     "delivered": delivered, "expected": r["events"]["expected"], "lost": r["events"]["lost"],
                     "dups": r["events"]["duplicates"], "ooo": r["events"]["out_of_order"],
                     "ended_by_server": r["events"]["ended_by_server"],
                     "connections": r["connections"]["established"], "failed": r["connections"]["failed_by_reason"],
                     "deliver_seconds": seconds, "lag_seconds": seconds - (pub.get("seconds") or 0),
                     "delivered_rate": delivered / seconds,
                     "latency_p50_us": r["latency_us"].get("p50"), "latency_p99_us": r["latency_us"].get("p99"),
                     "latency_p999_us": r["latency_us"].get("p999"), "latency_max_us": r["latency_us"].get("max"),
                     "server_cpu_us": 1e6 * cpu("server") / max(1, delivered),
                     "redis_cpu_us": 1e6 * cpu("redis") / max(1, delivered),
                     "cpu_us_per_delivery": 1e6 * (cpu("server") + cpu("redis")) / max(1, delivered),
                     "load_cpu_us": 1e6 * cpu("sse-load") / max(1, delivered),
                     "server_core_busy": (cpu("server") + cpu("redis")) / seconds,
                     "client_busy": cpu("sse-load") / seconds,
                     # Whole CPUs over the whole sse-load run (ramp included), neighbours too.
                     "server_cpu_busy_all": busy(f"cpu{SERVER_CPU}"), "client_cpu_busy_all": busy(f"cpu{CLIENT_CPU}"),
                     "run_seconds": wall}
            if point["server_cpu_busy_all"] is not None:
                sc, cc = f"cpu{SERVER_CPU}", f"cpu{CLIENT_CPU}"
                point["server_cpu_others"] = max(0.0, busy(sc, 2) - ours("server", "redis"))
                point["client_cpu_others"] = max(0.0, busy(cc, 2) - ours("sse-load"))
                point["server_cpu_irq"], point["client_cpu_irq"] = busy(sc, 3), busy(cc, 3)
                point["server_cpu_steal"], point["client_cpu_steal"] = busy(sc, 4), busy(cc, 4)
            # A core is full when our processes alone, or everything on it, keep it busy.
            full = lambda ours_share, all_share: ours_share >= SWEEP_SATURATED or (all_share or 0) >= 0.95
            point["client_bound"] = full(point["client_busy"], point["client_cpu_busy_all"])
            point["server_bound"] = full(point["server_core_busy"], point["server_cpu_busy_all"])
            point["kept_up"] = (point["achieved_rate"] >= 0.95 * rate and point["lost"] == 0
                                and not point["publish_failed"] and point["lag_seconds"] < 1.0)
            res["points"][kind].append(point)
            log(f"  {kind} @ {rate}/s: published {point['achieved_rate']:.0f}/s, delivered {delivered} "
                f"(lost {point['lost']}), p99 {point['latency_p99_us']} µs, {point['cpu_us_per_delivery']:.1f} µs/delivery "
                f"(server {point['server_cpu_us']:.1f} + Redis {point['redis_cpu_us']:.1f}); server core "
                f"{100 * point['server_core_busy']:.0f} %, client {100 * point['client_busy']:.0f} %"
                f"; others on CPU {SERVER_CPU} / {CLIENT_CPU}: {100 * point.get('server_cpu_others', 0):.0f} % / "
                f"{100 * point.get('client_cpu_others', 0):.0f} %, interrupts {100 * point.get('server_cpu_irq', 0):.0f} % / "
                f"{100 * point.get('client_cpu_irq', 0):.0f} %, stolen {100 * point.get('server_cpu_steal', 0):.0f} % / "
                f"{100 * point.get('client_cpu_steal', 0):.0f} %; lag {point['lag_seconds']:.2f} s")
    res["command"] = COMMANDS.get(f"sweep-gw-redis-{rates[-1]}")
    return res


SCENARIOS = {"idle": idle, "broadcast": broadcast, "many_jobs": many_jobs, "batch": batch, "storm": storm, "resume": resume,
             "scale_out": scale_out, "topics": topics, "sweep": sweep}


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30

    def version(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    nchan = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"], capture_output=True, text=True).stdout
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem, 1), "kernel": platform.release(),
            "nofile_hard": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1],
            "nginx": version(["nginx", "-v"]), "nchan": nchan or "?", "redis": version(["redis-server", "--version"]),
            "rustc": version(["rustc", "--version"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts (smoke test of the bench itself)")
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--label", default="current", help="results slot in docs/bench/results.json")
    ap.add_argument("--why", default="", help="with --only: why those scenarios were run again (shown in the report)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds of broadcast and many_jobs")
    ap.add_argument("--before-bin", default=None,
                    help="release binaries of the code before a change, run beside the current ones (see the module doc)")
    a = ap.parse_args()
    global BEFORE_BIN, FLOOR_C, ROUNDS
    BEFORE_BIN = os.path.abspath(a.before_bin) if a.before_bin else None
    ROUNDS = a.rounds
    work = tempfile.mkdtemp(prefix="sse-bench-")
    FLOOR_C = build_floor_c(work)
    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(1)))
    t0 = time.time()
    results = {"machine": machine(), "quick": a.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "pinning": {"server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU}}
    if BEFORE_BIN:
        results["before_bin"] = {"dir": os.path.relpath(BEFORE_BIN, ROOT) if BEFORE_BIN.startswith(ROOT) else BEFORE_BIN,
                                 "why": a.why}
    try:
        for name in a.only.split(","):
            s = time.time()
            results[name] = SCENARIOS[name](work, a.quick)
            log(f"{name} done in {time.time() - s:.0f}s")
    finally:
        stop_all()
    results["seconds"] = time.time() - t0
    os.makedirs(os.path.join(a.out, "bench"), exist_ok=True)
    path = os.path.join(a.out, "bench", "results.json")
    stored = {}
    if os.path.exists(path):
        try:
            stored = json.load(open(path))
        except ValueError:
            stored = {}
    # A partial run (--only) updates its scenarios and keeps the others.
    slot = stored.setdefault(a.label, {})
    if slot and a.only != ",".join(SCENARIOS):
        partial = {"only": a.only, "started": results["started"], "seconds": results["seconds"]}
        if a.why:
            partial["why"] = a.why
        # The slot's machine is the full run's; this part's is kept with it.
        for k in ("machine", "quick", "pinning", "before_bin"):
            if k in results:
                partial[k] = results.pop(k)
        # An earlier partial run whose scenarios this one replaces is no longer shown.
        kept = [p for p in slot.get("partial_runs", []) if not set(p["only"].split(",")) <= set(a.only.split(","))]
        results["partial_runs"] = kept + [partial]
        for k in ("started", "seconds"):
            results.pop(k)
    slot.update(results)
    with open(path, "w") as f:
        json.dump(stored, f, indent=1)
    sys.path.insert(0, os.path.dirname(__file__))
    import report
    # The document shows the run of record ("current"), with the "baseline" run beside it.
    report.write(stored, "current" if "current" in stored else a.label, a.out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.time() - t0:.0f}s: {a.out}/benchmarks.md")


if __name__ == "__main__":
    main()
