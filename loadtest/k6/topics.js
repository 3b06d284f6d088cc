// Broadcast: SUBSCRIBERS virtual users each hold one topic stream (TOPICS topics, so
// SUBSCRIBERS/TOPICS watchers per topic) while a publisher posts PUBLISH_RATE events per
// second for DURATION, round-robin over the topics, starting PUBLISH_AFTER the subscribers.
// A fresh topic stream has no snapshot: it opens at the topic's live edge with an id-only
// block, which xk6-sse hands to the script as an event with an empty name and that id; the
// time to it is the stream's "time to first event". Each published event carries `seq`
// (its number within its topic in this run) and `t_ms` (publish time on the k6 clock):
// subscribers record publish → receipt latency, check that every id is above the one
// before (the opening's first), and at the end that they got every event of their topic
// since they opened, once each, up to the topic's last. Subscribers close by xk6-sse's
// `timeout`, DRAIN after the last publish.
//
//   k6 run -e BASE_URL=https://sse.example.test -e JWT_SECRET=... -e SUBSCRIBERS=2000 \
//       -e TOPICS=2 -e PUBLISH_RATE=10 -e DURATION=1m loadtest/k6/topics.js
//
// Environment: SUBSCRIBERS (1000), TOPICS (1), PUBLISH_RATE (10), DURATION (60s),
// PUBLISH_AFTER (10s: long enough for every subscriber to connect), DRAIN (5s),
// PUBLISHER_VUS (5), AUTH (claim), and lib.js's BASE_URL, JWT_SECRET, JWT_ISSUER,
// JWT_AUDIENCE, PREFIX, THRESHOLD_*. AUTH says how subscribers are let in:
// - `claim`: each token lists its topic in a `topics` claim (any gateway);
// - `token`: a plain token, for topics the gateway makes public (`--public-topic`);
// - `none`: no token at all, for `--anonymous-topic` topics. The gateway then counts
//   streams per client address (`--max-anonymous-connections-per-ip`, 8 by default): one
//   k6 machine needs that limit raised to SUBSCRIBERS, or gets 429s.
// Each subscriber is its own user (`<PREFIX>-u<n>`), so --max-connections-per-user does
// not apply.
import exec from "k6/execution";
import http from "k6/http";
import { Counter, Rate, Trend } from "k6/metrics";
import {
  BASE_URL,
  compareIds,
  connectThresholds,
  envDuration,
  envInt,
  logOnce,
  mintToken,
  openStream,
  PREFIX,
  publishTopic,
  recordConnection,
  streamHeaders,
  threshold,
  topicName,
  topicStreamUrl,
  topicUrl,
} from "./lib.js";

const SUBSCRIBERS = envInt("SUBSCRIBERS", 1000);
const TOPICS = envInt("TOPICS", 1);
const PUBLISH_RATE = envInt("PUBLISH_RATE", 10);
const DURATION = envDuration("DURATION", "60s");
const PUBLISH_AFTER = envDuration("PUBLISH_AFTER", "10s");
const DRAIN = envDuration("DRAIN", "5s");
const PUBLISHER_VUS = envInt("PUBLISHER_VUS", 5);
const AUTH = __ENV.AUTH || "claim";
// How long each subscriber holds its stream: the `timeout` of its sse.open.
const HOLD_MS = PUBLISH_AFTER.ms + DURATION.ms + DRAIN.ms;

if (!["claim", "token", "none"].includes(AUTH)) {
  throw new Error(`AUTH=${AUTH}: expected claim, token or none`);
}
if (TOPICS < 1) {
  throw new Error("TOPICS must be at least 1");
}
if ((PUBLISH_RATE * DURATION.ms) / 1000 < TOPICS) {
  throw new Error(`PUBLISH_RATE × DURATION (${(PUBLISH_RATE * DURATION.ms) / 1000} events) must reach every one of the ${TOPICS} TOPICS`);
}

