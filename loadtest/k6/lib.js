// Shared by the xk6-sse scenarios: configuration from the environment, HS256 tokens minted
// in k6, the gateway's URLs, opening a job or topic stream the way xk6-sse allows it, and
// the connection metrics every script records the same way.
//
// How xk6-sse behaves, which everything below is written around (phymbert/xk6-sse sse.go):
// - `sse.open` blocks until the stream ends and returns the response; there is no
//   automatic reconnection.
// - A connection error (refused, timeout before the response head) fires `error` before
//   the setup function has registered any handler, so no handler sees it; `open` returns
//   `status: 0` and `error`, or throws (the `throw` option, and the newest xk6-sse).
// - A 401/429/503 answer has a JSON body without a trailing newline: EOF closes the stream
//   without any event or error. Only the returned status tells a refused connection.
// - Every blank line is an event: the gateway's `retry:` opening and its `: hb`
//   heartbeats arrive as events with an empty name; the job stream's first real event is
//   the `status` snapshot. A fresh topic stream has no snapshot: it opens with an id-only
//   block (`id: <the topic's latest id>` and a blank line), which arrives as an event with
//   an empty name and that id (sse.go's readEvents dispatches every blank line with the
//   fields seen since the last one, and resets them after).
// - The `timeout` param bounds the whole stream: when it expires, `error` fires and the
//   handler must close.
import crypto from "k6/crypto";
import encoding from "k6/encoding";
import http from "k6/http";
import { Counter, Rate, Trend } from "k6/metrics";
import sse from "k6/x/sse";

export const BASE_URL = (__ENV.BASE_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
export const JWT_SECRET = __ENV.JWT_SECRET || "dev-only-secret-change-me-0123456789";
// Set these when the gateway runs with --jwt-issuer / --jwt-audience: it refuses tokens
// without the matching claims.
export const JWT_ISSUER = __ENV.JWT_ISSUER || "";
export const JWT_AUDIENCE = __ENV.JWT_AUDIENCE || "";
export const COOKIE_NAME = __ENV.COOKIE_NAME || "sse_token";
// Job, user and topic names start with it; give each run its own to keep runs apart.
export const PREFIX = __ENV.PREFIX || "k6";

// ---- configuration ------------------------------------------------------------------------

export function envInt(name, fallback) {
  const text = __ENV[name];
  if (text === undefined || text === "") {
    return fallback;
  }
  if (!/^\d+$/.test(text)) {
    throw new Error(`${name}=${text}: expected a whole number`);
  }
  return parseInt(text, 10);
}

const UNIT_MS = { ms: 1, s: 1000, m: 60000, h: 3600000 };

// A duration with its unit (`90s`, `1m30s`, `500ms`, `2h`): `text` for k6 options and
// xk6-sse's `timeout`, `ms` for arithmetic. A bare number is refused rather than guessed.
export function envDuration(name, fallback) {
  const text = __ENV[name] || fallback;
  const parts = text.match(/\d+(?:\.\d+)?(?:ms|s|m|h)/g);
  if (!parts || parts.join("") !== text) {
    throw new Error(`${name}=${text}: expected a duration with units, such as 90s, 1m30s or 500ms`);
  }
  let ms = 0;
  for (const part of parts) {
    const unit = part.match(/[a-z]+$/)[0];
    ms += parseFloat(part) * UNIT_MS[unit];
  }
  return { text, ms };
}

// A threshold expression, overridable with THRESHOLD_<NAME> (e.g.
// `-e THRESHOLD_CONNECT_SUCCESS='rate>0.99'`).
export function threshold(name, fallback) {
  return __ENV[`THRESHOLD_${name}`] || fallback;
}

// ---- tokens and URLs -----------------------------------------------------------------------

function b64url(text) {
  return encoding.b64encode(text, "rawurl");
}

// An HS256 JWT: `sub`, `iat`, `exp`, and `iss`/`aud` when configured, plus `extra`.
export function mintToken(sub, extra = {}, ttlSeconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: sub, iat: now, exp: now + ttlSeconds };
  if (JWT_ISSUER) {
    claims.iss = JWT_ISSUER;
  }
  if (JWT_AUDIENCE) {
    claims.aud = JWT_AUDIENCE;
  }
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify(Object.assign(claims, extra)));
  const signature = crypto.hmac("sha256", JWT_SECRET, `${header}.${payload}`, "base64rawurl");
  return `${header}.${payload}.${signature}`;
}

let publisherToken = null;
let publisherTokenUntil = 0;

