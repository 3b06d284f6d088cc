// `k6/metrics` (grafana/k6 `js/modules/k6/metrics/metrics.go`): custom metrics are declared
// in the init context only (`new Trend(name, isTime)`), and a name may be declared again
// only with the same type; `add(value, tags)` takes a number or a boolean (true → 1,
// false → 0) and refuses anything else; it is a no-op once the VU's context is done.
import { requireVuContext, sample, vu } from "../bridge.mjs";

function declare(name, type, isTime) {
  if (vu.phase !== "init") {
    throw new Error("metrics must be declared in the init context");
  }
  vu.metricDefs.push({ name, type, isTime: !!isTime });
}

class Metric {
  constructor(name, type, isTime) {
    declare(name, type, isTime);
    this.name = name;
  }

  add(value, tags) {
    requireVuContext("adding samples in the init context is not supported");
    let v = value;
    if (typeof v === "boolean") {
      v = v ? 1 : 0;
    }
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new TypeError(`'${value}' is an invalid value for metric '${this.name}', a number or a boolean value is expected`);
    }
    sample(this.name, v, tags);
    return true;
  }
}

export class Counter extends Metric {
  constructor(name) { super(name, "counter", false); }
}
export class Gauge extends Metric {
  constructor(name, isTime) { super(name, "gauge", isTime); }
}
export class Rate extends Metric {
  constructor(name) { super(name, "rate", false); }
}
export class Trend extends Metric {
  constructor(name, isTime) { super(name, "trend", isTime); }
}

export default { Counter, Gauge, Rate, Trend };
