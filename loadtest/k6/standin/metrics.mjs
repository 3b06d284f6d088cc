// Metric sinks and thresholds with k6's semantics (grafana/k6 `metrics/sink.go`,
// `metrics/thresholds.go`, `metrics/thresholds_parser.go`, `metrics/engine/engine.go`).
//
// - Counter: `count` is the sum of the added values, `rate` the sum per second of test time.
// - Gauge: `value` is the last value added.
// - Rate: `rate` = non-zero samples / samples. With no sample at all, current k6 leaves
//   `rate` out of the threshold sinks ("avoid division by zero", thresholds.go Run), so the
//   threshold errors ("no metric supporting the rate aggregation method found"), the error
//   is logged and the threshold is *not* counted as breached (engine.go
//   evaluateThresholds: `continue`). Older k6 (v0.38–v0.4x) computed 0/0 = NaN there, which
//   fails every comparison. The scripts here never rely on either: each thresholded Rate
//   gets a sample on every path that can fail. `--require-samples` makes the stand-in fail
//   a Rate or Trend threshold without samples instead, to catch a script that leaves one
//   empty.
// - Trend: `min`, `max`, `avg`, `med`, `p(N)`; a percentile sorts the values and
//   interpolates linearly between the two nearest ranks (`TrendSink.P`: i = pct·(n−1)),
//   one value gives that value, none gives 0 (so a Trend threshold passes on no data:
//   guard it with a Rate or Counter threshold).
// - Thresholds: `aggregation operator number` with operators `<= < >= > === == !=` (the
//   first one found in that order splits the expression); a threshold is an expression
//   string or `{threshold, abortOnFail, delayAbortEval}`; `metric{tag:value,…}` thresholds
//   a sub-metric of the samples carrying those tags.
// - During the run k6 evaluates thresholds every 2 s skipping empty sinks, and stops the
//   test when a failed one has `abortOnFail` and the run is past its `delayAbortEval`; at
//   the end it evaluates them all, empty sinks included.

export const METRIC_TYPES = ["counter", "gauge", "rate", "trend"];

const METHODS_BY_TYPE = {
  counter: ["count", "rate"],
  gauge: ["value"],
  rate: ["rate"],
  trend: ["avg", "min", "med", "max", "p"],
};

const OPERATORS = ["<=", "<", ">=", ">", "===", "==", "!="];

export function parseThresholdExpression(source) {
  for (const op of OPERATORS) {
    const at = source.indexOf(op);
    if (at < 0) {
      continue;
    }
    const lhs = source.slice(0, at).trim();
    const rhs = source.slice(at + op.length).trim();
    let method = lhs;
    let pct = null;
    if (!["value", "count", "rate", "avg", "min", "med", "max"].includes(lhs)) {
      const m = /^p\((.*)\)$/.exec(lhs);
      if (!m || !/^\d+(\.\d+)?$/.test(m[1].trim())) {
        throw new Error(`failed parsing threshold expression "${source}": malformed aggregation method "${lhs}"`);
      }
      method = "p";
      pct = parseFloat(m[1]);
    }
    if (!/^-?\d+(\.\d+)?$/.test(rhs)) {
      throw new Error(`failed parsing threshold expression "${source}": right hand side "${rhs}" is not a number`);
    }
    return { method, pct, op, value: parseFloat(rhs), key: method === "p" ? `p(${pct})` : method };
  }
  throw new Error(`failed parsing threshold expression "${source}": malformed threshold expression`);
}

function compare(lhs, op, rhs) {
  switch (op) {
    case ">": return lhs > rhs;
    case ">=": return lhs >= rhs;
    case "<": return lhs < rhs;
    case "<=": return lhs <= rhs;
    case "==":
    case "===": return lhs === rhs;
    case "!=": return lhs !== rhs;
    default: throw new Error(`invalid operator ${op}`);
  }
}

