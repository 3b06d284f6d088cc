// `k6/execution` (grafana/k6 `js/modules/k6/execution/execution.go`): `vu`, `scenario`,
// `instance` and `test` are property getters read at each access; `vu` and `scenario`
// throw in the init context. `scenario.iterationInTest` is the scenario-wide number of the
// current iteration (0-based, given out as iterations start), `vu.iterationInScenario` the
// VU's own count in the scenario, `vu.iterationInInstance` (= __ITER) its count in the run.
// `instance.*` counters are the main thread's values when the iteration was dispatched.
// `test.abort(reason)` stops the whole test (exit code 108).
import { InterruptError, post, vu } from "../bridge.mjs";

function vuContext(what) {
  if (vu.phase === "init" || !vu.run) {
    throw new Error(`getting ${what} information in the init context is not supported`);
  }
  return vu.run;
}

const exec = {};
Object.defineProperty(exec, "vu", {
  enumerable: true,
  get() {
    const run = vuContext("VU");
    return {
      idInInstance: vu.id,
      idInTest: vu.idInTest,
      iterationInInstance: vu.iterationInInstance,
      iterationInScenario: run.iterationInScenario,
      tags: vu.tags,
    };
  },
});
Object.defineProperty(exec, "scenario", {
  enumerable: true,
  get() {
    const run = vuContext("scenario");
    if (!run.scenario) {
      throw new Error("getting scenario information outside of the VU context is not supported");
    }
    return {
      name: run.scenario.name,
      executor: run.scenario.executor,
      startTime: run.scenario.startTime,
      progress: run.scenario.durationMs
        ? Math.min(1, (Date.now() - run.scenario.startTime) / run.scenario.durationMs)
        : 0,
      iterationInInstance: run.scenarioIterInInstance,
      iterationInTest: run.scenarioIterInTest,
    };
  },
});
Object.defineProperty(exec, "instance", {
  enumerable: true,
  get() {
    const info = (vu.run && vu.run.instance) || {};
    return {
      currentTestRunDuration: info.testStart ? Date.now() - info.testStart : 0,
      iterationsCompleted: info.iterationsCompleted || 0,
      iterationsInterrupted: info.iterationsInterrupted || 0,
      vusActive: info.vusActive || 0,
      vusInitialized: info.vusInitialized || 0,
    };
  },
});
Object.defineProperty(exec, "test", {
  enumerable: true,
  get() {
    return {
      options: vu.options,
      abort(reason) {
        const text = reason === undefined ? "test aborted" : `test aborted: ${reason}`;
        post({ t: "abort", reason: text });
        vu.interrupted = true;
        throw new InterruptError(text);
      },
    };
  },
});

export default exec;
