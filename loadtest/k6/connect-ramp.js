// Connect ramp: stream opens arrive at a rate rising from START_RATE to PEAK_RATE per
// second over RAMP, then holding for PLATEAU. Each opens a job stream the way a browser's
// EventSource does (token cookie) and closes it as soon as the job's `status` snapshot
// arrives. Measures how reliably and how fast the gateway accepts connections.
//
//   k6 run -e BASE_URL=https://sse.example.test -e JWT_SECRET=... -e PEAK_RATE=500 \
//       loadtest/k6/connect-ramp.js
//
// Environment: PEAK_RATE (500), START_RATE (10), RAMP (30s), PLATEAU (30s), JOBS (100),
// PRE_VUS (200) and MAX_VUS (2000) VUs for the arrivals, OPEN_TIMEOUT (10s, per stream),
// CREATE_JOBS (1; 0 when the jobs already exist, e.g. from an earlier run with the same
// PREFIX), and lib.js's BASE_URL, JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, PREFIX, THRESHOLD_*.
import exec from "k6/execution";
import {
  connectThresholds,
  createJobs,
  envDuration,
  envInt,
  mintToken,
  openJobStream,
  ownerOf,
  recordConnection,
  threshold,
} from "./lib.js";

const JOBS = envInt("JOBS", 100);
const PEAK_RATE = envInt("PEAK_RATE", 500);
const RAMP = envDuration("RAMP", "30s");
const PLATEAU = envDuration("PLATEAU", "30s");
const OPEN_TIMEOUT = envDuration("OPEN_TIMEOUT", "10s");
const CREATE_JOBS = envInt("CREATE_JOBS", 1);

export const options = {
  scenarios: {
    ramp: {
      executor: "ramping-arrival-rate",
      startRate: envInt("START_RATE", 10),
      timeUnit: "1s",
      preAllocatedVUs: envInt("PRE_VUS", 200),
      maxVUs: envInt("MAX_VUS", 2000),
      stages: [
        { target: PEAK_RATE, duration: RAMP.text },
        { target: PEAK_RATE, duration: PLATEAU.text },
      ],
    },
  },
  thresholds: {
    // sse_connect_success > 99.9 %, sse_connect_errors < 10, time to `status` p95 < 1 s.
    ...connectThresholds(),
    // Arrivals k6 could not start for want of a free VU: raise MAX_VUS rather than measure
    // a lower rate than asked for.
    dropped_iterations: [threshold("DROPPED", "count<1")],
  },
};

export function setup() {
  if (CREATE_JOBS) {
    createJobs(JOBS);
  }
}

export default function () {
  const n = exec.scenario.iterationInTest % JOBS;
  const result = openJobStream(n, {
    token: mintToken(ownerOf(n)),
    timeout: OPEN_TIMEOUT.text,
    onEvent(event, stream) {
      if (event.name === "status") {
        stream.close();
      }
    },
  });
  recordConnection(result);
}
