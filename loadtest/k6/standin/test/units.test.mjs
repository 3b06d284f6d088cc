// Unit tests of the stand-in's pure parts, on exact inputs.
import assert from "node:assert/strict";
import test from "node:test";
import { parseGoDuration, parseK6Duration } from "../duration.mjs";
import { Registry, Thresholds, TrendSink, parseMetricName, parseThresholdExpression } from "../metrics.mjs";
import { constantArrivalTimes, rampingArrivalTimes } from "../schedule.mjs";
import { SseLineReader } from "../sse-reader.mjs";

function read(...chunks) {
  const r = new SseLineReader();
  return chunks.flatMap((c) => r.push(Buffer.from(c)));
}

test("sse.go framing: every blank line is an event, the gateway's opening and heartbeats included", () => {
  const items = read("retry: 3000\n\nid: 17-0\nevent: status\ndata: {\"a\":1}\n\n: hb\n\n");
  assert.deepEqual(items, [
    { event: { id: "", comment: "", name: "", data: "" } },
    { event: { id: "17-0", comment: "", name: "status", data: "{\"a\":1}" } },
    { event: { id: "", comment: "hb", name: "", data: "" } },
  ]);
});

test("sse.go framing: data lines join with \\n, fields keep a CR, unknown lines are errors", () => {
  const items = read("data: a\ndata:b\n\n", "id: x\r\ndata: y\r\n\r\n", "junk\n", "event:e\n\n");
  assert.deepEqual(items, [
    { event: { id: "", comment: "", name: "", data: "a\nb" } },
    { event: { id: "x\r", comment: "", name: "", data: "y" } },
    { error: "unknown event: junk\n" },
    { event: { id: "", comment: "", name: "e", data: "" } },
  ]);
});

test("sse.go framing: lines split across chunks; a last line without newline is never dispatched", () => {
  assert.deepEqual(read("ev", "ent: p\nda", "ta: 1\n", "\n", "{\"error\":\"missing_token\"}"), [
    { event: { id: "", comment: "", name: "p", data: "1" } },
  ]);
});

test("durations: Go's grammar for xk6-sse's timeout, k6's for options", () => {
  assert.equal(parseGoDuration("1m30s"), 90000);
  assert.equal(parseGoDuration("250ms"), 250);
  assert.equal(parseGoDuration("1.5h"), 5400000);
  assert.equal(parseGoDuration("0"), 0);
  assert.throws(() => parseGoDuration("30"), /invalid duration|missing unit|invalid/);
  assert.throws(() => parseGoDuration("1d"), /unknown unit/);
  assert.equal(parseK6Duration("1d"), 86400000);
  assert.equal(parseK6Duration(1500), 1500);
  assert.equal(parseK6Duration(undefined, 30000), 30000);
});

test("thresholds: k6's expression grammar", () => {
  assert.deepEqual(parseThresholdExpression("p(95)<1000"), { method: "p", pct: 95, op: "<", value: 1000, key: "p(95)" });
  assert.deepEqual(parseThresholdExpression("rate>=0.999"), { method: "rate", pct: null, op: ">=", value: 0.999, key: "rate" });
  assert.equal(parseThresholdExpression("count === 0").op, "===");
  assert.throws(() => parseThresholdExpression("p95<10"), /malformed/);
  assert.throws(() => parseThresholdExpression("rate~1"), /malformed/);
  assert.deepEqual(parseMetricName("http_req_failed{name:publish,scenario:\"a b\"}"), {
    name: "http_req_failed", tags: { name: "publish", scenario: "a b" },
  });
});

test("trend percentiles interpolate between ranks like k6's TrendSink.P", () => {
  const t = new TrendSink();
  for (const v of [10, 20, 30, 40]) t.add(v);
  assert.equal(t.p(0.5), 25);
  assert.equal(t.p(0.95), 38.5);
  assert.equal(t.p(0), 10);
  assert.equal(new TrendSink().p(0.95), 0);
});

test("thresholds evaluate per type and sub-metric; an empty Rate errors without failing unless samples are required", () => {
  const r = new Registry();
  r.define("ok", "rate");
  r.define("errors", "counter");
  r.define("lat", "trend", true);
  r.define("http_req_failed", "rate");
  const th = new Thresholds(r, {
    ok: ["rate>0.5"],
    errors: ["count<2"],
    lat: [{ threshold: "p(90)<50", abortOnFail: true }],
    "http_req_failed{name:publish}": ["rate==0"],
  });
  r.add("errors", 1, { reason: "http_401" });
  r.add("errors", 1, { reason: "http_401" });
  for (const v of [10, 20, 100]) r.add("lat", v, {});
  r.add("http_req_failed", 1, { name: "other" });
  r.add("http_req_failed", 0, { name: "publish" });
  const results = Object.fromEntries(th.evaluate(1000).map((x) => [x.entry.metricText, x]));
  assert.equal(results.ok.ok, true);
  assert.match(results.ok.error, /no samples/);
  assert.equal(results.errors.ok, false);
  assert.equal(results.errors.value, 2);
  assert.equal(results.lat.ok, false);
  assert.equal(results.lat.value, 84);
  assert.equal(results["http_req_failed{name:publish}"].ok, true);
  assert.equal(th.evaluate(1000, { requireSamples: true }).find((x) => x.entry.metricText === "ok").ok, false);
  r.define("empty_trend", "trend", true);
  const trendOnly = new Thresholds(r, { empty_trend: ["p(95)<1"], errors: ["count>=0"] });
  assert.deepEqual(trendOnly.evaluate(1000).map((x) => x.ok), [true, true]); // p(95) of nothing is 0
  assert.deepEqual(trendOnly.evaluate(1000, { requireSamples: true }).map((x) => x.ok), [false, true]);
  assert.equal(th.evaluate(1000, { ignoreEmpty: true }).some((x) => x.entry.metricText === "ok"), false);
  assert.equal(r.metrics.get("errors").byTag.get("reason").get("http_401").sum, 2);
  assert.throws(() => new Thresholds(r, { ok: ["p(95)<1"] }), /unsupported aggregation method/);
  assert.throws(() => new Thresholds(r, { nope: ["count<1"] }), /no metric name/);
});

test("constant-arrival-rate starts iteration i at i·period from 0 while before the duration", () => {
  assert.deepEqual([...constantArrivalTimes(10, 1000, 500)], [0, 100, 200, 300, 400]);
});

test("ramping-arrival-rate starts iteration i when the area under the rate reaches i", () => {
  const times = [...rampingArrivalTimes(0, 1000, [{ target: 10, durationMs: 1000 }, { target: 10, durationMs: 1000 }])];
  assert.equal(times.length, 15); // 5 during the ramp (triangle), 10 on the plateau
  assert.ok(Math.abs(times[0] - Math.sqrt(2 * 1000 / 0.01)) < 1e-6); // area t²·0.01/2 = 1
  assert.ok(times.every((t, i) => i === 0 || t > times[i - 1]));
  assert.ok(Math.abs(times[14] - 2000) < 1e-6);
});
