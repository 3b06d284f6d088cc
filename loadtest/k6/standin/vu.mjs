// Worker entry: one k6 VU. Loads the script as ES modules with `vm.SourceTextModule`, the
// `k6/*` imports linked to the stand-in's implementations (an import map: nothing else is
// importable, as in k6), runs the init context, then obeys the main thread's commands
// synchronously: `setup`, `run` (one iteration of an exported function), `teardown`, `exit`.
//
// Globals as k6 sets them: `__ENV` (the environment and `-e` values), `__VU` (this VU's id;
// 0 for the VU that reads the options and runs setup/teardown), `__ITER` (this VU's
// iteration count, 0-based), `open(path)` (init context only), `console`.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import vm from "node:vm";
import { InterruptError, flushSamples, post, vu, waitFor } from "./bridge.mjs";
import * as k6 from "./modules/k6.mjs";
import * as crypto from "./modules/crypto.mjs";
import * as encoding from "./modules/encoding.mjs";
import execution from "./modules/execution.mjs";
import * as http from "./modules/http.mjs";
import * as metrics from "./modules/metrics.mjs";
import * as sse from "./modules/sse.mjs";
import { workerData } from "node:worker_threads";

const BUILTIN = {
  k6: k6,
  "k6/crypto": crypto,
  "k6/encoding": encoding,
  "k6/execution": { default: execution },
  "k6/http": http,
  "k6/metrics": metrics,
  // xk6-sse exports only a default object (module.go: `Exports{Default: mi.obj}`).
  "k6/x/sse": { default: sse.default },
};

function formatArgs(args) {
  return args.map((a) => (typeof a === "string" ? a : (() => {
    try { return JSON.stringify(a); } catch { return String(a); }
  })())).join(" ");
}

function installGlobals(scriptPath) {
  globalThis.__ENV = { ...workerData.env };
  globalThis.__VU = vu.id;
  globalThis.__ITER = 0;
  globalThis.open = (path, mode) => {
    if (vu.phase !== "init") throw new Error("the \"open()\" function is only available in the init stage");
    const data = readFileSync(resolve(dirname(scriptPath), path));
    return mode === "b" ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data.toString("utf8");
  };
  const log = (level) => (...args) => post({ t: "log", level, text: formatArgs(args) });
  globalThis.console = {
    log: log("info"), info: log("info"), debug: log("debug"), warn: log("warn"), error: log("error"),
  };
}

async function loadScript(scriptPath) {
  const cache = new Map();
  const builtin = new Map();
  const synthetic = (name) => {
    if (!builtin.has(name)) {
      const ns = BUILTIN[name];
      const keys = Object.keys(ns);
      builtin.set(name, new vm.SyntheticModule(keys, function () {
        for (const k of keys) this.setExport(k, ns[k]);
      }, { identifier: name }));
    }
    return builtin.get(name);
  };
  const sourceModule = (url) => {
    if (!cache.has(url)) {
      const text = readFileSync(fileURLToPath(url), "utf8");
      cache.set(url, new vm.SourceTextModule(text, { identifier: url }));
    }
    return cache.get(url);
  };
  const linker = (specifier, referencing) => {
    if (specifier === "k6" || specifier.startsWith("k6/")) {
      if (!BUILTIN[specifier]) throw new Error(`unknown module: ${specifier}`);
      return synthetic(specifier);
    }
    if (specifier.startsWith("./") || specifier.startsWith("../") || specifier.startsWith("/") || specifier.startsWith("file:")) {
      return sourceModule(new URL(specifier, referencing.identifier).href);
    }
    throw new Error(`unknown module: ${specifier} (the stand-in resolves k6/* and local files only)`);
  };
  const main = sourceModule(pathToFileURL(resolve(scriptPath)).href);
  await main.link(linker);
  await main.evaluate();
  return main.namespace;
}

function errorText(e) {
  if (e && e.stack) return String(e.stack);
  return String(e);
}

function runFunction(fn, arg) {
  let error = null;
  let interrupted = false;
  try {
    fn(arg);
  } catch (e) {
    if (e instanceof InterruptError || vu.interrupted) {
      interrupted = true;
    } else {
      error = errorText(e);
    }
  }
  return { error, interrupted: interrupted || vu.interrupted };
}

async function main() {
  const scriptPath = workerData.script;
  installGlobals(scriptPath);
  let ns;
  try {
    ns = await loadScript(scriptPath);
  } catch (e) {
    post({ t: "init-error", error: errorText(e) });
    return;
  }
  vu.phase = "vu";
  const exported = Object.keys(ns).filter((k) => typeof ns[k] === "function");
  let options = null;
  if (vu.id === 0) {
    try {
      options = JSON.parse(JSON.stringify(ns.options === undefined ? {} : ns.options));
    } catch (e) {
      post({ t: "init-error", error: `options are not JSON-serialisable: ${e.message}` });
      return;
    }
  }
  post({ t: "ready", exported, options, metricDefs: vu.metricDefs });

  let data;
  let dataJson;
  for (;;) {
    vu.run = null;
    vu.interrupted = false;
    const cmd = waitFor((m) => ["run", "setup", "teardown", "configure", "exit"].includes(m.t));
    if (cmd.t === "exit") {
      flushSamples();
      process.exit(0);
    }
    if (cmd.t === "configure") {
      vu.options = cmd.options;
      continue;
    }
    vu.run = cmd.run;
    vu.tags = { ...(cmd.run.scenario ? { scenario: cmd.run.scenario.name } : {}) };
    if (cmd.t === "setup" || cmd.t === "teardown") {
      const fn = ns[cmd.t];
      let result = null;
      let outcome = { error: null, interrupted: false };
      if (typeof fn === "function") {
        try {
          const arg = cmd.t === "teardown" && cmd.data !== null ? JSON.parse(cmd.data) : undefined;
          const value = fn(arg);
          result = value === undefined ? null : JSON.stringify(value);
        } catch (e) {
          outcome = { error: errorText(e), interrupted: e instanceof InterruptError || vu.interrupted };
        }
      }
      flushSamples();
      post({ t: "done", runId: cmd.run.runId, result, ...outcome });
      continue;
    }
    const fn = ns[cmd.fn];
    if (dataJson !== cmd.data) {
      dataJson = cmd.data;
      data = dataJson === null ? undefined : JSON.parse(dataJson);
    }
    globalThis.__ITER = vu.iterationInInstance;
    const started = performance.now();
    const outcome = typeof fn === "function"
      ? runFunction(fn, data)
      : { error: `function "${cmd.fn}" is not exported by the script`, interrupted: false };
    if (!outcome.interrupted) {
      vu.tags = { ...(cmd.run.scenario ? { scenario: cmd.run.scenario.name } : {}) };
      post({ t: "samples", samples: [
        ["iteration_duration", performance.now() - started, vu.tags, Date.now()],
        ["iterations", 1, vu.tags, Date.now()],
      ] });
    }
    vu.iterationInInstance++;
    flushSamples();
    post({ t: "done", runId: cmd.run.runId, ...outcome });
  }
}

await main();
