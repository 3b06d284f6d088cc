// Steady fan-out: SUBSCRIBERS virtual users each hold one job stream (JOBS jobs, so
// SUBSCRIBERS/JOBS watchers per job) while a publisher posts PUBLISH_RATE events per second
// for DURATION, round-robin over the jobs, starting PUBLISH_AFTER the subscribers. Each
// event carries `seq` (its number within its job) and `t_ms` (its publish time on the k6
// clock, ms resolution): subscribers record publish → receipt latency, and at the end check
// that they got every event of their job with no gap or duplicate, up to the job's last.
// Subscribers close by xk6-sse's `timeout`, DRAIN after the last publish.
//
//   k6 run -e BASE_URL=https://sse.example.test -e JWT_SECRET=... -e SUBSCRIBERS=2000 \
//       -e PUBLISH_RATE=200 -e DURATION=1m loadtest/k6/fanout.js
//
// Environment: SUBSCRIBERS (1000), JOBS (100), PUBLISH_RATE (100), DURATION (60s),
// PUBLISH_AFTER (10s: long enough for every subscriber to connect — one that connects
// later misses the events before it), DRAIN (5s), PUBLISHER_VUS (20), and lib.js's
// BASE_URL, JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, PREFIX, THRESHOLD_*. Keep
// SUBSCRIBERS/JOBS at or under the gateway's --max-connections-per-user (32): each job has
// its own owner, and every watcher of a job streams as that owner.
import exec from "k6/execution";
import http from "k6/http";
import { Counter, Rate, Trend } from "k6/metrics";
import {
  compareIds,
  connectThresholds,
  createJobs,
  envDuration,
  envInt,
  jobUrl,
  logOnce,
  mintToken,
  openJobStream,
  ownerOf,
  publish,
  recordConnection,
  streamHeaders,
  threshold,
} from "./lib.js";

const SUBSCRIBERS = envInt("SUBSCRIBERS", 1000);
const JOBS = envInt("JOBS", 100);
const PUBLISH_RATE = envInt("PUBLISH_RATE", 100);
const DURATION = envDuration("DURATION", "60s");
const PUBLISH_AFTER = envDuration("PUBLISH_AFTER", "10s");
const DRAIN = envDuration("DRAIN", "5s");
const PUBLISHER_VUS = envInt("PUBLISHER_VUS", 20);
// How long each subscriber holds its stream: the `timeout` of its sse.open.
const HOLD_MS = PUBLISH_AFTER.ms + DURATION.ms + DRAIN.ms;

if ((PUBLISH_RATE * DURATION.ms) / 1000 < JOBS) {
  throw new Error(`PUBLISH_RATE × DURATION (${(PUBLISH_RATE * DURATION.ms) / 1000} events) must reach every one of the ${JOBS} JOBS`);
}

const latency = new Trend("sse_delivery_latency", true);
const complete = new Rate("sse_delivery_complete");
const received = new Counter("sse_events_received");
const published = new Counter("sse_events_published");

export const options = {
  scenarios: {
    subscribers: {
      executor: "per-vu-iterations",
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: `${Math.ceil(HOLD_MS / 1000) + 30}s`,
      exec: "subscribe",
    },
    publisher: {
      executor: "constant-arrival-rate",
      rate: PUBLISH_RATE,
      timeUnit: "1s",
      duration: DURATION.text,
      startTime: PUBLISH_AFTER.text,
      preAllocatedVUs: PUBLISHER_VUS,
      maxVUs: PUBLISHER_VUS * 4,
      exec: "publishOne",
    },
  },
  thresholds: {
    // sse_connect_success > 99.9 %, sse_connect_errors < 10, time to `status` p95 < 1 s;
    // here a subscriber whose stream ends before its hold time also counts as failed.
    ...connectThresholds(),
    // Publish → receipt of every progress event, 95th percentile.
    sse_delivery_latency: [threshold("DELIVERY_P95", "p(95)<100")],
    // Subscribers that got every event of their job since they connected, exactly once.
    sse_delivery_complete: [threshold("DELIVERY_COMPLETE", "rate==1")],
    // Publishes that failed (anything but 201).
    "http_req_failed{name:publish}": [threshold("PUBLISH_FAILED", "rate<0.001")],
    // Publishes k6 could not start in time (raise PUBLISHER_VUS).
    "dropped_iterations{scenario:publisher}": [threshold("DROPPED", "count<1")],
  },
};

export function setup() {
  createJobs(JOBS);
}

export function subscribe() {
  const n = exec.scenario.iterationInTest % JOBS;
  const token = mintToken(ownerOf(n));
  const seqs = [];
  let lastId = "";
  const result = openJobStream(n, {
    token: token,
    timeout: `${HOLD_MS}ms`,
    onEvent(event) {
      if (event.id && (!lastId || compareIds(event.id, lastId) > 0)) {
        lastId = event.id;
      }
      if (event.name === "progress") {
        const data = JSON.parse(event.data);
        latency.add(Date.now() - data.t_ms);
        received.add(1);
        seqs.push(data.seq);
      }
    },
  });
  // The `timeout` ends a healthy stream, so one that ended sooner was cut.
  const endedEarly = result.status === 200 && result.elapsedMs < HOLD_MS;
  if (!recordConnection(result, { failure: endedEarly ? "ended_early" : "" })) {
    if (result.status === 200 && result.opened) {
      complete.add(false);
    }
    return;
  }
  // Every event of the job since the first one received, once each, up to the job's
  // last event (its state's lastEventId, read now that publishing is over).
  const state = http.get(jobUrl(n), { headers: streamHeaders(token), tags: { name: "job_state" } });
  const jobLast = state.status === 200 ? state.json("lastEventId") : null;
  const sorted = seqs.slice().sort((a, b) => a - b);
  let contiguous = sorted.length > 0;
  for (let i = 1; contiguous && i < sorted.length; i++) {
    contiguous = sorted[i] === sorted[0] + i;
  }
  const ok = contiguous && lastId === jobLast;
  complete.add(ok);
  if (!ok) {
    logOnce(
      "incomplete",
      `job ${n}: received ${sorted.length} events, seq ${sorted[0]}..${sorted[sorted.length - 1]}, last id ${lastId}, the job's last ${jobLast}`,
    );
  }
}

export function publishOne() {
  const i = exec.scenario.iterationInTest;
  const n = i % JOBS;
  if (publish(n, "progress", { progress: 50, seq: Math.floor(i / JOBS), t_ms: Date.now() }) !== null) {
    published.add(1);
  }
}
