// Steady fan-out with latency: SUBSCRIBERS virtual users hold job streams while one
// publisher VU publishes PUBLISH_RATE events/s round-robin over JOBS jobs, each carrying
// `t_ms` (its publish time); subscribers record publish → receipt latency.
// (k6's clock has millisecond resolution; sse-load measures in µs.)
//
//   k6 run -e BASE_URL=... -e JWT_SECRET=... -e SUBSCRIBERS=2000 loadtest/k6/fanout.js
import http from "k6/http";
import sse from "k6/x/sse";
import { check } from "k6";
import { Counter, Rate, Trend } from "k6/metrics";
import { JOBS, createJobs, jobStreamUrl, mintToken, ownerOf, publish, streamHeaders } from "./lib.js";

const SUBSCRIBERS = parseInt(__ENV.SUBSCRIBERS || "1000", 10);
const DURATION = __ENV.DURATION || "60s";
const DURATION_MS = parseInt(DURATION, 10) * 1000;
const latency = new Trend("sse_delivery_latency", true);
const firstEvent = new Trend("sse_time_to_first_event", true);
const connected = new Rate("sse_connect_success");
const received = new Counter("sse_events_received");
const published = new Counter("sse_events_published");

export const options = {
  scenarios: {
    subscribers: {
      executor: "per-vu-iterations",
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: `${parseInt(DURATION, 10) + 30}s`,
      exec: "subscribe",
    },
    publisher: {
      executor: "constant-arrival-rate",
      rate: parseInt(__ENV.PUBLISH_RATE || "100", 10),
      timeUnit: "1s",
      duration: DURATION,
      startTime: __ENV.PUBLISH_AFTER || "10s",
      preAllocatedVUs: 20,
      exec: "publishOne",
    },
  },
  thresholds: {
    sse_connect_success: ["rate>0.99"],
    sse_time_to_first_event: ["p(99)<500"],
    sse_delivery_latency: ["p(50)<10", "p(99)<50"],
  },
};

export function setup() {
  createJobs(http, JOBS);
}

export function subscribe() {
  const n = (__VU - 1) % JOBS;
  const started = Date.now();
  let first = true;
  const response = sse.open(jobStreamUrl(n), { headers: streamHeaders(mintToken(ownerOf(n))) }, (client) => {
    client.on("event", (event) => {
      if (first) {
        first = false;
        firstEvent.add(Date.now() - started);
        connected.add(true);
        return;
      }
      if (Date.now() - started > DURATION_MS + 15000) {
        client.close();
      }
      if (event.name === "progress") {
        const data = JSON.parse(event.data);
        if (typeof data.t_ms === "number") {
          latency.add(Date.now() - data.t_ms);
        }
        received.add(1);
      }
    });
    client.on("error", (e) => {
      if (first) {
        connected.add(false);
      }
      console.error(`stream error: ${e.error()}`);
      client.close();
    });
  });
  check(response, { "status is 200": (r) => r && r.status === 200 });
}

export function publishOne() {
  const n = Math.floor(Math.random() * JOBS);
  const id = publish(http, n, "progress", { progress: 50, t_ms: Date.now() });
  check(id, { "published": (v) => v !== null });
  published.add(1);
}