class CounterSink {
  constructor() { this.sum = 0; this.n = 0; }
  add(v) { this.sum += v; this.n++; }
  isEmpty() { return this.n === 0; }
  values(durationMs) { return { count: this.sum, rate: this.sum / (durationMs / 1000) }; }
}

class GaugeSink {
  constructor() { this.value = 0; this.min = 0; this.max = 0; this.n = 0; }
  add(v) {
    this.value = v;
    if (this.n === 0 || v < this.min) this.min = v;
    if (this.n === 0 || v > this.max) this.max = v;
    this.n++;
  }
  isEmpty() { return this.n === 0; }
  values() { return { value: this.value }; }
}

class RateSink {
  constructor() { this.trues = 0; this.total = 0; }
  add(v) { this.total++; if (v !== 0) this.trues++; }
  isEmpty() { return this.total === 0; }
  values() { return this.total > 0 ? { rate: this.trues / this.total } : {}; }
}

export class TrendSink {
  constructor() { this.vals = []; this.sorted = true; this.sum = 0; }
  add(v) { this.vals.push(v); this.sorted = false; this.sum += v; }
  isEmpty() { return this.vals.length === 0; }
  p(pct) {
    const n = this.vals.length;
    if (n === 0) return 0;
    if (!this.sorted) { this.vals.sort((a, b) => a - b); this.sorted = true; }
    if (n === 1) return this.vals[0];
    const i = pct * (n - 1);
    const lo = this.vals[Math.floor(i)];
    const hi = this.vals[Math.ceil(i)];
    return lo + (hi - lo) * (i - Math.floor(i));
  }
  values(_durationMs, pcts = [90, 95]) {
    const n = this.vals.length;
    const out = {
      avg: n ? this.sum / n : 0,
      min: n ? this.p(0) : 0,
      med: this.p(0.5),
      max: n ? this.p(1) : 0,
    };
    for (const p of pcts) out[`p(${p})`] = this.p(p / 100);
    return out;
  }
}

function newSink(type) {
  switch (type) {
    case "counter": return new CounterSink();
    case "gauge": return new GaugeSink();
    case "rate": return new RateSink();
    case "trend": return new TrendSink();
    default: throw new Error(`unknown metric type ${type}`);
  }
}

