"""Renders docs/benchmarks.md and docs/bench/*.png from docs/bench/results.json
(written by bench.py). `python3 loadtest/bench/report.py` re-renders without re-running."""

import json
import os
import sys

KINDS = ["gw-emb", "gw-tls", "gw-redis", "gw-redis-sdk", "nchan", "floor"]
NAMES = {"gw-emb": "gateway (embedded)", "gw-emb-ka": "gateway (embedded), stream after a page on a kept-alive connection",
         "gw-emb-h2c": "gateway (embedded), h2c stream", "gw-emb-h2c8": "gateway (embedded), h2c, 8 streams per connection", "gw-tls": "gateway (embedded), HTTPS", "gw-redis": "gateway + Redis", "gw-redis-sdk": "gateway + Redis (SDK publish)",
         "gw-redis-batch": "gateway + Redis (batch publish)", "nchan": "Nchan + Redis", "floor": "floor (Rust)", "floor-c": "floor (C)"}


def name(k):
    """A kind's row name; `<kind>@before` is that kind built from the code before a change."""
    base, _, tag = k.partition("@")
    return NAMES.get(base, base) + (" — before" if tag == "before" else "")


def kinds_of(scenario):
    """The kinds measured in a scenario (its entries that are figure sets)."""
    return [k for k, v in scenario.items() if isinstance(v, dict)]


def floor_of(b):
    """The floor of record of a broadcast run: the cheaper floor program in it."""
    return b[b.get("floor_ref", "floor")]


def f(x, unit="", nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def ms(us):
    return "–" if us is None else (f"{us / 1000:.2f} ms" if us >= 1000 else f"{us} µs")


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


def pct(x):
    return "–" if x is None else f"{100 * x:.3f} %"


def secs(x):
    return "–" if x is None else f"{x:.1f} s"


def verdict(ok):
    return "**holds**" if ok else "**missed**"


def plots(r, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    idle = r.get("idle")
    if idle:
        plt.figure(figsize=(7, 4))
        for k, v in idle.items():
            xs = [s[0] for s in v["steps"]]
            ys = [(s[1] or 0) / 1024 for s in v["steps"]]
            plt.plot(xs, ys, marker="o", label=name(k))
        plt.xlabel("open idle SSE connections")
        plt.ylabel("server RSS (MiB)")
        plt.title("Memory vs connections")
        plt.grid(alpha=.3)
        plt.legend()
        plt.tight_layout()
        plt.savefig(os.path.join(out, "bench", "memory.png"), dpi=110)
        plt.close()
        made.append("memory.png")
    series = []
    for scen, title in (("broadcast", "Broadcast (1 job, 5,000 subscribers)"), ("many_jobs", "Many jobs (2,000 jobs, 2,000 events/s)")):
        if scen in r:
            series.append((scen, title))
    if series:
        fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4))
        if len(series) == 1:
            axes = [axes]
        for ax, (scen, title) in zip(axes, series):
            kinds = [k for k in KINDS if k in r[scen]]
            p50 = [(r[scen][k].get("latency_p50_us") or 0) / 1000 for k in kinds]
            p99 = [(r[scen][k].get("latency_p99_us") or 0) / 1000 for k in kinds]
            xs = range(len(kinds))
            ax.bar([x - .2 for x in xs], p50, .4, label="p50")
            ax.bar([x + .2 for x in xs], p99, .4, label="p99")
            ax.set_xticks(list(xs))
            ax.set_xticklabels([NAMES[k].replace(" + ", "\n+ ").replace(" (", "\n(") for k in kinds], fontsize=7)
            ax.set_ylabel("delivery latency (ms)")
            ax.set_title(title, fontsize=9)
            ax.legend()
            ax.grid(axis="y", alpha=.3)
        plt.tight_layout()
        plt.savefig(os.path.join(out, "bench", "latency.png"), dpi=110)
        plt.close()
        made.append("latency.png")
    return made


