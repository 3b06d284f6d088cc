// The VU side of the stand-in: one VU per worker thread, running the script's JavaScript
// synchronously, as k6 runs each VU on its own goroutine. A k6 call that blocks the VU
// (http.post, sse.open, sleep) posts a request to the main thread, which does the I/O, and
// waits on an Atomics word for the answer; the answer is taken off the port with
// receiveMessageOnPort, so the VU's event loop never has to turn.
//
// Interruption: when a scenario's gracefulStop runs out (or the test is aborted), k6
// cancels the VU's context and interrupts its JavaScript runtime, so the iteration stops
// where it is and samples pushed after that are dropped (`metrics.PushIfNotDone`). Here the
// main thread sends `interrupt`; every blocking call then throws `InterruptError`, and no
// sample is recorded until the next iteration starts.
import { receiveMessageOnPort, workerData } from "node:worker_threads";

const port = workerData.port;
const flag = new Int32Array(workerData.flag);
const pending = [];
let samples = [];
let nextId = 1;

export const vu = {
  id: workerData.vuId,
  idInTest: workerData.vuId,
  // "init" while the script's top level runs (k6's init context), then "vu".
  phase: "init",
  options: workerData.options || {},
  env: workerData.env,
  // The run in progress: { runId, scenario, iterationInScenario, scenarioIterInInstance,
  // scenarioIterInTest, instance }.
  run: null,
  iterationInInstance: 0,
  interrupted: false,
  tags: {},
  metricDefs: [],
};

export class InterruptError extends Error {
  constructor(reason = "context canceled") {
    super(reason);
    this.name = "InterruptError";
  }
}

export function post(message) {
  port.postMessage(message);
}

export function newId() {
  return nextId++;
}

// Records a metric sample, unless the VU's context is done (k6 drops those).
export function sample(name, value, tags) {
  if (vu.interrupted) {
    return;
  }
  samples.push([name, value, tags ? { ...vu.tags, ...tags } : vu.tags, Date.now()]);
  if (samples.length >= 256) {
    flushSamples();
  }
}

export function flushSamples() {
  if (samples.length) {
    post({ t: "samples", samples });
    samples = [];
  }
}

// Waits for a message from the main thread matching `pred` (messages for other calls are
// kept for them), at most `timeoutMs`. An `interrupt` for the current run ends every wait:
// it is returned to the caller, which unwinds with InterruptError.
export function waitFor(pred, timeoutMs = Infinity) {
  flushSamples();
  if (vu.interrupted) {
    return { t: "interrupt" }; // the context is done: nothing blocks any more
  }
  for (let i = 0; i < pending.length; i++) {
    if (pred(pending[i])) {
      return pending.splice(i, 1)[0];
    }
  }
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const seen = Atomics.load(flag, 0);
    let received;
    while ((received = receiveMessageOnPort(port))) {
      const message = received.message;
      if (message.t === "interrupt") {
        if (vu.run && message.runId === vu.run.runId) {
          vu.interrupted = true;
          return message;
        }
        continue; // a stale interrupt for a run that already ended
      }
      if (pred(message)) {
        return message;
      }
      pending.push(message);
    }
    const left = deadline - performance.now();
    if (left <= 0) {
      return null;
    }
    Atomics.wait(flag, 0, seen, left === Infinity ? undefined : left);
  }
}

export function throwIfInterrupted() {
  if (vu.interrupted) {
    throw new InterruptError();
  }
}

// Sends a request and waits for the reply carrying the same id.
export function call(message) {
  throwIfInterrupted();
  const id = newId();
  post({ ...message, id });
  const reply = waitFor((m) => m.id === id);
  if (reply.t === "interrupt") {
    post({ t: "cancel", id });
    throw new InterruptError();
  }
  return reply;
}

export function requireVuContext(what) {
  if (vu.phase === "init") {
    throw new Error(what);
  }
}
