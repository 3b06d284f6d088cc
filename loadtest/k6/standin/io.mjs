// The main thread's half of every blocking call: it does the network I/O for all VUs with
// Node's http client and answers each VU on its port.
//
// - `http`: one keep-alive agent per VU, as k6 keeps connections per VU.
// - `sse-open`: a fresh connection per stream (xk6-sse builds a new http.Client and
//   Transport for each `open`), `Accept: text/event-stream` and the k6 User-Agent unless
//   the script sets them, Go's transparent gzip. The body is framed by SseLineReader and
//   sent to the VU in batches. Like sse.go's unbuffered channel, delivery is flow-controlled:
//   past 256 events not yet handled by the VU the socket is paused, so a slow VU slows its
//   own stream (TCP backpressure), it does not queue without bound here.
// - Error texts follow Go's net/http wording where the scripts may print them.
import http from "node:http";
import https from "node:https";
import zlib from "node:zlib";
import { SseLineReader } from "./sse-reader.mjs";

const HIGH_WATER = 256;
const LOW_WATER = 64;
export const DEFAULT_USER_AGENT = "k6/1.x (https://k6.io/) k6-standin";

// Go's canonical header keys (`Content-Type`), values of repeated headers joined by ", ".
function canonicalHeaders(raw) {
  const out = {};
  for (const [k, v] of Object.entries(raw)) {
    const key = k.split("-").map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase()).join("-");
    out[key] = Array.isArray(v) ? v.join(", ") : String(v);
  }
  return out;
}

function setHeader(headers, name, value) {
  for (const k of Object.keys(headers)) {
    if (k.toLowerCase() === name.toLowerCase()) delete headers[k];
  }
  headers[name] = value;
}

function hasHeader(headers, name) {
  return Object.keys(headers).some((k) => k.toLowerCase() === name.toLowerCase());
}

function dialError(method, url, err) {
  const u = new URL(url);
  const host = `${u.hostname}:${u.port || (u.protocol === "https:" ? 443 : 80)}`;
  const what = {
    ECONNREFUSED: "connect: connection refused",
    ECONNRESET: "read: connection reset by peer",
    EHOSTUNREACH: "connect: no route to host",
    ENOTFOUND: "lookup: no such host",
  }[err.code] || err.message;
  const verb = method.charAt(0) + method.slice(1).toLowerCase();
  return { text: `${verb} "${url}": dial tcp ${host}: ${what}`, code: err.code === "ECONNREFUSED" ? 1212 : 1000 };
}

export class VuIo {
  constructor(send) {
    this.send = send;
    this.agentHttp = new http.Agent({ keepAlive: true });
    this.agentHttps = new https.Agent({ keepAlive: true });
    this.requests = new Map();
    this.streams = new Map();
  }

  handle(m) {
    switch (m.t) {
      case "http": return this.httpRequest(m);
      case "sse-open": return this.sseOpen(m);
      case "sse-ack": return this.sseAck(m);
      case "sse-close": return this.sseClose(m.id);
      case "cancel":
        this.requests.get(m.id)?.destroy();
        this.requests.delete(m.id);
        this.sseClose(m.id);
        return undefined;
      default: throw new Error(`unknown I/O message ${m.t}`);
    }
  }