// From calling sse.open to the stream's opening: the id-only block of a fresh topic stream.
const timeToFirstEvent = new Trend("sse_time_to_first_event", true);
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
    // sse_connect_success > 99.9 %, sse_connect_errors < 10, and time to first event p95
    // < 1 s: the usual bars for an SSE load test. A subscriber counts as failed when its
    // stream did not open (no id-only block) or ended before its hold time.
    ...connectThresholds({ firstMetric: "sse_time_to_first_event", firstEnv: "FIRST_EVENT_P95" }),
    // Publish → receipt of every event, 95th percentile. One event goes to every watcher
    // of its topic at once, so this grows with SUBSCRIBERS/TOPICS per gateway node.
    sse_delivery_latency: [threshold("DELIVERY_P95", "p(95)<1000")],
    // Subscribers that got every event of their topic since they opened, exactly once.
    sse_delivery_complete: [threshold("DELIVERY_COMPLETE", "rate==1")],
    // Publishes that failed (anything but 201).
    "http_req_failed{name:publish}": [threshold("PUBLISH_FAILED", "rate<0.001")],
    // Publishes k6 could not start in time (raise PUBLISHER_VUS).
    "dropped_iterations{scenario:publisher}": [threshold("DROPPED", "count<1")],
  },
};

// The token subscriber `i` of topic `n` streams with (null: none, AUTH=none).
function subscriberToken(i, n) {
  if (AUTH === "none") {
    return null;
  }
  return mintToken(`${PREFIX}-u${i}`, AUTH === "claim" ? { topics: [topicName(n)] } : {});
}

// Each topic's latest id before this run publishes: a subscriber whose stream opened there
// must get this run's events from the first (`seq` 0). k6 hands setup's return value to
// every scenario's exec function (js/runner.go, ActiveVU.RunOnce: runFn(…, u.setupData)).
export function setup() {
  const before = [];
  const token = AUTH === "none" ? null : mintToken(`${PREFIX}-setup`, AUTH === "claim" ? { topics: [`${PREFIX}-topic-*`] } : {});
  for (let n = 0; n < TOPICS; n++) {
    const res = http.get(topicUrl(n), { headers: streamHeaders(token), tags: { name: "topic_state" } });
    if (res.status !== 200) {
      throw new Error(`reading ${topicName(n)} at ${BASE_URL} failed: ${res.status} ${res.error || res.body} (AUTH=${AUTH})`);
    }
    before.push(res.json("lastEventId"));
  }
  return { before: before };
}

export function subscribe(data) {
  const i = exec.scenario.iterationInTest;
  const n = i % TOPICS;
  const token = subscriberToken(i, n);
  const seqs = [];
  let lastId = "";
  let idsRise = true;
  const result = openStream(topicStreamUrl(n), {
    kind: "topic",
    token: token,
    timeout: `${HOLD_MS}ms`,
    // The id-only block of a fresh stream: the first event xk6-sse hands over with an id.
    isOpening: (event) => event.id !== "",
    openingTrend: timeToFirstEvent,
    onEvent(event, stream) {
      // Every id is above the one before, starting from the opening's: a repeated or a
      // lower id is a duplicate or a reordering, whatever the payload says.
      const before = lastId || stream.openingId;
      if (!event.id || (before && compareIds(event.id, before) <= 0)) {
        idsRise = false;
      }
      if (event.id) {
        lastId = event.id;
      }
      if (event.name === "update") {
        const payload = JSON.parse(event.data);
        latency.add(Date.now() - payload.t_ms);
        received.add(1);
        seqs.push(payload.seq);
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
  // Every event of the topic since the stream opened, once each, up to the topic's last
  // event (read now that publishing is over). Publishers run concurrently, so `seq`
  // order may differ from id order: the seqs are compared as a set.
  const state = http.get(topicUrl(n), { headers: streamHeaders(token), tags: { name: "topic_state" } });
  const topicLast = state.status === 200 ? state.json("lastEventId") : null;
  const sorted = seqs.slice().sort((a, b) => a - b);
  let contiguous = sorted.length > 0;
  for (let k = 1; contiguous && k < sorted.length; k++) {
    contiguous = sorted[k] === sorted[0] + k;
  }
  // Opened before this run's first publish: nothing may be missing at the start either.
  const fromStart = result.openingId === data.before[n];
  const ok = idsRise && contiguous && (!fromStart || sorted[0] === 0) && lastId === topicLast;
  complete.add(ok);
  if (!ok) {
    logOnce(
      "incomplete",
      `${topicName(n)}: opened at ${result.openingId}${fromStart ? " (before publishing)" : ""}, received ${sorted.length} events, ` +
        `seq ${sorted[0]}..${sorted[sorted.length - 1]}, ids ${idsRise ? "rising" : "NOT rising"}, last id ${lastId}, the topic's last ${topicLast}`,
    );
  }
}

export function publishOne() {
  const i = exec.scenario.iterationInTest;
  const n = i % TOPICS;
  if (publishTopic(n, "update", { seq: Math.floor(i / TOPICS), t_ms: Date.now() }) !== null) {
    published.add(1);
  }
}
