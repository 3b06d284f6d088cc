// `k6/http` (grafana/k6 `js/modules/k6/http`): blocking requests from a VU. What the
// scripts rely on, as k6 does it:
// - `http.post(url, body, params)` / `get` / `put` / `patch` / `del` / `head` / `request`;
//   a string body is sent as is, an object as `application/x-www-form-urlencoded`.
// - params: `headers`, `tags`, `timeout` (ms or a duration string; default 60 s).
// - A request that fails (refused, timed out) does not throw (unless the `throw` option is
//   set): its response has `status` 0 and `error`/`error_code` (1212 refused, 1050 timeout,
//   1000 other).
// - `response.json(selector)` parses the body; with a selector (a gjson path: `a.b`,
//   `items.0.id`, `items.#`) it returns the value there, or undefined when absent.
// - Every request adds `http_reqs` (+1), `http_req_duration` (ms, request sent → body
//   received) and `http_req_failed` (true unless 200–399), tagged method, url, name
//   (params.tags.name or the url), status and expected_response.
// - Requests are refused in the init context.
// Not implemented (not used by the scripts): batch, cookie jars, redirects' options,
// multipart file uploads, the other timing phases.
import { call, requireVuContext, sample, vu } from "../bridge.mjs";
import { parseK6Duration } from "../duration.mjs";

function gjsonGet(value, path) {
  let current = value;
  for (const part of path.split(".")) {
    if (current === null || typeof current !== "object") return undefined;
    if (part === "#" && Array.isArray(current)) {
      current = current.length;
      continue;
    }
    if (!Object.prototype.hasOwnProperty.call(current, part)) return undefined;
    current = current[part];
  }
  return current;
}

class Response {
  constructor(reply, request) {
    this.status = reply.status;
    this.status_text = reply.statusText || "";
    this.body = reply.body;
    this.headers = reply.headers || {};
    this.url = reply.url || request.url;
    this.error = reply.error || "";
    this.error_code = reply.errorCode || 0;
    this.timings = { duration: reply.durationMs || 0 };
    this.request = { method: request.method, url: request.url, headers: request.headers, body: request.body };
  }

  json(selector) {
    if (typeof this.body !== "string") {
      throw new Error("the body is null so we can't transform it to JSON - this likely was because of a request error getting the response");
    }
    let parsed;
    try {
      parsed = JSON.parse(this.body);
    } catch (e) {
      throw new Error(`cannot parse json due to an error: ${e.message}`);
    }
    return selector === undefined ? parsed : gjsonGet(parsed, String(selector));
  }
}

function formBody(obj) {
  return Object.entries(obj).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`).join("&");
}

export function request(method, url, body, params = {}) {
  requireVuContext("making http requests in the init context is not supported");
  const headers = { ...(params && params.headers) };
  let payload = body;
  if (payload !== null && payload !== undefined && typeof payload === "object" && !(payload instanceof ArrayBuffer) && !ArrayBuffer.isView(payload)) {
    payload = formBody(payload);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    }
  }
  if (payload instanceof ArrayBuffer) payload = new Uint8Array(payload);
  const req = {
    t: "http",
    method: method.toUpperCase(),
    url: String(url),
    headers,
    body: payload === undefined || payload === null ? null : payload,
    timeoutMs: parseK6Duration(params && params.timeout, 60000),
    userAgent: vu.options.userAgent,
  };
  const reply = call(req);
  const res = new Response(reply, req);
  const ok = res.status >= 200 && res.status < 400;
  const tags = {
    method: req.method,
    url: req.url,
    name: (params && params.tags && params.tags.name) || req.url,
    status: String(res.status),
    expected_response: String(ok),
    ...((params && params.tags) || {}),
  };
  if (res.error_code) tags.error_code = String(res.error_code);
  sample("http_reqs", 1, tags);
  sample("http_req_duration", res.timings.duration, tags);
  sample("http_req_failed", ok ? 0 : 1, tags);
  if (res.error && vu.options.throw) {
    throw new Error(res.error);
  }
  return res;
}

export const get = (url, params) => request("GET", url, null, params);
export const head = (url, params) => request("HEAD", url, null, params);
export const post = (url, body, params) => request("POST", url, body, params);
export const put = (url, body, params) => request("PUT", url, body, params);
export const patch = (url, body, params) => request("PATCH", url, body, params);
export const del = (url, body, params) => request("DELETE", url, body, params);
export const options = (url, body, params) => request("OPTIONS", url, body, params);

export default { request, get, head, post, put, patch, del, options };
