#!/usr/bin/env node
// The k6 stand-in: runs a k6 script, unchanged, in Node against a real server, with the
// semantics of k6 and xk6-sse that the scripts in ../ depend on (each module cites its
// upstream source). It exists because k6 cannot be installed here; against a deployment,
// use real k6 (../../README.md).
//
//   node loadtest/k6/standin/run.mjs [-e KEY=VALUE]... [--summary-json FILE]
//        [--require-samples] script.js
//
// --require-samples: a threshold on a Rate or a Trend that got no sample fails. k6 lets
// it pass (an empty Rate logs a threshold error, an empty Trend's percentiles are 0), which
// would hide a script that never records; an empty Counter counts 0, as in k6.
//
// Lifecycle, as `k6 run`: the init context runs once to read `options` (VU 0), every
// planned VU runs it too (one worker thread per VU), then `setup()` (VU 0), the scenarios,
// `teardown(data)` (VU 0), the end-of-test summary. Exit status as k6's
// (errext/exitcodes): 0, 99 thresholds failed, 104 invalid options, 107 script exception
// in init/setup/teardown, 108 aborted by exec.test.abort().
//
// Only loopback targets are allowed: the stand-in is a test harness, not a load generator
// for remote hosts.
import { writeFileSync } from "node:fs";
import { basename, resolve } from "node:path";
import { MessageChannel, Worker } from "node:worker_threads";
import { formatDuration, parseK6Duration } from "./duration.mjs";
import { runScenario, scenariosFromOptions } from "./executors.mjs";
import { DEFAULT_USER_AGENT, VuIo } from "./io.mjs";
import { Registry, Thresholds } from "./metrics.mjs";

const EXIT = {
  ok: 0, thresholds: 99, setupTimeout: 100, teardownTimeout: 101, invalidConfig: 104, scriptException: 107,
  scriptAborted: 108,
};
const VU_URL = new URL("./vu.mjs", import.meta.url);
const BUILTIN_METRICS = [
  ["checks", "rate", false],
  ["iterations", "counter", false],
  ["iteration_duration", "trend", true],
  ["dropped_iterations", "counter", false],
  ["http_reqs", "counter", false],
  ["http_req_duration", "trend", true],
  ["http_req_failed", "rate", false],
  ["vus", "gauge", false],
  ["vus_max", "gauge", false],
  // xk6-sse's own counter (metrics.go: MetricEventName = "sse_event").
  ["sse_event", "counter", false],
];

function usage(message) {
  if (message) console.error(`k6-standin: ${message}`);
  console.error("usage: run.mjs [-e KEY=VALUE]... [--summary-json FILE] [--require-samples] script.js");
  process.exit(2);
}

