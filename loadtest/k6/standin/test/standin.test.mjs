// End-to-end tests of the stand-in: real `run.mjs` processes running k6 scripts against a
// canned HTTP server on loopback that writes exact bytes.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";

const RUN = new URL("../run.mjs", import.meta.url).pathname;
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

function serve() {
  const server = http.createServer((req, res) => {
    const sse = () => res.writeHead(200, { "Content-Type": "text/event-stream" });
    switch (req.url) {
      case "/basic":
        sse();
        res.end("retry: 3000\n\nid: 5-0\nevent: status\ndata: {}\n\n: hb\n\ndata: a\ndata: b\n\n");
        return;
      case "/topic":
        // A fresh topic stream of the gateway: its live edge as an id-only block.
        sse();
        res.end("retry: 3000\n\nid: 7-0\n\nid: 8-0\nevent: update\ndata: {\"seq\":0}\n\n: hb\n\n");
        return;
      case "/401":
        res.writeHead(401, { "Content-Type": "application/json" });
        res.end("{\"error\":\"missing_token\"}");
        return;
      case "/401nl":
        res.writeHead(401, { "Content-Type": "application/json" });
        res.end("{\"error\":\"missing_token\"}\n");
        return;
      case "/slow":
        sse();
        res.write("retry: 3000\n\n");
        setTimeout(() => res.end(), 3000).unref();
        return;
      case "/many":
        sse();
        for (let i = 1; i <= 5; i++) res.write(`event: tick\ndata: ${i}\n\n`);
        res.end();
        return;
      case "/echo": {
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", () => {
          res.writeHead(201, { "Content-Type": "application/json" });
          res.end(Buffer.concat(chunks));
        });
        return;
      }
      default:
        res.writeHead(404);
        res.end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function closedPort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

function run(script, env) {
  const dir = mkdtempSync(join(tmpdir(), "k6-standin-"));
  const summary = join(dir, "summary.json");
  const args = [RUN, "--summary-json", summary];
  for (const [k, v] of Object.entries(env)) args.push("-e", `${k}=${v}`);
  args.push(script);
  return new Promise((resolve) => {
    execFile(process.execPath, args, { timeout: 60000 }, (error, stdout, stderr) => {
      let json = null;
      try {
        json = JSON.parse(readFileSync(summary, "utf8"));
      } catch {
        // no summary: the run failed before writing it
      }
      rmSync(dir, { recursive: true, force: true });
      resolve({ code: error ? error.code : 0, stdout, stderr, json });
    });
  });
}

test("xk6-sse and k6 semantics the scripts rely on", async () => {
  const server = await serve();
  try {
    const port = server.address().port;
    const r = await run(join(FIXTURES, "semantics.js"), {
      BASE_URL: `http://127.0.0.1:${port}`,
      CLOSED_URL: `http://127.0.0.1:${await closedPort()}/`,
    });
    const failed = Object.entries(r.json?.checks || {}).filter(([, c]) => c.fails > 0).map(([n]) => n);
    assert.deepEqual(failed, [], r.stdout + r.stderr);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(Object.keys(r.json.checks).length, 28);
    assert.equal(r.json.metrics.checks.values.passes, 4 * 28);
  } finally {
    server.close();
  }
});

test("a failed threshold exits 99, an init error 107, an unknown metric in a threshold 104", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k6-standin-scripts-"));
  try {
    const write = (name, text) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const failing = write("failing.js", `
      import exec from "k6/execution";
      import { Rate } from "k6/metrics";
      const ok = new Rate("ok");
      export const options = { thresholds: { ok: ["rate>0.9"] }, iterations: 4, vus: 2 };
      export default function () { ok.add(exec.scenario.iterationInTest % 2 === 0); }
    `);
    const r1 = await run(failing, {});
    assert.equal(r1.code, 99, r1.stdout);
    assert.match(r1.stdout, /✗ 'rate>0\.9' rate=50\.00%/);
    assert.match(r1.stdout, /k6-standin failing\.js: thresholds 0 passed, 1 failed — FAIL \(exit 99\)\n$/);

    const r2 = await run(write("init.js", `import x from "k6/nope"; export default function () {}`), {});
    assert.equal(r2.code, 107, r2.stdout + r2.stderr);
    assert.match(r2.stderr, /unknown module: k6\/nope/);

    const r3 = await run(write("bad.js", `export const options = { thresholds: { nope: ["count<1"] } };
      export default function () {}`), {});
    assert.equal(r3.code, 104, r3.stdout + r3.stderr);

    const r4 = await run(write("abort.js", `
      import { Rate } from "k6/metrics";
      import { sleep } from "k6";
      const ok = new Rate("ok");
      export const options = {
        scenarios: { s: { executor: "constant-vus", vus: 2, duration: "30s" } },
        thresholds: { ok: [{ threshold: "rate>0.5", abortOnFail: true }] },
      };
      export default function () { ok.add(false); sleep(0.2); }
    `), {});
    assert.equal(r4.code, 99, r4.stdout);
    assert.match(r4.stdout, /abortOnFail enabled, stopping test prematurely/);
    assert.ok(r4.json.iterations.complete < 40, "aborted within seconds, not after 30 s");

    // An iteration past maxDuration + gracefulStop is interrupted, even one that catches the
    // interruption: its next blocking call returns at once, and its samples are dropped.
    const started = Date.now();
    const r5 = await run(write("interrupt.js", `
      import { sleep } from "k6";
      import { Counter } from "k6/metrics";
      const after = new Counter("after_interrupt");
      export const options = {
        scenarios: { s: { executor: "per-vu-iterations", vus: 1, iterations: 1, maxDuration: "300ms", gracefulStop: "200ms" } },
      };
      export default function () {
        try { sleep(20); } catch (e) { sleep(20); after.add(1); }
      }
    `), {});
    assert.equal(r5.code, 0, r5.stdout + r5.stderr);
    assert.deepEqual(r5.json.iterations, { complete: 0, interrupted: 1 });
    assert.equal(r5.json.metrics.after_interrupt, undefined);
    assert.ok(Date.now() - started < 4000, "interrupted after ~0.5 s, not by the 5 s kill timer");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