function publisherAuth() {
  const now = Date.now();
  if (!publisherToken || now > publisherTokenUntil) {
    publisherToken = mintToken(`${PREFIX}-publisher`, { role: "publisher" });
    publisherTokenUntil = now + 30 * 60 * 1000;
  }
  return `Bearer ${publisherToken}`;
}

export function jobId(n) {
  return `${PREFIX}-job-${n}`;
}

export function ownerOf(n) {
  return `${PREFIX}-u${n}`;
}

export function jobUrl(n) {
  return `${BASE_URL}/v1/jobs/${jobId(n)}`;
}

export function jobStreamUrl(n) {
  return `${jobUrl(n)}/events`;
}

export function topicName(n) {
  return `${PREFIX}-topic-${n}`;
}

export function topicUrl(n) {
  return `${BASE_URL}/v1/topics/${topicName(n)}`;
}

export function topicStreamUrl(n) {
  return `${topicUrl(n)}/events`;
}

// What a browser's EventSource sends: the token cookie (none without a token: a topic
// open to anonymous watchers), and Last-Event-ID when resuming.
export function streamHeaders(token, lastEventId) {
  const headers = token ? { Cookie: `${COOKIE_NAME}=${token}` } : {};
  if (lastEventId) {
    headers["Last-Event-ID"] = lastEventId;
  }
  return headers;
}

// Event ids are `<ms>-<seq>`; compares two of them (negative, zero, positive).
export function compareIds(a, b) {
  const [aMs, aSeq] = a.split("-").map(Number);
  const [bMs, bSeq] = b.split("-").map(Number);
  return aMs !== bMs ? aMs - bMs : aSeq - bSeq;
}

// ---- publishing -----------------------------------------------------------------------------

// Publishes one job event over HTTP (role publisher); returns its id, or null (the
// response is in http_req_failed{name:publish}).
export function publish(n, type, data) {
  const res = http.post(
    `${jobStreamUrl(n)}`,
    JSON.stringify({ owner: ownerOf(n), type: type, data: data }),
    {
      headers: { "Content-Type": "application/json", Authorization: publisherAuth() },
      tags: { name: "publish" },
    },
  );
  if (res.status !== 201) {
    logOnce(`publish_${res.status}`, `publishing to ${jobId(n)} got ${res.status} ${res.error || res.body}`);
    return null;
  }
  return res.json("id");
}

// Publishes one topic event over HTTP (role publisher); returns its id, or null (the
// response is in http_req_failed{name:publish}).
export function publishTopic(n, type, data) {
  const res = http.post(`${topicStreamUrl(n)}`, JSON.stringify({ type: type, data: data }), {
    headers: { "Content-Type": "application/json", Authorization: publisherAuth() },
    tags: { name: "publish" },
  });
  if (res.status !== 201) {
    logOnce(`publish_${res.status}`, `publishing to ${topicName(n)} got ${res.status} ${res.error || res.body}`);
    return null;
  }
  return res.json("id");
}

// Creates the jobs the scenario watches (a stream of an unknown job is a 404). Fails the
// setup on the first refusal, with the gateway's answer: nothing else can work then.
export function createJobs(count) {
  for (let n = 0; n < count; n++) {
    const res = http.post(
      `${jobStreamUrl(n)}`,
      JSON.stringify({ owner: ownerOf(n), type: "stage", data: { stage: "queued" } }),
      {
        headers: { "Content-Type": "application/json", Authorization: publisherAuth() },
        tags: { name: "create_job" },
      },
    );
    if (res.status !== 201) {
      throw new Error(`creating ${jobId(n)} at ${BASE_URL} failed: ${res.status} ${res.error || res.body}`);
    }
  }
}

// ---- streams and their metrics ------------------------------------------------------------

// Share of stream opens that succeeded (see recordConnection).
export const connectSuccess = new Rate("sse_connect_success");
// Failed opens, tagged with `reason`: http_<status>, connect_error, no_status, no_opening,
// ended_early.
export const connectErrors = new Counter("sse_connect_errors");
// From calling sse.open to the job's `status` snapshot, the gateway's first event.
export const timeToFirstStatus = new Trend("sse_time_to_first_status", true);

const logged = {};

// Logs a failure the first time this VU sees its reason; later ones are only counted.
export function logOnce(reason, text) {
  if (!logged[reason]) {
    logged[reason] = true;
    console.warn(`${text} (${reason}; further ones in this VU are counted, not logged)`);
  }
}

