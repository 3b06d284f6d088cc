// Scenario executors (grafana/k6 `lib/executor`), the ones the scripts use and the simple
// ones around them. Shared rules (base_config.go, helpers.go getDurationContexts):
// - a scenario starts `startTime` after the test start (after setup);
// - no iteration starts after its regular duration (`duration`, or `maxDuration` for the
//   iteration-based executors); iterations running then get `gracefulStop` (default 30 s)
//   to finish, after which they are interrupted;
// - an iteration that cannot start counts in `dropped_iterations`.
// Executors: per-vu-iterations, shared-iterations, constant-vus, constant-arrival-rate,
// ramping-arrival-rate. Not implemented: ramping-vus, externally-controlled (the stand-in
// refuses a script that uses them).
import { parseK6Duration } from "./duration.mjs";
import { constantArrivalTimes, rampingArrivalTimes } from "./schedule.mjs";

export const EXECUTORS = [
  "per-vu-iterations", "shared-iterations", "constant-vus", "constant-arrival-rate", "ramping-arrival-rate",
];

function int(v, dflt, what) {
  if (v === undefined || v === null) {
    if (dflt === undefined) throw new Error(`${what} is required`);
    return dflt;
  }
  if (!Number.isInteger(v) || v < 0) throw new Error(`${what} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

// Normalises one scenario's options (durations in ms, k6's defaults), or throws.
export function parseScenario(name, raw) {
  const executor = raw.executor;
  if (!EXECUTORS.includes(executor)) {
    throw new Error(`scenario "${name}": executor "${executor}" is not implemented by the stand-in (it runs ${EXECUTORS.join(", ")})`);
  }
  const sc = {
    name, executor,
    exec: raw.exec || "default",
    startTimeMs: parseK6Duration(raw.startTime, 0),
    gracefulStopMs: parseK6Duration(raw.gracefulStop, 30000),
    env: raw.env || {},
    tags: raw.tags || {},
  };
  const where = `scenario "${name}"`;
  switch (executor) {
    case "per-vu-iterations":
      sc.vus = int(raw.vus, 1, `${where}: vus`);
      sc.iterations = int(raw.iterations, 1, `${where}: iterations`);
      sc.durationMs = parseK6Duration(raw.maxDuration, 600000);
      sc.plannedVUs = sc.vus;
      break;
    case "shared-iterations":
      sc.vus = int(raw.vus, 1, `${where}: vus`);
      sc.iterations = int(raw.iterations, 1, `${where}: iterations`);
      if (sc.iterations < sc.vus) throw new Error(`${where}: the number of iterations (${sc.iterations}) can't be less than the number of VUs (${sc.vus})`);
      sc.durationMs = parseK6Duration(raw.maxDuration, 600000);
      sc.plannedVUs = sc.vus;
      break;
    case "constant-vus":
      sc.vus = int(raw.vus, 1, `${where}: vus`);
      sc.durationMs = parseK6Duration(raw.duration, undefined);
      if (sc.durationMs === undefined) throw new Error(`${where}: duration is required`);
      sc.plannedVUs = sc.vus;
      break;
    case "constant-arrival-rate":
      sc.rate = int(raw.rate, undefined, `${where}: rate`);
      sc.timeUnitMs = parseK6Duration(raw.timeUnit, 1000);
      sc.durationMs = parseK6Duration(raw.duration, undefined);
      if (sc.durationMs === undefined) throw new Error(`${where}: duration is required`);
      sc.plannedVUs = int(raw.preAllocatedVUs, undefined, `${where}: preAllocatedVUs`);
      sc.maxVUs = int(raw.maxVUs, sc.plannedVUs, `${where}: maxVUs`);
      break;
    case "ramping-arrival-rate":
      sc.startRate = int(raw.startRate, 0, `${where}: startRate`);
      sc.timeUnitMs = parseK6Duration(raw.timeUnit, 1000);
      sc.stages = (raw.stages || []).map((s, i) => ({
        target: int(s.target, undefined, `${where}: stages[${i}].target`),
        durationMs: parseK6Duration(s.duration, undefined),
      }));
      if (!sc.stages.length) throw new Error(`${where}: stages are required`);
      sc.durationMs = sc.stages.reduce((a, s) => a + s.durationMs, 0);
      sc.plannedVUs = int(raw.preAllocatedVUs, undefined, `${where}: preAllocatedVUs`);
      sc.maxVUs = int(raw.maxVUs, sc.plannedVUs, `${where}: maxVUs`);
      break;
    default:
      break;
  }
  if (sc.maxVUs !== undefined && sc.maxVUs < sc.plannedVUs) throw new Error(`${where}: maxVUs can't be less than preAllocatedVUs`);
  return sc;
}