function parseArgs(argv) {
  const args = { env: {}, summaryJson: null, requireSamples: false, script: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-e" || a === "--env") {
      const kv = argv[++i];
      const eq = kv ? kv.indexOf("=") : -1;
      if (eq <= 0) usage(`${a} needs KEY=VALUE`);
      args.env[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (a === "--summary-json") {
      args.summaryJson = argv[++i];
    } else if (a === "--require-samples") {
      args.requireSamples = true;
    } else if (a.startsWith("-")) {
      usage(`unknown option ${a}`);
    } else if (!args.script) {
      args.script = a;
    } else {
      usage(`unexpected argument ${a}`);
    }
  }
  if (!args.script) usage("no script");
  return args;
}

function isLoopback(url) {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

class VuHandle {
  constructor(engine, id, options) {
    this.engine = engine;
    this.id = id;
    this.current = null;
    this.dead = false;
    // Per scenario: this VU's iteration count in it (exec.vu.iterationInScenario).
    this.scenarioState = new Map();
    this.flag = new Int32Array(new SharedArrayBuffer(4));
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(VU_URL, {
      workerData: { vuId: id, script: engine.script, env: engine.env, options, port: port2, flag: this.flag.buffer },
      transferList: [port2],
      execArgv: ["--experimental-vm-modules", "--no-warnings"],
      resourceLimits: { maxOldGenerationSizeMb: 128 },
    });
    this.io = new VuIo((m) => this.send(m));
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.port.on("message", (m) => this.onMessage(m));
    this.worker.on("error", (e) => this.fail(e));
    this.worker.on("exit", () => this.fail(new Error(`VU ${id} exited`)));
  }

  send(m) {
    if (this.dead) return;
    this.port.postMessage(m);
    Atomics.add(this.flag, 0, 1);
    Atomics.notify(this.flag, 0);
  }

  fail(e) {
    if (this.dead) return;
    this.dead = true;
    this.io.close();
    this.readyReject(e);
    if (this.current) {
      const c = this.current;
      this.current = null;
      c.resolve({ error: null, interrupted: true });
    }
  }

  onMessage(m) {
    switch (m.t) {
      case "ready":
        this.readyResolve(m);
        break;
      case "init-error":
        this.readyReject(Object.assign(new Error(m.error), { scriptError: true }));
        break;
      case "samples":
        this.engine.ingest(m.samples);
        break;
      case "log":
        this.engine.log(m.level, m.text);
        break;
      case "abort":
        this.engine.abort(m.reason, EXIT.scriptAborted);
        break;
      case "done":
        if (this.current && this.current.runId === m.runId) {
          const c = this.current;
          this.current = null;
          clearTimeout(c.killTimer);
          c.resolve(m);
        }
        break;
      case "http":
      case "sse-open":
        if (!isLoopback(m.url)) {
          this.send(m.t === "http"
            ? { t: "http-res", id: m.id, status: 0, body: null, headers: {}, error: `k6-standin: ${m.url} is not a loopback address`, errorCode: 1000 }
            : { t: "sse-fail", id: m.id, error: `k6-standin: ${m.url} is not a loopback address` });
          break;
        }
        this.io.handle(m);
        break;
      default:
        this.io.handle(m);
    }
  }

  // Sends a run/setup/teardown command; resolves with the VU's `done` message.
  command(m) {
    const runId = ++this.engine.runIds;
    return new Promise((resolve) => {
      if (this.dead) {
        resolve({ error: null, interrupted: true });
        return;
      }
      this.current = { runId, resolve, killTimer: null };
      this.send({ ...m, run: { ...m.run, runId } });
    });
  }

  // Interrupts the command in progress; a VU stuck in JavaScript that never reaches a
  // blocking call is terminated after 5 s.
  interrupt() {
    const c = this.current;
    if (!c || c.interruptSent) return;
    c.interruptSent = true;
    this.send({ t: "interrupt", runId: c.runId });
    c.killTimer = setTimeout(() => {
      this.engine.log("warn", `VU ${this.id} did not stop within 5s of its interrupt; terminating it`);
      this.worker.terminate();
    }, 5000);
  }

  async exit() {
    this.send({ t: "exit" });
    const exited = new Promise((r) => this.worker.once("exit", r));
    const timer = setTimeout(() => this.worker.terminate(), 2000);
    await exited;
    clearTimeout(timer);
    this.dead = true;
    this.io.close();
  }
}

class Engine {
  constructor(args) {
    this.script = resolve(args.script);
    this.env = { ...process.env, ...args.env };
    this.requireSamples = args.requireSamples;
    this.registry = new Registry();
    for (const [name, type, isTime] of BUILTIN_METRICS) this.registry.define(name, type, isTime);
    this.runIds = 0;
    this.vus = [];
    this.nextVuId = 1;
    this.busy = new Set();
    this.stop = { stopped: false, waiters: new Set() };
    this.exitCode = EXIT.ok;
    this.abortReason = null;
    this.checkCounts = new Map();
    this.completed = 0;
    this.interrupted = 0;
    this.errorCounts = new Map();
    this.testStart = 0;
  }

  log(level, text) {
    const secs = this.testStart ? Math.floor((Date.now() - this.testStart) / 1000) : 0;
    const tag = { debug: "DEBU", info: "INFO", warn: "WARN", error: "ERRO" }[level] || "INFO";
    process.stdout.write(`${tag}[${String(secs).padStart(4, "0")}] ${text}  source=console\n`);
  }

  ingest(samples) {
    for (const [name, value, tags] of samples) {
      if (!this.registry.metrics.has(name)) continue;
      this.registry.add(name, value, tags);
      if (name === "checks") {
        const c = this.checkCounts.get(tags.check) || { passes: 0, fails: 0 };
        if (value) c.passes++;
        else c.fails++;
        this.checkCounts.set(tags.check, c);
      }
    }
  }

  abort(reason, code) {
    if (this.stop.stopped) return;
    this.abortReason = reason;
    this.exitCode = code;
    this.stop.stopped = true;
    for (const wake of [...this.stop.waiters]) wake();
    for (const vu of this.busy) vu.interrupt();
  }

  dropped(n, sc) {
    this.registry.add("dropped_iterations", n, { scenario: sc.name });
  }

  async spawnVU(sc) {
    const vu = new VuHandle(this, this.nextVuId++, this.options);
    this.vus.push(vu);
    try {
      await vu.ready;
      this.registry.add("vus_max", this.vus.length, {});
      return vu;
    } catch (e) {
      this.log("error", `initialising an unplanned VU for ${sc.name} failed: ${e.message}`);
      return null;
    }
  }

  interruptBusy(sc) {
    for (const vu of this.busy) if (vu.scenario === sc) vu.interrupt();
  }

  async iterate(vu, sc) {
    if (vu.dead) {
      await new Promise((r) => setTimeout(r, 100)); // its worker died: no busy loop on it
      return;
    }
    const state = vu.scenarioState.get(sc.name) || { iterationInScenario: 0 };
    vu.scenarioState.set(sc.name, state);
    const iterInTest = sc.iterationsStarted++;
    vu.scenario = sc;
    this.busy.add(vu);
    const done = await vu.command({
      t: "run",
      fn: sc.exec,
      data: this.setupData,
      run: {
        scenario: { name: sc.name, executor: sc.executor, startTime: sc.startedAt, durationMs: sc.durationMs },
        iterationInScenario: state.iterationInScenario++,
        scenarioIterInInstance: iterInTest,
        scenarioIterInTest: iterInTest,
        instance: {
          testStart: this.testStart,
          vusActive: this.busy.size,
          vusInitialized: this.vus.length,
          iterationsCompleted: this.completed,
          iterationsInterrupted: this.interrupted,
        },
      },
    });
    this.busy.delete(vu);
    if (done.interrupted) this.interrupted++;
    else this.completed++;
    if (done.error) this.iterationError(done.error, sc);
  }

  iterationError(text, sc) {
    const n = (this.errorCounts.get(text) || 0) + 1;
    this.errorCounts.set(text, n);
    if (n <= 3) {
      const secs = Math.floor((Date.now() - this.testStart) / 1000);
      process.stdout.write(`ERRO[${String(secs).padStart(4, "0")}] ${text}  executor=${sc.executor} scenario=${sc.name} source=stacktrace\n`);
    }
  }

  async run() {
    const started = Date.now();
    // 1. The init context once, for the options (VU 0, which also runs setup and teardown).
    const vu0 = new VuHandle(this, 0, {});
    let ready;
    try {
      ready = await vu0.ready;
    } catch (e) {
      console.error(`k6-standin: the init context failed:\n${e.message}`);
      await vu0.exit();
      return EXIT.scriptException;
    }
    this.options = { userAgent: DEFAULT_USER_AGENT, ...ready.options };
    try {
      for (const d of ready.metricDefs) this.registry.define(d.name, d.type, d.isTime);
      this.thresholds = new Thresholds(this.registry, this.options.thresholds);
      this.scenarios = scenariosFromOptions(this.options);
    } catch (e) {
      console.error(`k6-standin: invalid options: ${e.message}`);
      await vu0.exit();
      return EXIT.invalidConfig;
    }
    for (const sc of this.scenarios) {
      if (!ready.exported.includes(sc.exec)) {
        console.error(`k6-standin: invalid options: scenario "${sc.name}" executes "${sc.exec}", which the script does not export`);
        await vu0.exit();
        return EXIT.invalidConfig;
      }
    }
    vu0.send({ t: "configure", options: this.options });

    // 2. Every planned VU runs the init context (concurrently, one worker thread each).
    for (const sc of this.scenarios) {
      sc.vus = [];
      sc.iterationsStarted = 0;
      for (let i = 0; i < sc.plannedVUs; i++) {
        const vu = new VuHandle(this, this.nextVuId++, this.options);
        sc.vus.push(vu);
        this.vus.push(vu);
      }
    }
    const inits = await Promise.allSettled(this.vus.map((v) => v.ready));
    const failed = inits.find((r) => r.status === "rejected");
    if (failed) {
      console.error(`k6-standin: initialising the VUs failed:\n${failed.reason.message}`);
      await Promise.all([vu0, ...this.vus].map((v) => v.exit()));
      return EXIT.scriptException;
    }
    for (const r of inits) {
      for (const d of r.value.metricDefs) this.registry.define(d.name, d.type, d.isTime);
    }
    const initMs = Date.now() - started;
    this.registry.add("vus_max", this.vus.length, {});

    // 3. setup(), the scenarios, teardown().
    this.testStart = Date.now();
    const setupTimeout = setTimeout(() => {
      this.abort("setup() execution timed out", EXIT.setupTimeout);
      vu0.interrupt();
    }, parseK6Duration(this.options.setupTimeout, 60000));
    const setup = await vu0.command({ t: "setup", run: {} });
    clearTimeout(setupTimeout);
    if (setup.error || this.stop.stopped) {
      if (setup.error) console.error(`k6-standin: setup() failed:\n${setup.error}`);
      await Promise.all([vu0, ...this.vus].map((v) => v.exit()));
      return this.exitCode || EXIT.scriptException;
    }
    this.setupData = setup.result;

    const vusTicker = setInterval(() => this.registry.add("vus", this.busy.size, {}), 1000);
    const hasAbortThresholds = this.thresholds.entries.some((e) => e.abortOnFail);
    const thresholdTicker = hasAbortThresholds ? setInterval(() => this.checkAbortThresholds(), 2000) : null;
    const scenariosStart = Date.now();
    await Promise.all(this.scenarios.map((sc) => runScenario(this, sc)));
    clearInterval(vusTicker);
    if (thresholdTicker) clearInterval(thresholdTicker);
    const scenariosMs = Date.now() - scenariosStart;

    if (this.exitCode !== EXIT.scriptAborted) {
      const teardownTimeout = setTimeout(() => vu0.interrupt(), parseK6Duration(this.options.teardownTimeout, 60000));
      const teardown = await vu0.command({ t: "teardown", data: this.setupData, run: {} });
      clearTimeout(teardownTimeout);
      if (teardown.error) {
        console.error(`k6-standin: teardown() failed:\n${teardown.error}`);
        if (this.exitCode === EXIT.ok) this.exitCode = EXIT.scriptException;
      }
    }
    await Promise.all([vu0, ...this.vus].map((v) => v.exit()));

    // 4. Thresholds over everything, and the summary.
    const testMs = Date.now() - this.testStart;
    const results = this.thresholds.evaluate(testMs, { requireSamples: this.requireSamples });
    const failedThresholds = results.filter((r) => !r.ok);
    if (failedThresholds.length && (this.exitCode === EXIT.ok || this.exitCode === EXIT.thresholds)) {
      this.exitCode = EXIT.thresholds;
    }
    this.summary = { results, testMs, initMs, scenariosMs };
    return this.exitCode;
  }

  checkAbortThresholds() {
    const elapsed = Date.now() - this.testStart;
    const results = this.thresholds.evaluate(elapsed, { ignoreEmpty: true });
    const breached = results.filter((r) => !r.ok && r.entry.abortOnFail
      && (r.entry.delayAbortEval === undefined || parseK6Duration(r.entry.delayAbortEval, 0) < elapsed));
    if (breached.length) {
      const names = [...new Set(breached.map((r) => r.entry.metricText))].sort().join(", ");
      this.log("error", `thresholds on metrics '${names}' were breached; at least one has abortOnFail enabled, stopping test prematurely`);
      this.abort(`thresholds on metrics '${names}' were breached`, EXIT.thresholds);
    }
  }
}

// ---- summary ----------------------------------------------------------------------------

function fmtValue(metric, v) {
  if (v === null || v === undefined) return "n/a";
  if (metric.isTime) return formatDuration(v);
  if (metric.type === "rate") return `${(v * 100).toFixed(2)}%`;
  return Number.isInteger(v) ? String(v) : v.toFixed(4).replace(/\.?0+$/, "");
}

function metricLine(metric, testMs) {
  const s = metric.sink;
  switch (metric.type) {
    case "counter": {
      const v = s.values(testMs);
      return `${v.count} ${v.rate.toFixed(2)}/s`;
    }
    case "gauge":
      return `${s.value} min=${s.min} max=${s.max}`;
    case "rate":
      return `${s.total ? ((s.trues / s.total) * 100).toFixed(2) : "0.00"}% ${s.trues} out of ${s.total}`;
    case "trend": {
      const v = s.values(testMs, [90, 95]);
      const f = (x) => fmtValue(metric, x);
      return `avg=${f(v.avg)} min=${f(v.min)} med=${f(v.med)} max=${f(v.max)} p(90)=${f(v["p(90)"])} p(95)=${f(v["p(95)"])} count=${s.vals.length}`;
    }
    default:
      return "";
  }
}

function printSummary(engine, code, scriptName) {
  const { results, testMs } = engine.summary || { results: [], testMs: 0 };
  const out = [];
  out.push("");
  out.push(`  k6 stand-in summary: ${scriptName}`);
  if (results.length) {
    out.push("");
    out.push("  THRESHOLDS");
    let last = null;
    for (const r of results) {
      if (r.entry.metricText !== last) {
        last = r.entry.metricText;
        out.push(`    ${last}`);
      }
      const mark = r.ok ? "✓" : "✗";
      const target = r.entry.target;
      const detail = r.error ? r.error : `${r.entry.parsed.key}=${fmtValue(target, r.value)}`;
      out.push(`    ${mark} '${r.entry.source}' ${detail}${r.entry.abortOnFail ? " (abortOnFail)" : ""}`);
    }
  }
  if (engine.checkCounts.size) {
    out.push("");
    out.push("  CHECKS");
    for (const [name, c] of engine.checkCounts) {
      out.push(`    ${c.fails ? "✗" : "✓"} ${name}: ${c.passes} passed, ${c.fails} failed`);
    }
  }
  out.push("");
  out.push("  METRICS");
  const names = [...engine.registry.metrics.keys()].sort();
  for (const name of names) {
    const m = engine.registry.metrics.get(name);
    if (m.sink.isEmpty()) continue;
    out.push(`    ${`${name}${".".repeat(Math.max(2, 34 - name.length))}`}: ${metricLine(m, testMs)}`);
    for (const [key, values] of m.byTag) {
      for (const [value, sink] of values) {
        const label = `{ ${key}:${value} }`;
        const line = metricLine({ ...m, sink }, testMs);
        out.push(`      ${label}${".".repeat(Math.max(2, 32 - label.length))}: ${line}`);
      }
    }
  }
  if (engine.errorCounts.size) {
    out.push("");
    out.push("  ITERATION ERRORS");
    for (const [text, n] of engine.errorCounts) out.push(`    ${n}× ${text.split("\n")[0]}`);
  }
  out.push("");
  out.push(`  iterations: ${engine.completed} complete, ${engine.interrupted} interrupted; VUs: ${engine.vus.length} (init ${formatDuration(engine.summary?.initMs || 0)}); test: ${formatDuration(testMs)}`);
  if (engine.abortReason) out.push(`  aborted: ${engine.abortReason}`);
  const failed = results.filter((r) => !r.ok);
  const verdict = code === 0 ? "PASS" : `FAIL (exit ${code})`;
  out.push(`k6-standin ${scriptName}: thresholds ${results.length - failed.length} passed, ${failed.length} failed — ${verdict}`);
  process.stdout.write(`${out.join("\n")}\n`);
}

function summaryJson(engine, code, scriptName) {
  const { results, testMs } = engine.summary || { results: [], testMs: 0 };
  const metrics = {};
  for (const [name, m] of engine.registry.metrics) {
    if (m.sink.isEmpty()) continue;
    const entry = { type: m.type, values: m.sink.values(testMs, m.type === "trend" ? [90, 95, 99] : []) };
    if (m.type === "rate") Object.assign(entry.values, { passes: m.sink.trues, fails: m.sink.total - m.sink.trues });
    if (m.byTag.size) {
      entry.byTag = {};
      for (const [k, values] of m.byTag) {
        entry.byTag[k] = Object.fromEntries([...values].map(([v, sink]) => [v, sink.values(testMs)]));
      }
    }
    metrics[name] = entry;
  }
  return {
    script: scriptName,
    exitCode: code,
    aborted: engine.abortReason,
    iterations: { complete: engine.completed, interrupted: engine.interrupted },
    thresholds: results.map((r) => ({
      metric: r.entry.metricText, threshold: r.entry.source, ok: r.ok, value: r.value, error: r.error || null,
    })),
    checks: Object.fromEntries(engine.checkCounts),
    metrics,
  };
}

const args = parseArgs(process.argv.slice(2));
const engine = new Engine(args);
const scriptName = basename(args.script);
let code;
try {
  code = await engine.run();
} catch (e) {
  console.error(`k6-standin: ${e.stack || e}`);
  code = 103;
}
printSummary(engine, code, scriptName);
if (args.summaryJson) writeFileSync(args.summaryJson, `${JSON.stringify(summaryJson(engine, code, scriptName), null, 2)}\n`);
process.exit(code);
