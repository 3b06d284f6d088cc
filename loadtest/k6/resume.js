// Resume: each VU opens a job stream, reads a few events and notes the last id, closes,
// waits while more events are published (xk6-sse does not reconnect by itself), then
// reopens with Last-Event-ID and checks continuity: the first `seq` after resuming is
// exactly one more than the last seen before, with no gap or duplicate after it.
//
//   k6 run -e BASE_URL=... -e JWT_SECRET=... -e VUS=100 loadtest/k6/resume.js
import http from "k6/http";
import sse from "k6/x/sse";
import { check, sleep } from "k6";
import { Rate, Trend } from "k6/metrics";
import { createJobs, jobStreamUrl, mintToken, ownerOf, publish, streamHeaders } from "./lib.js";

const VUS = parseInt(__ENV.VUS || "100", 10);
const BEFORE = parseInt(__ENV.EVENTS_BEFORE || "5", 10);
const MISSED = parseInt(__ENV.EVENTS_MISSED || "50", 10);
const continuity = new Rate("sse_resume_continuous");
const firstEvent = new Trend("sse_time_to_first_event", true);
const replay = new Trend("sse_resume_replay_time", true);

export const options = {
  scenarios: {
    resume: { executor: "per-vu-iterations", vus: VUS, iterations: 1, maxDuration: "5m" },
  },
  thresholds: {
    sse_resume_continuous: ["rate==1"],
    sse_time_to_first_event: ["p(99)<500"],
  },
};

export function setup() {
  createJobs(http, VUS);
}

// Reads events with a `seq` from one stream until `until(seqs)` holds; returns
// { seqs, lastId, status }.
function read(n, token, lastEventId, until) {
  const seqs = [];
  let lastId = lastEventId;
  const started = Date.now();
  let first = true;
  const response = sse.open(jobStreamUrl(n), { headers: streamHeaders(token, lastEventId) }, (client) => {
    client.on("event", (event) => {
      if (first) {
        first = false;
        firstEvent.add(Date.now() - started);
      }
      if (event.id) {
        lastId = event.id;
      }
      if (event.name === "progress") {
        seqs.push(JSON.parse(event.data).seq);
        if (until(seqs)) {
          client.close();
        }
      }
    });
    client.on("error", (e) => {
      console.error(`stream error: ${e.error()}`);
      client.close();
    });
  });
  return { seqs: seqs, lastId: lastId, status: response ? response.status : 0, took: Date.now() - started };
}

export default function () {
  const n = __VU - 1;
  const token = mintToken(ownerOf(n));
  let seq = 0;
  // A publisher in the same VU: events before the first read arrive live.
  const live = read(n, token, null, (seqs) => {
    if (seq < BEFORE) {
      publish(http, n, "progress", { progress: 1, seq: seq++ });
    }
    return seqs.length >= BEFORE;
  });
  for (let i = 0; i < MISSED; i++) {
    publish(http, n, "progress", { progress: 2, seq: seq++ });
  }
  sleep(0.1);
  const lastSeen = live.seqs[live.seqs.length - 1];
  const resumed = read(n, token, live.lastId, (seqs) => seqs.length >= seq - 1 - lastSeen);
  replay.add(resumed.took);
  let ok = resumed.status === 200 && resumed.seqs.length === seq - 1 - lastSeen;
  for (let i = 0; ok && i < resumed.seqs.length; i++) {
    ok = resumed.seqs[i] === lastSeen + 1 + i;
  }
  continuity.add(ok);
  check(resumed, { "resumed without gap or duplicate": () => ok });
}
