// Shared helpers for the xk6-sse scenarios: configuration from the environment,
// HS256 JWTs minted in k6 (k6/crypto), and URLs of the gateway's streams.
import crypto from "k6/crypto";
import encoding from "k6/encoding";

export const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8080";
export const JWT_SECRET = __ENV.JWT_SECRET || "dev-only-secret-change-me-0123456789";
export const COOKIE_NAME = __ENV.COOKIE_NAME || "sse_token";
export const JOBS = parseInt(__ENV.JOBS || "100", 10);
export const PREFIX = __ENV.PREFIX || "k6";

function b64url(text) {
  return encoding.b64encode(text, "rawurl");
}

// An HS256 JWT: header.payload signed with HMAC-SHA256 (base64url, no padding).
export function mintToken(sub, extra = {}, ttlSeconds = 3600) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = Object.assign({ sub: sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds }, extra);
  const payload = b64url(JSON.stringify(claims));
  const signature = crypto.hmac("sha256", JWT_SECRET, `${header}.${payload}`, "base64rawurl");
  return `${header}.${payload}.${signature}`;
}

export function jobId(n) {
  return `${PREFIX}-job-${n}`;
}

export function ownerOf(n) {
  return `${PREFIX}-u${n}`;
}

export function jobStreamUrl(n) {
  return `${BASE_URL}/v1/jobs/${jobId(n)}/events`;
}

// Headers a browser's EventSource sends: the cookie, and Last-Event-ID when resuming.
export function streamHeaders(token, lastEventId) {
  const headers = { Cookie: `${COOKIE_NAME}=${token}`, Accept: "text/event-stream" };
  if (lastEventId) {
    headers["Last-Event-ID"] = lastEventId;
  }
  return headers;
}

// Publish one job event over HTTP (publisher role); returns the event id or null.
export function publish(http, n, type, data) {
  const token = mintToken(`${PREFIX}-publisher`, { role: "publisher" });
  const res = http.post(
    `${BASE_URL}/v1/jobs/${jobId(n)}/events`,
    JSON.stringify({ owner: ownerOf(n), type: type, data: data }),
    { headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` } },
  );
  return res.status === 201 ? res.json("id") : null;
}

// Creates the jobs every scenario watches (a job stream of an unknown job is a 404).
export function createJobs(http, count) {
  for (let n = 0; n < count; n++) {
    publish(http, n, "stage", { stage: "queued" });
  }
}