// `name{k:v,k2:"v 2"}` → { name, tags }.
export function parseMetricName(text) {
  const brace = text.indexOf("{");
  if (brace < 0) return { name: text.trim(), tags: null };
  if (!text.endsWith("}")) throw new Error(`missing ending bracket in "${text}", sub-metric format needs to be 'metric{key:value}'`);
  const tags = {};
  for (const pair of text.slice(brace + 1, -1).split(",")) {
    if (!pair.trim()) continue;
    const colon = pair.indexOf(":");
    if (colon < 0) throw new Error(`sub-metric tag "${pair}" in "${text}" is not key:value`);
    const key = pair.slice(0, colon).trim();
    const value = pair.slice(colon + 1).trim().replace(/^["'](.*)["']$/, "$1");
    tags[key] = value;
  }
  return { name: text.slice(0, brace).trim(), tags };
}

// Tags the summary does not break metrics down by (k6's system tags).
const SYSTEM_TAGS = new Set([
  "scenario", "group", "url", "name", "method", "status", "expected_response", "check",
  "error_code", "proto", "subproto", "tls_version",
]);
const MAX_TAG_VALUES = 50;

export class Registry {
  constructor() {
    this.metrics = new Map();
  }

  define(name, type, isTime = false) {
    if (!/^[a-zA-Z_][a-zA-Z0-9_]{0,127}$/.test(name)) {
      throw new Error(`invalid metric name "${name}": it must match [a-zA-Z_][a-zA-Z0-9_]{0,127}`);
    }
    if (!METRIC_TYPES.includes(type)) throw new Error(`unknown metric type ${type}`);
    const old = this.metrics.get(name);
    if (old) {
      if (old.type !== type || old.isTime !== !!isTime) {
        throw new Error(`metric "${name}" already registered as a ${old.type}${old.isTime ? " (time)" : ""}, not a ${type}${isTime ? " (time)" : ""}`);
      }
      return old;
    }
    const metric = { name, type, isTime: !!isTime, sink: newSink(type), subs: [], byTag: new Map() };
    this.metrics.set(name, metric);
    return metric;
  }

  add(name, value, tags) {
    const metric = this.metrics.get(name);
    if (!metric) throw new Error(`sample for unknown metric ${name}`);
    metric.sink.add(value);
    for (const sub of metric.subs) {
      if (Object.entries(sub.tags).every(([k, v]) => tags && tags[k] === v)) sub.sink.add(value);
    }
    if (tags && (metric.type === "counter" || metric.type === "rate")) {
      for (const [k, v] of Object.entries(tags)) {
        if (SYSTEM_TAGS.has(k)) continue;
        let values = metric.byTag.get(k);
        if (!values) metric.byTag.set(k, (values = new Map()));
        let sink = values.get(v);
        if (!sink) {
          if (values.size >= MAX_TAG_VALUES) continue;
          values.set(v, (sink = newSink(metric.type)));
        }
        sink.add(value);
      }
    }
  }
}

// Thresholds of a script's options, validated against the registry (k6 refuses, with exit
// code 104, a threshold on an unknown metric or with a method its type does not have).
export class Thresholds {
  constructor(registry, optionThresholds) {
    this.entries = [];
    for (const [metricText, list] of Object.entries(optionThresholds || {})) {
      const { name, tags } = parseMetricName(metricText);
      const metric = registry.metrics.get(name);
      if (!metric) throw new Error(`invalid threshold defined on ${metricText}; reason: no metric name "${name}" found`);
      let target = metric;
      if (tags) {
        target = { name: metricText, type: metric.type, isTime: metric.isTime, sink: newSink(metric.type), tags };
        metric.subs.push(target);
      }
      for (const item of Array.isArray(list) ? list : [list]) {
        const config = typeof item === "string" ? { threshold: item } : item;
        const parsed = parseThresholdExpression(config.threshold);
        if (!METHODS_BY_TYPE[metric.type].includes(parsed.method)) {
          throw new Error(`invalid threshold "${config.threshold}" applied on metric ${metricText}: unsupported aggregation method ${parsed.method} on metric of type ${metric.type}; supported: ${METHODS_BY_TYPE[metric.type].join(", ")}`);
        }
        this.entries.push({
          metricText, target, source: config.threshold, parsed,
          abortOnFail: !!config.abortOnFail, delayAbortEval: config.delayAbortEval,
        });
      }
    }
  }

  // Evaluates every threshold; `ignoreEmpty` skips metrics without samples (the periodic
  // evaluation). Returns [{entry, ok, value, error}].
  evaluate(durationMs, { ignoreEmpty = false, requireSamples = false } = {}) {
    const results = [];
    for (const entry of this.entries) {
      const sink = entry.target.sink;
      if (ignoreEmpty && sink.isEmpty()) continue;
      const pcts = entry.target.type === "trend" && entry.parsed.method === "p" ? [entry.parsed.pct] : [];
      const values = sink.values(durationMs, pcts);
      const value = values[entry.parsed.key];
      if (requireSamples && sink.isEmpty() && (entry.target.type === "rate" || entry.target.type === "trend")) {
        results.push({ entry, ok: false, value: null, error: "no samples (required by --require-samples)" });
        continue;
      }
      if (value === undefined) {
        results.push({
          entry, ok: !requireSamples, value: null,
          error: `no metric supporting the ${entry.parsed.method} aggregation method found (no samples)`,
        });
        continue;
      }
      results.push({ entry, ok: compare(value, entry.parsed.op, entry.parsed.value), value });
    }
    return results;
  }
}
