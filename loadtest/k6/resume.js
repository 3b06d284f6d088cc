// Resume: what EventSource does after a dropped connection, done by hand (xk6-sse never
// reconnects). Each iteration takes its own job and:
// 1. opens the job stream and, from the `open` handler (the response head only comes once
//    the gateway's subscription is live), publishes EVENTS_BEFORE events, reads them live,
//    notes the last id and closes;
// 2. publishes EVENTS_MISSED events while disconnected;
// 3. reopens with `Last-Event-ID`, expects exactly the missed events replayed from history
//    (and no `status` snapshot: that would be a resync), then publishes one more and
//    expects it live: the replay → live hand-over.
// The resume is exact when the `seq` values read after reconnecting are precisely the
// missed ones followed by the live one: no gap, no duplicate, in order.
//
//   k6 run -e BASE_URL=https://sse.example.test -e JWT_SECRET=... -e VUS=100 \
//       loadtest/k6/resume.js
//
// Environment: VUS (100), ITERATIONS (1 per VU), EVENTS_BEFORE (5), EVENTS_MISSED (50;
// keep it under the gateway's --job-stream-maxlen, 1000), READ_TIMEOUT (30s per stream),
// and lib.js's BASE_URL, JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, PREFIX, THRESHOLD_*.
import exec from "k6/execution";
import { Rate, Trend } from "k6/metrics";
import {
  connectThresholds,
  createJobs,
  envDuration,
  envInt,
  logOnce,
  mintToken,
  openJobStream,
  ownerOf,
  publish,
  recordConnection,
  threshold,
} from "./lib.js";

const VUS = envInt("VUS", 100);
const ITERATIONS = envInt("ITERATIONS", 1);
const BEFORE = envInt("EVENTS_BEFORE", 5);
const MISSED = envInt("EVENTS_MISSED", 50);
const READ_TIMEOUT = envDuration("READ_TIMEOUT", "30s");
if (BEFORE < 1 || MISSED < 1) {
  throw new Error("EVENTS_BEFORE and EVENTS_MISSED must be at least 1");
}

const exact = new Rate("sse_resume_exact");
const replayTime = new Trend("sse_resume_replay_time", true);

export const options = {
  scenarios: {
    resume: { executor: "per-vu-iterations", vus: VUS, iterations: ITERATIONS, maxDuration: "5m" },
  },
  thresholds: {
    // sse_connect_success > 99.9 %, sse_connect_errors < 10, time to `status` p95 < 1 s
    // (for the fresh stream of step 1; a resumed stream has no snapshot).
    ...connectThresholds(),
    // Resumes that continued exactly where the client left off: all of them.
    sse_resume_exact: [threshold("RESUME_EXACT", "rate==1")],
    // From reopening to the last missed event replayed.
    sse_resume_replay_time: [threshold("REPLAY_P95", "p(95)<1000")],
  },
};

export function setup() {
  createJobs(VUS * ITERATIONS);
}

function progressSeq(event) {
  return JSON.parse(event.data).seq;
}

export default function () {
  const n = exec.scenario.iterationInTest;
  const token = mintToken(ownerOf(n));
  let seq = 0;
  let publishFailed = false;
  const publishNext = (stream) => {
    if (publish(n, "progress", { progress: 1, seq: seq }) === null) {
      publishFailed = true;
      if (stream) {
        stream.close();
      }
    }
    seq++;
  };

  // 1. Live.
  const live = [];
  let lastId = "";
  const first = openJobStream(n, {
    token: token,
    timeout: READ_TIMEOUT.text,
    onOpen(stream) {
      while (seq < BEFORE && !publishFailed) {
        publishNext(stream);
      }
    },
    onEvent(event, stream) {
      if (event.name === "progress") {
        live.push(progressSeq(event));
        lastId = event.id;
        if (live.length >= BEFORE) {
          stream.close();
        }
      }
    },
  });
  const liveOk = recordConnection(first) && !publishFailed && live.join() === [...Array(BEFORE).keys()].join();
  if (!liveOk) {
    exact.add(false);
    logOnce("live_read", `job ${n}: the live read before the disconnect got seq [${live}]${publishFailed ? " (a publish failed)" : ""}`);
    return;
  }

  // 2. Missed while disconnected.
  while (seq < BEFORE + MISSED && !publishFailed) {
    publishNext(null);
  }

  // 3. Resumed: the missed events from history, then one more live.
  const resumed = [];
  let snapshot = false;
  const second = openJobStream(n, {
    token: token,
    lastEventId: lastId,
    timeout: READ_TIMEOUT.text,
    onEvent(event, stream) {
      if (event.name === "status") {
        // A resync: the gap is no longer in the job's history, so no replay will come.
        snapshot = true;
        stream.close();
        return;
      }
      if (event.name !== "progress") {
        return;
      }
      resumed.push(progressSeq(event));
      if (resumed.length === MISSED) {
        replayTime.add(Date.now() - stream.started);
        publishNext(stream);
      }
      if (resumed.length >= MISSED + 1) {
        stream.close();
      }
    },
  });
  const expected = [];
  for (let s = BEFORE; s <= BEFORE + MISSED; s++) {
    expected.push(s);
  }
  const ok = recordConnection(second, { needOpening: false }) && !publishFailed && !snapshot && resumed.join() === expected.join();
  exact.add(ok);
  if (!ok) {
    logOnce(
      "resume",
      `job ${n}: after Last-Event-ID ${lastId} got seq [${resumed}]${snapshot ? " and a resync snapshot" : ""}, expected ${BEFORE}..${BEFORE + MISSED}`,
    );
  }
}