def batch_section(L, j):
    """The batch scenario: many jobs, events published 10 per `POST /v1/events:batch`, beside
    single-event HTTP publishes and Nchan in the same rounds."""
    L.append("## 3b. Many jobs, batch publish\n")
    L.append("As [Many jobs](#3-many-jobs) (2,000 jobs with one subscriber each, 2,000 events/s for 10 s), in its own "
             "interleaved rounds: the gateway with Redis publishing one event per HTTP request, the same with "
             "10 events per `POST /v1/events:batch` (`sse-load --publish-batch 10`: a request holds 10 jobs' "
             "events, one script call), and Nchan + Redis.\n")
    L.append("| | delivered | lost | dup | ooo | server CPU/delivery | Redis CPU/delivery | total | ÷ single publish | vs Nchan + Redis | Redis CPU/event | latency p50 | p99 |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    single = j.get("gw-redis", {}).get("cpu_us_per_delivery")
    nchan = j.get("nchan", {}).get("cpu_us_per_delivery")
    for k in kinds_of(j):
        v = j[k]
        per_event = v.get("redis_cpu_us_per_event")
        L.append(f"| {name(k)} | {v['delivered']} | {v['lost']} | {v['dups']} | {v['ooo']} | {v['server_cpu_us']:.1f} µs | "
                 f"{v['redis_cpu_us']:.1f} µs | {v['cpu_us_per_delivery']:.1f} µs | "
                 f"{ratio(v['cpu_us_per_delivery'], single) if k.startswith('gw-redis') else '–'} | "
                 f"{ratio(v['cpu_us_per_delivery'], nchan)} | {f(per_event, ' µs')} | "
                 f"{ms(v['latency_p50_us'])} | {ms(v['latency_p99_us'])} |")
    L.append("")
    rounds = j.get("gw-redis", {}).get("rounds")
    if rounds and len(rounds) > 1 and "gw-redis-batch" in j:
        L.append(f"Medians of {len(rounds)} interleaved rounds. Batch ÷ single publish, round by round — total CPU per "
                 "delivery; Redis CPU per published event:\n")
        L.append("| | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |")
        L.append("| --- |" + " --- |" * len(rounds))
        pairs = list(zip(j["gw-redis-batch"]["rounds"], rounds))
        L.append("| CPU per delivery | " + " | ".join(ratio(b["cpu_us_per_delivery"], s_["cpu_us_per_delivery"]) for b, s_ in pairs) + " |")
        L.append("| Redis CPU per event | " + " | ".join(ratio(b.get("redis_cpu_us_per_event"), s_.get("redis_cpu_us_per_event")) for b, s_ in pairs) + " |")
        L.append("")
    with_redis = [k for k in kinds_of(j) if j[k].get("redis")]
    if with_redis:
        L.append("Redis per published event (deliver phase; calls × µs per call, as in section 3):\n")
        L.append("| | Redis CPU per event | reads per event | writes per event | commands per event (calls × µs) |")
        L.append("| --- | --- | --- | --- | --- |")
        for k in with_redis:
            v = j[k]
            cmds = ", ".join(f"`{c}` {x['calls_per_event']:.2f} × {x['usec_per_call']:.1f}"
                             for c, x in sorted(v["redis"]["commands"].items(), key=lambda cx: -cx[1]["usec_per_event"]))
            L.append(f"| {name(k)} | {v['redis_cpu_us_per_event']:.1f} µs | {v['redis_reads_per_event']:.2f} | "
                     f"{v['redis_writes_per_event']:.2f} | {cmds} |")
        L.append("")


def topics_section(L, t):
    rounds = t["rounds"]
    per = ", ".join(f"{n:,}" for n in t["per_node"])
    L.append(f"## 7. Topics: one topic, {t['subscribers']:,} subscribers on {t['nodes']} nodes\n")
    L.append(f"One topic (`{t['topic']}`, a broadcast feed), {t['subscribers']:,} subscribers spread over {t['nodes']} gateway "
             f"nodes ({per}) on one Redis, each node and each load generator under the 20,000-open-files limit: one "
             "`sse-load` process per node, each from two loopback source addresses of its own, every client with its own plain "
             "token (the gateways run with `--public-topic`). Once every process has finished its ramp (1,000 "
             f"opens/s each, `--ready-file`), a go file starts the deliver phase and {t['events']} events are published "
             f"at {t['rate']}/s through the SDK's Redis transport (`sse-load --publish sdk-redis`): "
             f"{t['subscribers'] * t['rate']:,} deliveries/s asked of the machine. The floor runs the same fan-out per "
             f"process in the same run: {t['nodes']} `sse-floor` processes with the same subscribers each, every "
             "`sse-load` publishing to its own floor over HTTP at the same rate. Unpinned, like the scale-out: the "
             "servers, Redis and the three load generators share the machine's 2 CPUs, so what is measured is the "
             "whole machine under that load, for the gateway and for the floor alike.\n")
    L.append("\"Last subscriber\" = per event, the latency (publish → parsed by `sse-load`) of the last of all "
             f"{t['subscribers']:,} subscribers to receive it, merged over the processes; percentiles over the events. "
             "CPU per delivery = the servers' CPU (Σ over nodes; Redis beside it) over the deliver phase ÷ events "
             "delivered; the load generators' own CPU per delivery is shown too, since they read the same events on "
             "the same 2 cores. Deliver phase = from the go file until every subscriber had every event (the publisher "
             f"takes {t['events'] / t['rate']:.0f} s), so what exceeds that is backlog.\n")
    L.append("| round | server | held / attempted | delivered | lost | dup | out of order (seq / id) | last subscriber p50 | p99 | max | "
             "published in | deliver phase | CPU/delivery | + Redis | vs floor | p99 vs floor | load generators' CPU/delivery | events per client read |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, rd in enumerate(rounds):
        g, fl = rd["gateway"], rd["floor"]
        for name, v in (("gateway × 3 + Redis", g), ("floor × 3", fl)):
            L.append(f"| {i + 1} | {name} | {v['held']:,} / {v['attempted']:,} | {v['delivered']:,} | {v['lost']} | {v['dups']} | "
                     f"{v['ooo']} / {v['ids_not_increasing'] if v is g else '–'} | {ms(v['last_sub_p50_us'])} | {ms(v['last_sub_p99_us'])} | "
                     f"{ms(v['last_sub_max_us'])} | {secs(v.get('publish_seconds'))} | {secs(v['deliver_seconds'])} | {v['cpu_us_per_delivery']:.2f} µs | "
                     f"{v['cpu_us_per_delivery_with_redis']:.2f} µs | {ratio(v['cpu_us_per_delivery'], fl['cpu_us_per_delivery'])} | "
                     f"{ratio(v['last_sub_p99_us'], fl['last_sub_p99_us'])} | {v['load_cpu_us_per_delivery']:.2f} µs | {f(v.get('events_per_read'), '', 2)} |")
    L.append("")
    L.append("The thresholds a k6 user would set on this run (`loadtest/k6/topics.js` sets the same ones): connection "
             "success = streams that opened and were held to the end ÷ attempted; time to first event = from the "
             "connect to the stream's id-only opening block (what xk6-sse hands a script first with an id; a fresh "
             "topic stream has no snapshot), over every subscriber.\n")
    L.append("| round | connection success | > 99.9 % | time to first event p50 | p95 | p99 | p95 < 1 s |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for i, rd in enumerate(rounds):
        g = rd["gateway"]
        p95 = g["first_id_p95_us"]
        L.append(f"| {i + 1} | {pct(g['connect_success'])} | {verdict(g['connect_success'] > 0.999)} | {ms(g['first_id_p50_us'])} | "
                 f"{ms(p95)} | {ms(g['first_id_p99_us'])} | {verdict(p95 is not None and p95 < 1_000_000)} |")
    L.append("")
    for i, rd in enumerate(rounds):
        g, fl = rd["gateway"], rd["floor"]
        L.append(f"Round {i + 1}, gateway: published {g['published']} in {secs(g['publish_seconds'])} (failed {g['publish_failed']}); "
                 f"Redis pub/sub messages per event (Σ nodes' `sse_gateway_events_received_total` ÷ events) "
                 f"{g['redis_messages_per_event']:.2f}, `PUBSUB NUMSUB` on the topic's channel {g['numsub']}; "
                 f"slow-consumer disconnects {g['slow_consumer_disconnects']:.0f}; streams ended by the server {g['ended_by_server']}; "
                 f"connection failures {g['failed']}; delivery latency p50 / p99 per node "
                 + ", ".join(f"{ms(a)} / {ms(b)}" for a, b in zip(g["latency_p50_us_per_process"], g["latency_p99_us_per_process"]))
                 + f"; gateway RSS per node after the ramp {', '.join(f(x, ' KiB') for x in g['server_rss_kib'])}; "
                 f"CPU over the deliver phase: gateways {g['server_cpu_s']:.1f} s, Redis {g['redis_cpu_s']:.1f} s, "
                 f"load generators {g['load_cpu_s']:.1f} s. Floor: CPU {fl['server_cpu_s']:.1f} s, load generators "
                 f"{fl['load_cpu_s']:.1f} s, connection failures {fl['failed']}.\n")
    cmds = t.get("commands")
    if cmds:
        L.append("The commands of round 1, as `bench.py` ran them (`$WORK` is its temporary directory; the ports and "
                 "PIDs are that run's):\n")
        L.append("```sh")
        L.extend(cmds)
        L.append("```\n")


SWEEP_P99_LIMIT_US = 10_000  # the p99 the sweep's findings name the crossing of
SWEEP_STYLE = {"gw-emb": ("tab:green", "o"), "gw-redis": ("tab:blue", "s"), "nchan": ("tab:red", "^")}


def lat(us):
    """A latency for the sweep, whose figures run from µs to seconds."""
    return ms(us) if us is None or us < 1_000_000 else f"{us / 1e6:.1f} s"


def sweep_plot(r, out):
    """docs/bench/sweep.png: p99 latency, CPU per delivery (server + Redis) and the
    delivered rate against the offered publish rate; hollow markers = the client's core
    was saturated at that point."""
    s = r.get("sweep")
    if not s:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"report: no matplotlib for {sys.executable}: docs/bench/sweep.png not drawn", file=sys.stderr)
        return []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    panels = (("p99 delivery latency (ms)", lambda p: (p["latency_p99_us"] or 0) / 1000, True),
              ("CPU per delivery, server + Redis (µs)", lambda p: p["cpu_us_per_delivery"], False),
              ("events delivered per second", lambda p: p["delivered_rate"], False))
    for ax, (label, get, logy) in zip(axes, panels):
        for k, pts in s["points"].items():
            pts = [p for p in pts if not p.get("timed_out")]
            color, marker = SWEEP_STYLE.get(k, (None, "o"))
            xs, ys = [p["rate"] for p in pts], [get(p) for p in pts]
            ax.plot(xs, ys, color=color, label=NAMES.get(k, k))
            for p, x, y in zip(pts, xs, ys):
                ax.plot([x], [y], marker=marker, color=color, markersize=7,
                        markerfacecolor="none" if client_full(p) else color)
        ax.set_xscale("log")
        ax.set_xticks(s["rates"])
        ax.set_xticklabels([f"{x // 1000}k" if x >= 1000 else str(x) for x in s["rates"]])
        ax.minorticks_off()
        ax.set_xlabel("offered publish rate (events/s, HTTP)")
        ax.set_ylabel(label)
        ax.grid(alpha=.3)
        if logy:
            ax.set_yscale("log")
            ax.axhline(SWEEP_P99_LIMIT_US / 1000, color="grey", linestyle="--", linewidth=1)
    axes[2].plot(s["rates"], s["rates"], color="grey", linestyle=":", linewidth=1, label="offered")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"Saturation sweep: {s['jobs']:,} jobs × 1 subscriber, HTTP publish; hollow marker = the "
                 "client's core was full (the point measures the load generator too)", fontsize=9)
    plt.tight_layout()
    plt.savefig(os.path.join(out, "bench", "sweep.png"), dpi=110)
    plt.close()
    return ["sweep.png"]


def sweep_findings(s):
    """Per system, in words computed from the points: where p99 passes the limit, where
    events are lost or delivery lags, where the publish rate is not reached, which points
    the client's core limits."""
    out = []
    rate = lambda x: f"{x:,}/s"
    for k, pts in s["points"].items():
        said = []
        timed_out = [p["rate"] for p in pts if p.get("timed_out")]
        pts = [p for p in pts if not p.get("timed_out")]
        if not pts:
            out.append(f"- **{NAMES.get(k, k)}**: no point finished in time.")
            continue
        ok = [p["rate"] for p in pts if (p["latency_p99_us"] or 1e12) <= SWEEP_P99_LIMIT_US]
        over = [p for p in pts if (p["latency_p99_us"] or 1e12) > SWEEP_P99_LIMIT_US]
        if over:
            first = over[0]
            said.append(f"p99 passes {SWEEP_P99_LIMIT_US // 1000} ms at {rate(first['rate'])} ({lat(first['latency_p99_us'])})"
                        + (f", within it up to {rate(max(ok))}" if ok and max(ok) < first["rate"] else ""))
        else:
            said.append(f"p99 stays within {SWEEP_P99_LIMIT_US // 1000} ms at every rate (highest {lat(pts[-1]['latency_p99_us'])} "
                        f"at {rate(pts[-1]['rate'])})")
        short = [p for p in pts if p["achieved_rate"] < 0.95 * p["rate"]]
        if short:
            p = short[0]
            top = max(pts, key=lambda x: x["achieved_rate"])
            said.append(f"publishing falls short from {rate(p['rate'])} ({p['achieved_rate']:,.0f}/s achieved; "
                        f"at most {top['achieved_rate']:,.0f}/s, at {rate(top['rate'])})")
            if all(x["lag_seconds"] < 1.0 for x in short):
                said.append("beyond that the backlog waits on the publishing side (an HTTP publish is answered once "
                            "the event is stored, so nothing piles up in the server and delivery never lags the "
                            "publisher) and latency grows with the length of the run: unbounded at those rates")
        lost = [p for p in pts if p["lost"] or p["publish_failed"]]
        if lost:
            p = lost[0]
            said.append(f"first lost events or failed publishes at {rate(p['rate'])} (lost {p['lost']:,}, "
                        f"failed publishes {p['publish_failed'] or 0:,})")
        else:
            said.append("no event lost and no publish failed at any rate")
        lag = [p for p in pts if p["lag_seconds"] >= 1.0]
        if lag:
            p = lag[0]
            said.append(f"delivery lags the publisher by {p['lag_seconds']:.1f} s at {rate(p['rate'])}")
        server = [p for p in pts if server_full(p)]
        if server:
            said.append(f"the server's core (CPU 0) is full from {rate(server[0]['rate'])}")
        client = [p for p in pts if client_full(p)]
        if client:
            said.append(f"the client's core (CPU 1) is full from {rate(client[0]['rate'])}: from there on the "
                        "figures are the load generator's limit as much as the server's")
        cpu = [p["cpu_us_per_delivery"] for p in pts]
        said.append(f"CPU per delivery {min(cpu):.1f}–{max(cpu):.1f} µs")
        if timed_out:
            said.append(f"the run at {rate(timed_out[0])} did not finish within its time bound (no higher rate run)")
        out.append(f"- **{NAMES.get(k, k)}**: " + "; ".join(said) + ".")
    pts_of = {k: {p["rate"]: p for p in pts if not p.get("timed_out")} for k, pts in s["points"].items()}
    nchan = pts_of.get("nchan", {})
    for k in ("gw-redis", "gw-emb"):
        both = [x for x in s["rates"] if x in pts_of.get(k, {}) and x in nchan]
        if both:
            out.append(f"- **{NAMES[k]} ÷ Nchan + Redis**, CPU per delivery (server + Redis) at the same offered rate: "
                       + ", ".join(f"{ratio(pts_of[k][x]['cpu_us_per_delivery'], nchan[x]['cpu_us_per_delivery'])} at "
                                   f"{x:,}/s" for x in both) + " (where a system fell short, each ran at its own achieved rate).")
    done = [p for pts in s["points"].values() for p in pts if p.get("server_cpu_others") is not None]
    busy = [p for p in done if max(p["server_cpu_others"], p["client_cpu_others"]) >= 0.2]
    if busy:
        worst = max(busy, key=lambda p: max(p["server_cpu_others"], p["client_cpu_others"]))
        out.append(f"- **Neighbours**: other programs took ≥ 20 % of CPU 0 or CPU 1 during {len(busy)} of {len(done)} "
                   f"points (at most {others(worst)}, at {rate(worst['rate'])}): those points measure a shared core, "
                   "and their latency most of all.")
    elif done:
        out.append("- **Neighbours**: other programs took under 20 % of either CPU at every point.")
    return out


def client_full(p):
    """The client's core was full at a sweep point: `sse-load` alone ≥ the saturated
    share, or CPU 1 as a whole (neighbours included) ≥ 95 % busy."""
    return p["client_bound"] or (p.get("client_cpu_busy_all") or 0) >= 0.95


def server_full(p):
    """The server's core (server + Redis, or CPU 0 as a whole) was full at a sweep point."""
    return p["server_bound"] or (p.get("server_cpu_busy_all") or 0) >= 0.95


def others(p):
    """What other programs took of the server's and the client's CPU over a sweep point."""
    if p.get("server_cpu_others") is None:
        return "–"
    out = f"{100 * p['server_cpu_others']:.0f} % / {100 * p['client_cpu_others']:.0f} %"
    if p.get("server_cpu_irq") is not None:
        out += f" (interrupts {100 * p['server_cpu_irq']:.0f} % / {100 * p['client_cpu_irq']:.0f} %)"
    return out


def sweep_section(L, s):
    L.append("## 8. Saturation sweep\n")
    L.append(f"The many-jobs shape — {s['jobs']:,} jobs, one subscriber each, events published over HTTP "
             "(`POST /v1/jobs/{job}/events`, Nchan's `/pub/{channel}`) — at "
             + ", ".join(f"{x:,}" for x in s["rates"]) + f" events/s for {s['seconds']} s each, each system at each "
             "rate in turn, with a fresh server (and Redis) per point; servers and Redis pinned to CPU 0, `sse-load` "
             "(which publishes with 64 workers and reads every stream) to CPU 1. Latency counts from when the pacer "
             "hands an event to its publishing worker (`sse-load --latency-from-dispatch`), so an event queued behind "
             "a slow publish counts its wait. CPU per delivery = server + Redis CPU over the deliver phase ÷ events "
             "delivered; \"server core\" = that CPU ÷ the phase's wall time (server and Redis share CPU 0, so 100 % is "
             "the core full); \"client\" = `sse-load`'s own CPU ÷ wall time; \"others\" = what other programs took of "
             "CPU 0 and of CPU 1 over the point's whole run (the CPU's share spent in processes, from `/proc/stat`, less our "
             "processes'; in brackets, interrupt time — on loopback, much of TCP's receive work, charged to no process — "
             "where the run recorded it apart): the machine is shared, and a point where others took much of a core "
             "measures less than the system's best. Lag = deliver phase − publish time: "
             "how long after the last publish the last event arrived. Lost = events not delivered within 10 s of the "
             f"last publish. A core is marked **full** when our processes on it are ≥ {100 * s['saturated_share']:.0f} % busy "
             "or the CPU as a whole (neighbours included) is ≥ 95 % busy; a point whose client core is full (hollow "
             "marker in the plot) shows the one-core load generator's limit as much as the server's.\n")
    L.append("![sweep](bench/sweep.png)\n")
    L.extend(sweep_findings(s))
    L.append("")
    L.append("| system | offered | published/s | delivered/s | lost | publish failed | p50 | p99 | p99.9 | server CPU/delivery | "
             "Redis | total | server core | client | others on CPU 0 / 1 | lag | |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for rate in s["rates"]:
        for k, pts in s["points"].items():
            p = next((p for p in pts if p["rate"] == rate), None)
            if p is None:
                continue
            if p.get("timed_out"):
                L.append(f"| {NAMES.get(k, k)} | {rate:,} | " + " | ".join(["–"] * 14) + " | timed out |")
                continue
            flags = [x for x, on in (("kept up", p["kept_up"]), ("server core full", server_full(p)),
                                     ("client core full", client_full(p))) if on]
            L.append(f"| {NAMES.get(k, k)} | {rate:,} | {p['achieved_rate']:,.0f} | {p['delivered_rate']:,.0f} | {p['lost']:,} | "
                     f"{p['publish_failed'] or 0:,} | {lat(p['latency_p50_us'])} | {lat(p['latency_p99_us'])} | "
                     f"{lat(p['latency_p999_us'])} | {p['server_cpu_us']:.1f} µs | {p['redis_cpu_us']:.1f} µs | "
                     f"{p['cpu_us_per_delivery']:.1f} µs | {100 * p['server_core_busy']:.0f} % | {100 * p['client_busy']:.0f} % | "
                     f"{others(p)} | "
                     f"{p['lag_seconds']:.2f} s | {', '.join(flags)} |")
    L.append("")
    if s.get("command"):
        L.append("The command of the highest rate for gateway + Redis, as `bench.py` ran it (`$WORK` is its temporary "
                 "directory; the port and PIDs are that run's):\n")
        L.append(f"```sh\n{s['command']}\n```\n")


def side_by_side(L, r):
    """Before and after a change, measured in one run (`bench.py --before-bin`)."""
    b, j = r.get("broadcast", {}), r.get("many_jobs", {})
    if "floor@before" not in b and "gw-redis@before" not in j:
        return
    L.append("## Before and after, side by side in one run\n")
    L.append("`bench.py --before-bin DIR` runs the programs of the code before a change (built from another "
             "checkout into DIR) interleaved with the current ones, round by round, in the same run: broadcast "
             "runs the old floor beside the new ones, many jobs the old gateway and SDK (`sse-load` links the SDK) "
             "with Redis beside the new ones. Figures are medians of the rounds; each round's own ratios are in the "
             "scenario's tables above.\n")
    L.append("| scenario | figure | before | after | after ÷ before |\n| --- | --- | --- | --- | --- |")
    if "floor@before" in b:
        old = b["floor@before"]["cpu_us_per_delivery"]
        for k in ("floor", "floor-c"):
            if k in b:
                new = b[k]["cpu_us_per_delivery"]
                L.append(f"| broadcast | raw-write floor CPU per delivery, {name(k)} | {old:.2f} µs (old `sse-floor`) | "
                         f"{new:.2f} µs | {ratio(new, old)} |")
        fl = floor_of(b)["cpu_us_per_delivery"]
        for k in ("gw-emb", "gw-redis"):
            was = b.get(f"{k}@before")
            if k in b and was:
                # The gateway before and after, both against this run's floor of record,
                # and each round's after ÷ before (the same round, side by side).
                g, w = b[k]["cpu_us_per_delivery"], was["cpu_us_per_delivery"]
                L.append(f"| broadcast | {name(k)} CPU per delivery | {w:.2f} µs | {g:.2f} µs | {ratio(g, w)} |")
                L.append(f"| broadcast | {name(k)} CPU per delivery ÷ the floor | {ratio(w, fl)} | {ratio(g, fl)} | – |")
                per = [ratio(x["cpu_us_per_delivery"], y["cpu_us_per_delivery"]) for x, y in zip(b[k]["rounds"], was["rounds"])]
                L.append(f"| broadcast | {name(k)} after ÷ before, round by round | | | {', '.join(per)} |")
                L.append(f"| broadcast | {name(k)} last subscriber p99 | {ms(was['last_sub_p99_us'])} | "
                         f"{ms(b[k]['last_sub_p99_us'])} | {ratio(b[k]['last_sub_p99_us'], was['last_sub_p99_us'])} |")
            elif k in b:
                g = b[k]["cpu_us_per_delivery"]
                L.append(f"| broadcast | {name(k)} CPU per delivery ÷ the floor | {ratio(g, old)} | "
                         f"{ratio(g, fl)} | – |")
    for k in ("gw-redis", "gw-redis-sdk"):
        was, now = j.get(f"{k}@before"), j.get(k)
        if not (was and now):
            continue
        for figure, key, unit in (("Redis CPU per published event", "redis_cpu_us_per_event", " µs"),
                                  ("Redis reads per event", "redis_reads_per_event", ""),
                                  ("Redis writes per event", "redis_writes_per_event", ""),
                                  ("gateway CPU per delivery", "server_cpu_us", " µs"),
                                  ("gateway + Redis CPU per delivery", "cpu_us_per_delivery", " µs")):
            if was.get(key) is not None and now.get(key) is not None:
                L.append(f"| many jobs, {name(k)} | {figure} | {was[key]:.2f}{unit} | {now[key]:.2f}{unit} | {ratio(now[key], was[key])} |")
        n = j["nchan"]["cpu_us_per_delivery"]
        L.append(f"| many jobs, {name(k)} | gateway + Redis ÷ Nchan + Redis | {ratio(was['cpu_us_per_delivery'], n)} | "
                 f"{ratio(now['cpu_us_per_delivery'], n)} | – |")
        L.append(f"| many jobs, {name(k)} | latency p50 / p99 | {ms(was['latency_p50_us'])} / {ms(was['latency_p99_us'])} | "
                 f"{ms(now['latency_p50_us'])} / {ms(now['latency_p99_us'])} | – |")
    L.append("")


def partial_note(p, m):
    """A sentence on scenarios that come from a separate `--only` run."""
    other = p.get("machine")
    where = ""
    if other and (other["cpu"], other["kernel"]) != (m["cpu"], m["kernel"]):
        where = f", on another machine of the same size: CPU {other['cpu']} × {other['cpus']}, kernel {other['kernel']}"
    why = f"; {p['why']}" if p.get("why") else ""
    quick = " (**quick mode**)" if p.get("quick") else ""
    return (f" Scenarios `{p['only']}` come from a separate run{quick}, started {p['started']} "
            f"({p['seconds'] / 60:.1f} min{why}){where}; compare their figures with each other, not with the other scenarios'.")


def write(stored, label, out):
    r = stored[label]
    m = r["machine"]
    made = plots(r, out) + sweep_plot(r, out)
    L = []
    L.append("# Benchmarks\n")
    L.append("Generated by `make bench` (`loadtest/bench/bench.py`); every figure below comes from one run "
             f"on the machine described here, started {r['started']}, which took {r['seconds'] / 60:.1f} minutes"
             + (" (**quick mode: small counts, not the figures of record**)" if r.get("quick") else "") + "."
             + "".join(partial_note(p, m) for p in r.get("partial_runs", [])) + "\n")
    L.append("## Machine and setup\n")
    L.append(f"- CPU: {m['cpu']} × {m['cpus']}; memory {m['memory_gib']} GiB; kernel {m['kernel']}; "
             f"open files per process (hard): {m['nofile_hard']}")
    L.append(f"- {m['nginx']}, libnginx-mod-nchan {m['nchan']}; {m['redis']}; {m['rustc']}")
    L.append(f"- Servers (gateway, nginx worker, Redis, floor) pinned with `taskset` to CPU {r['pinning']['server_cpu']}, "
             f"the load generator (`sse-load`, which also publishes) to CPU {r['pinning']['client_cpu']}; scale-out and topics are unpinned.")
    L.append("- Gateway: release build, `--heartbeat 15s --job-stream-maxlen 1100 --max-connections-per-user 100000`, "
             "HS256 JWT in the `sse_token` cookie for every client (minted per user by `sse-load`).")
    L.append("- Nchan: `loadtest/bench/nchan.conf.in` — 1 worker process, Redis storage (`nchan_redis_pass`), "
             "EventSource subscriber starting at the newest message, `nchan_message_buffer_length 1100`, "
             "ping every 15 s. **Auth:** nginx cannot verify an HS256 JWT without a per-connect subrequest "
             "(`nchan_authorize_request` to a service of our own) or a module Debian does not ship (njs, auth_jwt), "
             "so Nchan only checks that the cookie is present: it does less work per connect than the gateway.")
    L.append("- Floor: one thread and one `epoll` loop; after its SSE headers a subscriber's socket leaves the `epoll` "
             "set (nothing it does wakes the floor again), and each event is rendered once and sent to every socket "
             "with one `send`; no auth, history, heartbeat, queue or timer. Two programs: `sse-floor` (Rust, std + "
             "libc) and `loadtest/bench/floor.c` (C, compiled by `bench.py` with `cc -O2` when there is a C "
             "compiler). Broadcast runs both; ratios \"vs floor\" are to the cheaper one in that run.")
    L.append("- CPU = utime + stime from `/proc/<pid>/stat` over the measured phase (publish until every subscriber "
             "has every event); RSS = VmRSS. Delivery latency = publisher's `t_us` (µs, set just before the publish "
             "request) → the event parsed in `sse-load`.\n")
    L.append("Reproduce: `make bench` (all), or `python3 loadtest/bench/bench.py --only broadcast`; each `sse-load` "
             "command is printed in the run's log; raw results in `docs/bench/results.json`.\n")
    if made:
        L.append("Plots: " + ", ".join(f"![{p}](bench/{p})" for p in made) + "\n")
    L.append("## Targets\n")
    L.append("| # | target | result |\n| --- | --- | --- |")
    rows = []
    if "idle" in r:
        v = r["idle"]["gw-emb"]["kib_per_conn"]
        rows.append(("1", "gateway RSS per idle connection ≤ 4 KiB", f"{v:.2f} KiB (embedded), {r['idle']['gw-redis']['kib_per_conn']:.2f} KiB (Redis) — {verdict(max(v, r['idle']['gw-redis']['kib_per_conn']) <= 4)}"))
        if "gw-tls" in r["idle"]:
            t = r["idle"]["gw-tls"]["kib_per_conn"]
            rows.append(("1", "(for information) gateway RSS per idle HTTP/1.1-over-TLS stream", f"{t:.2f} KiB, beside {v:.2f} KiB plain: TLS adds {t - v:.2f} KiB"))
        for k, what in (("gw-emb-ka", "a stream after a page on a kept-alive connection"), ("gw-emb-h2c", "an h2c stream"),
                        ("gw-emb-h2c8", "an h2c stream sharing its connection with 7 others")):
            if k in r["idle"]:
                x = r["idle"][k]["kib_per_conn"]
                before = r["idle"].get(k + "@before")
                was = f" (before: {before['kib_per_conn']:.2f} KiB, same run)" if before else ""
                rows.append(("1", f"gateway RSS per idle stream: {what} ≤ 4 KiB (issue 21)", f"{x:.2f} KiB{was}, beside {v:.2f} KiB plain — {verdict(x <= 4)}"))
    if "broadcast" in r:
        b = r["broadcast"]
        fl = floor_of(b)["cpu_us_per_delivery"]
        g = max(b["gw-emb"]["cpu_us_per_delivery"], b["gw-redis"]["cpu_us_per_delivery"])
        rows.append(("2", f"broadcast CPU per delivery ≤ 1.15× the floor ({name(b.get('floor_ref', 'floor'))})", f"{ratio(b['gw-emb']['cpu_us_per_delivery'], fl)} (embedded), {ratio(b['gw-redis']['cpu_us_per_delivery'], fl)} (Redis) — {verdict(g <= 1.15 * fl)}"))
        fp = floor_of(b)["last_sub_p99_us"]
        gp = max(b["gw-emb"]["last_sub_p99_us"] or 0, b["gw-redis"]["last_sub_p99_us"] or 0)
        rows.append(("2", "last subscriber p99 ≤ 1.25× floor", f"{ratio(b['gw-emb']['last_sub_p99_us'], fp)} / {ratio(b['gw-redis']['last_sub_p99_us'], fp)} — {verdict(fp and gp <= 1.25 * fp)}"))
        rows.append(("2", "zero lost", f"lost {b['gw-emb']['lost']} / {b['gw-redis']['lost']} — {verdict(b['gw-emb']['lost'] == 0 and b['gw-redis']['lost'] == 0)}"))
    if "many_jobs" in r:
        j = r["many_jobs"]
        n = j["nchan"]["cpu_us_per_delivery"]
        for k in ("gw-redis", "gw-redis-sdk"):
            rows.append(("3", f"{NAMES[k]} CPU per delivery ≤ 0.5× Nchan + Redis", f"{ratio(j[k]['cpu_us_per_delivery'], n)} — {verdict(j[k]['cpu_us_per_delivery'] <= 0.5 * n)}"))
        for k in ("gw-emb", "gw-redis", "gw-redis-sdk"):
            ok = (j[k]["latency_p50_us"] or 1e9) <= 1000 and (j[k]["latency_p99_us"] or 1e9) <= 3000 and j[k]["lost"] == 0
            rows.append(("3", f"{NAMES[k]}: p50 ≤ 1 ms, p99 ≤ 3 ms, zero lost", f"p50 {ms(j[k]['latency_p50_us'])}, p99 {ms(j[k]['latency_p99_us'])}, lost {j[k]['lost']} — {verdict(ok)}"))
        for k in ("gw-redis", "gw-redis-sdk"):
            before = j.get(f"{k}@before", {}).get("redis_cpu_us_per_event")
            now = j.get(k, {}).get("redis_cpu_us_per_event")
            if before and now:
                rows.append(("3", f"{NAMES[k]}: Redis CPU per published event ≤ 50 % of before (same run)",
                             f"{now:.1f} µs vs {before:.1f} µs = {100 * now / before:.0f} % — {verdict(now <= 0.5 * before)}"))
    if "storm" in r:
        s = r["storm"]
        for k in ("gw-emb", "gw-redis"):
            pc = s[k]["per_core_per_s"] or 0
            ok = pc >= 5000 and (s[k]["at5k_first_byte_p99_us"] or 1e9) <= 10000
            rows.append(("4", f"{NAMES[k]}: ≥ 5,000 conn/s per core, first byte p99 ≤ 10 ms at 5,000/s", f"{pc:.0f}/s per core-second, p99 {ms(s[k]['at5k_first_byte_p99_us'])} — {verdict(ok)}"))
    if "resume" in r:
        for k, v in r["resume"].items():
            rows.append(("5", f"{NAMES[k]}: all {v['clients']} resumes complete", f"{v['completed']} complete, lost {v['lost']}, p99 {ms(v['replay_p99_us'])} — {verdict(v['completed'] == v['clients'] and v['lost'] == 0)}"))
    if "scale_out" in r:
        s = r["scale_out"]
        ok = s["lost"] == 0 and s["clients"] == s["attempted"] and abs(s["redis_messages_per_event"] - s["nodes"]) < 0.01
        rows.append(("6", "scale-out: all reached, pub/sub messages per event = nodes", f"{s['clients']} clients, lost {s['lost']}, {s['redis_messages_per_event']:.2f} messages/event for {s['nodes']} nodes — {verdict(ok)}"))
    if "topics" in r:
        t = r["topics"]
        for i, rd in enumerate(t["rounds"]):
            g = rd["gateway"]
            tag = f"topics round {i + 1}" if len(t["rounds"]) > 1 else "topics"
            rows.append(("7", f"{tag}: connection success > 99.9 %", f"{pct(g['connect_success'])} ({g['held']} of {g['attempted']} held to the end) — {verdict(g['connect_success'] > 0.999)}"))
            p95 = g["first_id_p95_us"]
            rows.append(("7", f"{tag}: time to first event p95 < 1 s", f"{ms(p95)} — {verdict(p95 is not None and p95 < 1_000_000)}"))
            clean = g["lost"] == 0 and g["dups"] == 0 and g["ooo"] == 0 and g["ids_not_increasing"] == 0 and g["bad_ids"] == 0
            rows.append(("7", f"{tag}: zero lost, no duplicate, in order", f"lost {g['lost']}, duplicates {g['dups']}, out of order {g['ooo']} (by id {g['ids_not_increasing']}) — {verdict(clean)}"))
    for row in rows:
        L.append("| " + " | ".join(row) + " |")
    L.append("")

    if "idle" in r:
        L.append("## 1. Idle capacity\n")
        L.append("User streams, one user per connection (distinct topics), opened at 5,000/s from 2 source addresses, "
                 "RSS sampled 1 s after each step. \"HTTPS\": the same gateway serving `--tls-cert`/`--tls-key`, each "
                 "client one HTTP/1.1 stream over TLS (ALPN `http/1.1`, TLS 1.3, P-256 certificate): what a stream costs when "
                 "the gateway terminates TLS itself instead of a load balancer. \"Kept-alive\": each stream is the second request on its "
                 "connection, after a `GET /healthz` (a browser that loaded a page; a proxy reusing an upstream connection). "
                 "\"h2c\": one stream per connection over HTTP/2 with prior knowledge"
                 + ("; \"8 streams per connection\": eight share each (a browser's streams to one host share one HTTP/2 "
                    "connection), figures per stream" if "gw-emb-h2c8" in r["idle"] else "")
                 + ". \"— before\": the build given by --before-bin.\n")
        L.append("| | established | failed | RSS at 0 | RSS at end | per connection | Redis per connection | vs Nchan |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        nn = r["idle"]["nchan"]["kib_per_conn"]
        for k, v in r["idle"].items():
            L.append(f"| {name(k)} | {v['established']} | {v['failed'] or 0} | {f(v['rss_start_kib'])} KiB | {f(v['rss_end_kib'])} KiB | "
                     f"{v['kib_per_conn']:.2f} KiB | {f(v['redis_kib_per_conn'], ' KiB', 2)} | {ratio(v['kib_per_conn'], nn)} |")
        L.append("")
    if "broadcast" in r:
        L.append("## 2. Broadcast\n")
        L.append("One job, 5,000 subscribers, 100 events published over HTTP at 10/s, three interleaved rounds (50,000 deliveries/s: the one-core client keeps up). CPU per delivery = server CPU over "
                 "the publish phase ÷ events delivered. \"Last subscriber\" = per event, the latency of the last "
                 "subscriber to receive it; percentiles over the events.\n")
        L.append("| | delivered | lost | dup | out of order | CPU/delivery | + Redis | vs floor | last subscriber p50 | p99 | vs floor | latency p50 | p99 |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        b = r["broadcast"]
        ref = floor_of(b)
        for k in kinds_of(b):
            v = b[k]
            L.append(f"| {name(k)} | {v['delivered']} | {v['lost']} | {v['dups']} | {v['ooo']} | {v['cpu_us_per_delivery']:.2f} µs | "
                     f"{v['cpu_us_per_delivery_with_redis']:.2f} µs | {ratio(v['cpu_us_per_delivery'], ref['cpu_us_per_delivery'])} | "
                     f"{ms(v['last_sub_p50_us'])} | {ms(v['last_sub_p99_us'])} | {ratio(v['last_sub_p99_us'], ref['last_sub_p99_us'])} | "
                     f"{ms(v['latency_p50_us'])} | {ms(v['latency_p99_us'])} |")
        L.append("")
        rounds = ref.get("rounds")
        if rounds and len(rounds) > 1:
            L.append(f"Figures above are the median of {len(rounds)} interleaved rounds (delivered and losses: summed); "
                     f"\"vs floor\" is to {name(b.get('floor_ref', 'floor'))}, the cheaper floor in this run. "
                     "CPU per delivery ÷ the same round's floor, round by round:\n")
            L.append("| | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |")
            L.append("| --- |" + " --- |" * len(rounds))
            for k in kinds_of(b):
                per = [ratio(x["cpu_us_per_delivery"], f["cpu_us_per_delivery"]) for x, f in zip(b[k]["rounds"], rounds)]
                L.append(f"| {name(k)} | " + " | ".join(per) + " |")
            L.append("")
    if "many_jobs" in r:
        L.append("## 3. Many jobs\n")
        L.append("2,000 jobs with one subscriber each, 2,000 events/s for 10 s (one event per job per second), "
                 "published over HTTP (or the SDK's Redis transport where stated).\n")
        L.append("| | delivered | lost | dup | ooo | server CPU/delivery | Redis CPU/delivery | total | vs Nchan + Redis | latency p50 | p99 | p99.9 |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        j = r["many_jobs"]
        for k in kinds_of(j):
            v = j[k]
            L.append(f"| {name(k)} | {v['delivered']} | {v['lost']} | {v['dups']} | {v['ooo']} | {v['server_cpu_us']:.1f} µs | {v['redis_cpu_us']:.1f} µs | "
                     f"{v['cpu_us_per_delivery']:.1f} µs | {ratio(v['cpu_us_per_delivery'], j['nchan']['cpu_us_per_delivery'])} | "
                     f"{ms(v['latency_p50_us'])} | {ms(v['latency_p99_us'])} | {ms(v['latency_p999_us'])} |")
        L.append("")
        rounds = j["nchan"].get("rounds")
        if rounds and len(rounds) > 1:
            L.append(f"Figures above are the median of {len(rounds)} interleaved rounds (delivered and losses: summed). "
                     "Total CPU per delivery ÷ the same round's Nchan + Redis, round by round:\n")
            L.append("| | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |")
            L.append("| --- |" + " --- |" * len(rounds))
            for k in kinds_of(j):
                per = [ratio(x["cpu_us_per_delivery"], n["cpu_us_per_delivery"]) for x, n in zip(j[k]["rounds"], rounds)]
                L.append(f"| {name(k)} | " + " | ".join(per) + " |")
            L.append("")
        with_redis = [k for k in kinds_of(j) if j[k].get("redis")]
        if with_redis:
            L.append("Redis's own cost per published event, over the deliver phase alone (`bench.py` reads "
                     "`/proc/<redis>/stat`, `INFO commandstats` and `INFO stats` when `sse-load` has finished its ramp "
                     "and again when it is done): CPU, reads and writes (each one system call), and the commands run "
                     "per event — calls × µs per call; `INFO commandstats` counts the commands a script calls, so "
                     "`evalsha`'s µs include theirs. Median of the rounds (commands: the median round's).\n")
            L.append("| | Redis CPU per event | reads per event | writes per event | commands per event (calls × µs) |")
            L.append("| --- | --- | --- | --- | --- |")
            for k in with_redis:
                v = j[k]
                cmds = ", ".join(f"`{c}` {x['calls_per_event']:.2f} × {x['usec_per_call']:.1f}"
                                 for c, x in sorted(v["redis"]["commands"].items(), key=lambda cx: -cx[1]["usec_per_event"]))
                L.append(f"| {name(k)} | {v['redis_cpu_us_per_event']:.1f} µs | {v['redis_reads_per_event']:.2f} | "
                         f"{v['redis_writes_per_event']:.2f} | {cmds} |")
            L.append("")
    if "batch" in r:
        batch_section(L, r["batch"])
    if "storm" in r:
        L.append("## 4. Connect storm\n")
        L.append("Authenticated user streams (1,000 users), each connection closed (RST) right after its first SSE line. "
                 "The floor is not run (it never reads its sockets, so it cannot see them close). Max: 20,000 connections, 64 in flight. Per core: connections ÷ server CPU seconds. "
                 "At 5,000/s: 10,000 connections paced at 5,000/s.\n")
        L.append("| | max conn/s | server CPU s | conn per CPU-second | vs Nchan | Redis CPU s | first byte p99 (max) | at 5,000/s p50 | p99 | failures |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        s = r["storm"]
        for k, v in s.items():
            L.append(f"| {NAMES[k]} | {v['max_per_s']:.0f} | {v['server_cpu_s']:.2f} | {f(v['per_core_per_s'], '', 0)} | "
                     f"{ratio(v['per_core_per_s'], s['nchan']['per_core_per_s'])} | {v['redis_cpu_s']:.2f} | {ms(v['max_first_byte_p99_us'])} | "
                     f"{ms(v['at5k_first_byte_p50_us'])} | {ms(v['at5k_first_byte_p99_us'])} | {v['failed'] or ''} {v['at5k_failed'] or ''} |")
        L.append("")
    if "resume" in r:
        L.append("## 5. Resume\n")
        L.append("1,001 events published to one job; then 1,000 clients connect with `Last-Event-ID` = the first "
                 "event's id and must receive the other 1,000 in order. Replay time = connect start → last event.\n")
        L.append("| | completed | lost | dup | ooo | replay p50 | p99 | max | vs Nchan (p99) | server CPU s | Redis CPU s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        rs = r["resume"]
        for k, v in rs.items():
            L.append(f"| {NAMES[k]} | {v['completed']}/{v['clients']} | {v['lost']} | {v['dups']} | {v['ooo']} | {ms(v['replay_p50_us'])} | "
                     f"{ms(v['replay_p99_us'])} | {ms(v['replay_max_us'])} | {ratio(v['replay_p99_us'], rs['nchan']['replay_p99_us'])} | "
                     f"{v['server_cpu_s']:.2f} | {v['redis_cpu_s']:.2f} |")
        L.append("")
    if "scale_out" in r:
        s = r["scale_out"]
        L.append("## 6. Scale-out on one box\n")
        L.append(f"{s['nodes']} gateway nodes on one Redis, one `sse-load` process per node (own source address), "
                 f"all clients on one user's stream; {s['events']} notifications published through the SDK (Redis) at 0.5/s. "
                 "Unpinned: 5 gateways, Redis and 5 load generators share the machine's 2 CPUs, so latency here is "
                 "CPU contention, not the gateway's.\n")
        L.append(f"- clients established: {s['clients']} of {s['attempted']}; failures {s['failed']}")
        L.append(f"- delivered {s['delivered']} (expected {s['clients'] * s['events']}), lost {s['lost']}; "
                 f"slow-consumer disconnects (gateways): {s.get('slow_consumer_disconnects', '–')}; streams ended by the server: {s.get('ended_by_server', '–')}")
        L.append(f"- Redis pub/sub messages per event (Σ nodes' `sse_gateway_events_received_total` ÷ events): "
                 f"{s['redis_messages_per_event']:.2f}; `PUBSUB NUMSUB` on the user channel: {s['numsub']}")
        L.append(f"- delivery latency p99 per node: {', '.join(ms(x) for x in s['latency_p99_us_per_node'])}")
        L.append(f"- gateway RSS per node after the ramp: {', '.join(f(x, ' KiB') for x in s['gateway_rss_kib'])}\n")
        L.append("Nchan is not run here: one nginx is one node; Nchan's multi-server mode also shares one Redis.\n")
    if "topics" in r:
        topics_section(L, r["topics"])
    if "sweep" in r:
        sweep_section(L, r["sweep"])
    base = stored.get("baseline")
    if base and label != "baseline":
        L.append("## Before and after\n")
        L.append(f"`baseline` is the full run of {base['started']}, when hyper served every stream; the figures "
                 "above are this run, with HTTP/1.1 streams written by the gateway itself (`gateway/src/server/h1/`) "
                 "and the leaner publish script. Both on this machine with the same commands; compare the "
                 "ratios to the floor and to Nchan measured in the same run, since absolute figures drift on a "
                 "shared machine.\n")
        L.append("| scenario | server | figure | baseline | now |\n| --- | --- | --- | --- | --- |")
        def row(scen, k, figure, get):
            if scen in base and scen in r and k in base[scen] and k in r[scen]:
                L.append(f"| {scen.replace('_', ' ')} | {NAMES[k]} | {figure} | {get(base[scen], k)} | {get(r[scen], k)} |")
        for k in ("gw-emb", "gw-redis"):
            row("idle", k, "RSS per idle connection", lambda x, k: f"{x[k]['kib_per_conn']:.2f} KiB")
        for k in ("gw-emb", "gw-redis"):
            row("broadcast", k, "CPU per delivery ÷ floor",
                lambda x, k: ratio(x[k]["cpu_us_per_delivery"], floor_of(x)["cpu_us_per_delivery"]))
            row("broadcast", k, "last subscriber p99 ÷ floor",
                lambda x, k: ratio(x[k]["last_sub_p99_us"], floor_of(x)["last_sub_p99_us"]))
        for k in ("gw-emb", "gw-redis", "gw-redis-sdk"):
            row("many_jobs", k, "CPU per delivery ÷ Nchan + Redis",
                lambda x, k: ratio(x[k]["cpu_us_per_delivery"], x["nchan"]["cpu_us_per_delivery"]))
            row("many_jobs", k, "latency p50 / p99",
                lambda x, k: f"{ms(x[k]['latency_p50_us'])} / {ms(x[k]['latency_p99_us'])}")
        for k in ("gw-emb", "gw-redis"):
            row("storm", k, "connections per CPU-second", lambda x, k: f"{x[k]['per_core_per_s'] or 0:.0f}")
        L.append("")
    side_by_side(L, r)
    notes = os.path.join(os.path.dirname(__file__), "profile-notes.md")
    if os.path.exists(notes):
        L.append(open(notes).read())
    with open(os.path.join(out, "benchmarks.md"), "w") as fh:
        fh.write("\n".join(L) + "\n")


if __name__ == "__main__":
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    out = os.path.join(root, "docs")
    stored = json.load(open(os.path.join(out, "bench", "results.json")))
    write(stored, sys.argv[1] if len(sys.argv) > 1 else "current", out)