// k6's shortcut options → one scenario named "default" (lib/executor/execution_config_shortcuts.go).
export function scenariosFromOptions(options) {
  if (options.scenarios && Object.keys(options.scenarios).length) {
    return Object.entries(options.scenarios).map(([name, raw]) => parseScenario(name, raw));
  }
  if (options.stages) throw new Error("the stages shortcut (ramping-vus) is not implemented by the stand-in");
  if (options.duration) {
    return [parseScenario("default", { executor: "constant-vus", vus: options.vus || 1, duration: options.duration })];
  }
  const iterations = options.iterations || 1;
  return [parseScenario("default", { executor: "shared-iterations", vus: options.vus || 1, iterations, maxDuration: "10m" })];
}

const delay = (ms, signal) => new Promise((resolve) => {
  if (ms <= 0 || signal.stopped) return resolve();
  const wake = () => {
    clearTimeout(timer);
    signal.waiters.delete(wake);
    resolve();
  };
  const timer = setTimeout(wake, ms);
  signal.waiters.add(wake);
});

// Runs one scenario to its end. `engine` provides iterate(vu, sc), interruptBusy(sc),
// spawnVU(), dropped(n, sc) and a `stop` signal (test aborted).
export async function runScenario(engine, sc) {
  const stop = engine.stop;
  await delay(sc.startTimeMs, stop);
  if (stop.stopped) return;
  sc.startedAt = Date.now();
  const regEnd = sc.startedAt + sc.durationMs;
  const hardTimer = setTimeout(() => engine.interruptBusy(sc), sc.durationMs + sc.gracefulStopMs);
  const inTime = () => !stop.stopped && Date.now() < regEnd;
  try {
    switch (sc.executor) {
      case "per-vu-iterations":
        await Promise.all(sc.vus.map(async (vu) => {
          for (let i = 0; i < sc.iterations; i++) {
            if (!inTime()) {
              if (!stop.stopped) engine.dropped(sc.iterations - i, sc);
              return;
            }
            await engine.iterate(vu, sc);
          }
        }));
        break;
      case "shared-iterations": {
        let left = sc.iterations;
        await Promise.all(sc.vus.map(async (vu) => {
          while (left > 0 && inTime()) {
            left--;
            await engine.iterate(vu, sc);
          }
        }));
        if (left > 0 && !stop.stopped) engine.dropped(left, sc);
        break;
      }
      case "constant-vus":
        await Promise.all(sc.vus.map(async (vu) => {
          while (inTime()) await engine.iterate(vu, sc);
        }));
        break;
      case "constant-arrival-rate":
      case "ramping-arrival-rate":
        await runArrivalRate(engine, sc, regEnd);
        break;
      default:
        throw new Error(`executor ${sc.executor}`);
    }
  } finally {
    clearTimeout(hardTimer);
  }
}

async function runArrivalRate(engine, sc, regEnd) {
  const stop = engine.stop;
  const times = sc.executor === "constant-arrival-rate"
    ? constantArrivalTimes(sc.rate, sc.timeUnitMs, sc.durationMs)
    : rampingArrivalTimes(sc.startRate, sc.timeUnitMs, sc.stages);
  const free = [...sc.vus];
  const running = new Set();
  let unplannedLeft = sc.maxVUs - sc.plannedVUs;
  let allocating = false;
  for (const t of times) {
    await delay(sc.startedAt + t - Date.now(), stop);
    if (stop.stopped || Date.now() >= regEnd) break;
    const vu = free.pop();
    if (!vu) {
      engine.dropped(1, sc);
      if (unplannedLeft > 0 && !allocating) {
        allocating = true;
        unplannedLeft--;
        engine.spawnVU(sc).then((v) => {
          allocating = false;
          if (v) {
            sc.vus.push(v);
            free.push(v);
          }
        });
      }
      continue;
    }
    const p = engine.iterate(vu, sc).then(() => {
      running.delete(p);
      free.push(vu);
    });
    running.add(p);
  }
  await Promise.all([...running]);
}