  httpRequest(m) {
    const url = new URL(m.url);
    const lib = url.protocol === "https:" ? https : http;
    const headers = { ...m.headers };
    if (!hasHeader(headers, "User-Agent")) headers["User-Agent"] = m.userAgent || DEFAULT_USER_AGENT;
    let sentAt = 0;
    let settled = false;
    const reply = (r) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.requests.delete(m.id);
      this.send({ t: "http-res", id: m.id, url: m.url, ...r });
    };
    const req = lib.request(url, {
      method: m.method, headers, agent: url.protocol === "https:" ? this.agentHttps : this.agentHttp,
    });
    this.requests.set(m.id, req);
    req.on("socket", (socket) => {
      if (socket.connecting) socket.once("connect", () => { sentAt = performance.now(); });
      else sentAt = performance.now();
    });
    const timer = setTimeout(() => {
      req.destroy();
      reply({ status: 0, body: null, headers: {}, error: "request timeout", errorCode: 1050 });
    }, m.timeoutMs);
    req.on("error", (err) => {
      const e = dialError(m.method, m.url, err);
      reply({ status: 0, body: null, headers: {}, error: e.text, errorCode: e.code });
    });
    req.on("response", (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", () => {});
      res.on("end", () => reply({
        status: res.statusCode,
        statusText: `${res.statusCode} ${res.statusMessage}`,
        headers: canonicalHeaders(res.headers),
        body: Buffer.concat(chunks).toString("utf8"),
        durationMs: performance.now() - (sentAt || performance.now()),
      }));
    });
    req.end(m.body === null ? undefined : m.body);
  }

  sseOpen(m) {
    const url = new URL(m.url);
    const lib = url.protocol === "https:" ? https : http;
    const headers = { "User-Agent": m.userAgent || DEFAULT_USER_AGENT, "Accept-Encoding": "gzip" };
    setHeader(headers, "Accept", "text/event-stream");
    for (const [k, v] of Object.entries(m.headers)) setHeader(headers, k, v);
    const stream = { id: m.id, req: null, res: null, inflight: 0, paused: false, done: false, timer: null };
    this.streams.set(m.id, stream);
    // A keep-alive agent of its own, destroyed with the stream: xk6-sse's Transport per
    // `open` (so no `Connection: close` is sent, as Go sends none).
    stream.agent = new lib.Agent({ keepAlive: true });
    const req = lib.request(url, { method: m.method, headers, agent: stream.agent });
    stream.req = req;
    const verb = m.method.charAt(0) + m.method.slice(1).toLowerCase();
    const readError = (text) => {
      if (stream.done) return;
      stream.done = true; // sse.go's reader stops at its first read error
      this.send({ t: "sse-err", id: m.id, error: text });
    };
    if (m.timeoutMs > 0) {
      // Go's client timeout never fires early; a Node timer may by a few ms (it counts from
      // the event loop's cached time), so it is re-armed until the deadline has passed.
      const deadline = performance.now() + m.timeoutMs;
      const onTimeout = () => {
        const left = deadline - performance.now();
        if (left > 0) {
          stream.timer = setTimeout(onTimeout, Math.ceil(left));
          return;
        }
        if (!stream.res) {
          this.sseClose(m.id);
          this.send({ t: "sse-fail", id: m.id, error: `${verb} "${m.url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)` });
        } else {
          readError("context deadline exceeded (Client.Timeout or context cancellation while reading body)");
          stream.res.destroy();
        }
      };
      stream.timer = setTimeout(onTimeout, m.timeoutMs);
    }
    req.on("error", (err) => {
      if (stream.res || !this.streams.has(m.id)) return;
      this.sseClose(m.id);
      this.send({ t: "sse-fail", id: m.id, error: dialError(m.method, m.url, err).text });
    });
    req.on("response", (res) => {
      stream.res = res;
      this.send({ t: "sse-res", id: m.id, status: res.statusCode, headers: canonicalHeaders(res.headers) });
      const body = /gzip/i.test(res.headers["content-encoding"] || "") ? res.pipe(zlib.createGunzip()) : res;
      stream.body = body;
      const reader = new SseLineReader();
      body.on("data", (chunk) => {
        if (stream.done) return;
        let events = [];
        for (const item of reader.push(chunk)) {
          if (item.event) {
            events.push(item.event);
            continue;
          }
          if (events.length) this.sendEvents(stream, events);
          events = [];
          this.send({ t: "sse-err", id: m.id, error: item.error });
        }
        if (events.length) this.sendEvents(stream, events);
      });
      body.on("end", () => {
        if (stream.done) return;
        this.sseClose(m.id); // sse.go: EOF → closeResponseBody, no event
        this.send({ t: "sse-eof", id: m.id });
      });
      // A body cut before its end (no last chunk) is Go's io.ErrUnexpectedEOF.
      res.on("aborted", () => readError("unexpected EOF"));
      body.on("error", (err) => readError(err.code === "ECONNRESET" ? "unexpected EOF" : err.message));
    });
    req.end(m.body ? m.body : undefined);
  }

  sendEvents(stream, events) {
    stream.inflight += events.length;
    this.send({ t: "sse-evs", id: stream.id, events });
    if (!stream.paused && stream.inflight >= HIGH_WATER) {
      stream.paused = true;
      stream.body.pause();
    }
  }

  sseAck(m) {
    const stream = this.streams.get(m.id);
    if (!stream) return;
    stream.inflight -= m.n;
    if (stream.paused && stream.inflight <= LOW_WATER) {
      stream.paused = false;
      stream.body.resume();
    }
  }

  sseClose(id) {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.streams.delete(id);
    stream.done = true;
    clearTimeout(stream.timer);
    if (stream.res) stream.res.destroy();
    stream.req.destroy();
    stream.agent.destroy();
  }

  close() {
    for (const id of [...this.streams.keys()]) this.sseClose(id);
    for (const req of this.requests.values()) req.destroy();
    this.agentHttp.destroy();
    this.agentHttps.destroy();
  }
}
