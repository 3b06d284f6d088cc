// `k6/x/sse`: the xk6-sse extension (github.com/phymbert/xk6-sse, `sse.go`), as the
// scripts use it. `sse.open(url, [params], setup)` blocks the VU for the stream's whole
// life and returns `{url, status, headers, error}`:
//
// 1. params (`parseConnectArgs` / `parseConnectOptionalArgs`): `method` (default GET),
//    `headers` (each set on the request, after `Accept: text/event-stream` and the k6
//    User-Agent), `body`, `tags`, `jar` (accepted, not used here: the stand-in keeps no
//    cookie jar), `timeout` (a Go duration, parsed by `time.ParseDuration`; an invalid one
//    throws `invalid sse.open() timeout`). The timeout is the HTTP client's: it covers the
//    connection, the response head *and the body*, so a stream still open when it expires
//    gets an `error` event (and stays open until the script closes it).
// 2. A connection error (refused, timeout before the head) fires `error` *before* the setup
//    function has run, i.e. before any handler exists, so no handler sees it (`Open`:
//    `client.handleEvent("error", …)` precedes `setupFn`). `open` then returns
//    `{status: 0, error: "<message>"}`, or throws when the k6 option `throw` is set (the
//    newest xk6-sse throws in every case). Success is only knowable from the response.
// 3. Otherwise the setup function runs with the client, then `open` fires (no argument),
//    then the body is read with sse.go's framing (see ../sse-reader.mjs) whatever the
//    status: a 401/429/503 JSON body without a trailing newline ends in EOF, which closes
//    the stream without any event or error; `open` returns its status.
// 4. `event` handlers get `{id, name, data, comment}` per blank line (the `retry:` opening
//    and each heartbeat are events with an empty name); each event adds 1 to the
//    `sse_event` counter.
// 5. A read error (connection reset, the timeout) fires `error` with an object whose
//    `error()` gives the message; reading stops, but `open` only returns after
//    `client.close()` (or the end of the VU's context): an `error` handler must close.
// 6. `client.close()` ends the stream; `open` returns after the current handler. No
//    reconnection, ever: resuming is the script's job (Last-Event-ID header).
// 7. An exception in a handler propagates out of `open` (`common.Throw`).
// Each `open` also adds `http_reqs` and `http_req_duration` (open → return), as sse.go's
// pushSSEMetrics does. An interrupted VU closes the stream and stops (sse.go: ctx.Done).
import { InterruptError, call, post, requireVuContext, sample, vu, waitFor } from "../bridge.mjs";
import { parseGoDuration } from "../duration.mjs";

class SseError {
  constructor(message) { this.message_ = message; }
  error() { return this.message_; }
  toString() { return this.message_; }
}

function parseParams(params) {
  const out = { method: "GET", headers: {}, body: "", tags: {}, timeoutMs: 0 };
  if (params === undefined || params === null) return out;
  for (const key of Object.keys(params)) {
    const value = params[key];
    switch (key) {
      case "headers":
        if (value !== undefined && value !== null) {
          for (const h of Object.keys(value)) out.headers[h] = String(value[h]);
        }
        break;
      case "tags":
        if (value) for (const t of Object.keys(value)) out.tags[t] = String(value[t]);
        break;
      case "method":
        out.method = String(value).trim() || "GET";
        break;
      case "body":
        out.body = String(value).trim();
        break;
      case "timeout":
        if (value === undefined || value === null) break;
        try {
          out.timeoutMs = parseGoDuration(String(value));
        } catch (e) {
          throw new Error(`invalid sse.open() timeout: ${e.message}`);
        }
        break;
      default:
        break; // jar and unknown keys are ignored
    }
  }
  return out;
}

export function open(url, ...args) {
  requireVuContext("using sse in the init context is not supported");
  let params;
  let setup;
  if (args.length === 2) {
    [params, setup] = args;
  } else if (args.length === 1) {
    [setup] = args;
  } else {
    throw new Error("invalid number of arguments to sse.open");
  }
  if (typeof setup !== "function") {
    throw new Error("last argument to sse.open must be a function");
  }
  const p = parseParams(params);
  const started = performance.now();
  const tags = { ...p.tags, url: String(url) };
  const finish = (status) => {
    const t = { ...tags, status: String(status) };
    sample("http_reqs", 1, t);
    sample("http_req_duration", performance.now() - started, t);
  };

  const head = call({
    t: "sse-open", url: String(url), method: p.method, headers: p.headers, body: p.body,
    timeoutMs: p.timeoutMs, userAgent: vu.options.userAgent,
  });
  if (head.t === "sse-fail") {
    // The `error` event fires here with no handler registered yet.
    finish(0);
    if (vu.options.throw) throw new Error(head.error);
    return { url: "", status: 0, headers: null, error: head.error };
  }

  const id = head.id;
  const handlers = {};
  let closed = false;
  const client = {
    on(event, handler) {
      if (typeof handler === "function") (handlers[event] ||= []).push(handler);
    },
    close() {
      if (!closed) {
        closed = true;
        post({ t: "sse-close", id });
      }
    },
  };
  const emit = (event, ...a) => {
    for (const h of handlers[event] || []) h(...a);
  };

  try {
    setup(client);
    emit("open");
    while (!closed) {
      const m = waitFor((x) => x.id === id);
      if (m.t === "interrupt") {
        client.close();
        throw new InterruptError();
      }
      if (m.t === "sse-evs") {
        let n = 0;
        for (const ev of m.events) {
          if (closed) break; // nothing is dispatched after close()
          n++;
          sample("sse_event", 1, tags);
          emit("event", ev);
        }
        post({ t: "sse-ack", id, n: m.events.length });
      } else if (m.t === "sse-err") {
        emit("error", new SseError(m.error));
      } else if (m.t === "sse-eof") {
        closed = true;
      }
    }
  } catch (e) {
    client.close();
    throw e;
  }
  finish(head.status);
  return { url: String(url), status: head.status, headers: head.headers, error: "" };
}

export default { open };