// Opens the stream at `url` and blocks until it ends. The stream is open once
// `isOpening(event)` holds for an event, whose time since sse.open goes to `openingTrend`
// and whose id is the result's and the stream's `openingId`. `onOpen(stream)` runs once
// the response head is in; `onEvent(event, stream)` gets each named event (the empty
// events of the `retry:` opening, of heartbeats and of id-only blocks are skipped);
// `stream.close()` ends it. Returns { kind, status, error, streamError, opened, openingId, elapsedMs }.
export function openStream(url, { kind, token, lastEventId, timeout, isOpening, openingTrend, onOpen, onEvent }) {
  const started = Date.now();
  const result = { kind: kind, status: 0, error: "", streamError: "", opened: false, openingId: "", elapsedMs: 0 };
  let response = null;
  let setupRan = false;
  try {
    response = sse.open(
      url,
      { headers: streamHeaders(token, lastEventId), timeout: timeout, tags: { name: `${kind}_stream` } },
      (client) => {
        setupRan = true;
        let closed = false;
        const stream = {
          started: started,
          openingId: "",
          close() {
            closed = true;
            client.close();
          },
        };
        client.on("open", () => {
          if (onOpen) {
            onOpen(stream);
          }
        });
        client.on("event", (event) => {
          // xk6-sse may still dispatch an event that was in flight when close() was called.
          if (closed) {
            return;
          }
          if (!result.opened && isOpening(event)) {
            result.opened = true;
            result.openingId = event.id;
            stream.openingId = event.id;
            openingTrend.add(Date.now() - started);
          }
          if (event.name !== "" && onEvent) {
            onEvent(event, stream);
          }
        });
        client.on("error", (e) => {
          result.streamError = e.error();
          stream.close();
        });
      },
    );
  } catch (e) {
    if (setupRan) {
      throw e; // thrown by a handler: a script error, not a connection failure
    }
    result.error = String(e); // a connection error, with the `throw` option set
  }
  result.elapsedMs = Date.now() - started;
  if (response) {
    result.status = response.status;
    result.error = response.error || "";
  }
  return result;
}

// Opens job stream `n` (see openStream): it is open at the job's `status` snapshot, the
// first event of a fresh stream.
export function openJobStream(n, { token, lastEventId, timeout, onOpen, onEvent }) {
  return openStream(jobStreamUrl(n), {
    kind: "job",
    token: token,
    lastEventId: lastEventId,
    timeout: timeout,
    isOpening: (event) => event.name === "status",
    openingTrend: timeToFirstStatus,
    onOpen: onOpen,
    onEvent: onEvent,
  });
}

// Records one open in sse_connect_success / sse_connect_errors, from what `open`
// returned: it succeeded when the gateway answered 200 and, for a fresh stream
// (`needOpening`), its opening arrived (a job's `status`: else `no_status`; a topic's
// id-only block: else `no_opening`). `failure` names a script-specific failure (such as a
// stream that ended before it should). Returns whether it succeeded.
export function recordConnection(result, { needOpening = true, failure = "" } = {}) {
  let reason = "";
  let detail = "";
  if (result.error || result.status === 0) {
    reason = "connect_error";
    detail = result.error;
  } else if (result.status !== 200) {
    reason = `http_${result.status}`;
  } else if (needOpening && !result.opened) {
    reason = result.kind === "job" ? "no_status" : "no_opening";
    detail = result.streamError;
  } else if (failure) {
    reason = failure;
    detail = result.streamError;
  }
  connectSuccess.add(reason === "");
  if (reason) {
    connectErrors.add(1, { reason: reason });
    logOnce(reason, `${result.kind} stream at ${BASE_URL}: ${reason}${detail ? `: ${detail}` : ""}`);
  }
  return reason === "";
}

// The connection thresholds every script shares, each overridable by env. A script whose
// streams open with something else than a job's `status` names its own time-to-opening
// Trend (`firstMetric`) and the env suffix that overrides its threshold (`firstEnv`).
export function connectThresholds({ firstMetric = "sse_time_to_first_status", firstEnv = "FIRST_STATUS_P95" } = {}) {
  return {
    // Stream opens that succeeded. The usual bar for an SSE load test: more than 99.9 %.
    // The second entry stops the run early when most opens fail (wrong secret, gateway
    // down), after ABORT_DELAY; the first still decides the verdict at the end.
    sse_connect_success: [
      threshold("CONNECT_SUCCESS", "rate>0.999"),
      { threshold: threshold("CONNECT_ABORT", "rate>0.5"), abortOnFail: true, delayAbortEval: __ENV.ABORT_DELAY || "10s" },
    ],
    // Failed opens over the whole run, whatever the reason (see sse_connect_errors' tags).
    sse_connect_errors: [threshold("CONNECT_ERRORS", "count<10")],
    // Time to the stream's opening (a job's `status` snapshot), 95th percentile under a
    // second.
    [firstMetric]: [threshold(firstEnv, "p(95)<1000")],
  };
}
