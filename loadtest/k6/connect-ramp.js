// Connect ramp: virtual users open job streams at a rising rate; each stream is closed
// as soon as its first event (the gateway's `status` snapshot) arrives.
// Thresholds: success rate and time to first event.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e JWT_SECRET=... loadtest/k6/connect-ramp.js
import http from "k6/http";
import sse from "k6/x/sse";
import { check } from "k6";
import { Rate, Trend } from "k6/metrics";
import { JOBS, createJobs, jobStreamUrl, mintToken, ownerOf, streamHeaders } from "./lib.js";

const connected = new Rate("sse_connect_success");
const firstEvent = new Trend("sse_time_to_first_event", true);

export const options = {
  scenarios: {
    ramp: {
      executor: "ramping-arrival-rate",
      startRate: 10,
      timeUnit: "1s",
      preAllocatedVUs: 200,
      maxVUs: parseInt(__ENV.MAX_VUS || "5000", 10),
      stages: [
        { target: parseInt(__ENV.PEAK_RATE || "500", 10), duration: __ENV.RAMP || "30s" },
        { target: parseInt(__ENV.PEAK_RATE || "500", 10), duration: __ENV.PLATEAU || "30s" },
      ],
    },
  },
  thresholds: {
    sse_connect_success: ["rate>0.99"],
    sse_time_to_first_event: ["p(95)<100", "p(99)<250"],
  },
};

export function setup() {
  createJobs(http, JOBS);
}

export default function () {
  const n = (__VU * 7919 + __ITER) % JOBS;
  const token = mintToken(ownerOf(n));
  const started = Date.now();
  let gotFirst = false;
  const response = sse.open(jobStreamUrl(n), { headers: streamHeaders(token) }, (client) => {
    client.on("event", (event) => {
      if (!gotFirst) {
        gotFirst = true;
        firstEvent.add(Date.now() - started);
        connected.add(true);
        client.close();
      }
    });
    client.on("error", (e) => {
      if (!gotFirst) {
        connected.add(false);
      }
      console.error(`stream error: ${e.error()}`);
      client.close();
    });
  });
  check(response, { "status is 200": (r) => r && r.status === 200 });
}
