'use strict';
// Three workers in three languages publish to one job at once, and a browser follows it
// through a node kill. A Python worker (the `sse_publisher` package, Redis transport), a
// Node worker (the built TypeScript package, Redis transport) and a Rust worker (the
// sse-publisher crate's examples/log_worker.rs, HTTP through nginx) each publish numbered
// `log` lines; a page using the client package's bundle follows the job through nginx in
// front of two gateway nodes on one Redis. The node serving the page is killed (SIGKILL)
// while the lines flow; the client reconnects through nginx to the other node with
// Last-Event-ID. The page must get every event exactly once, ids strictly increasing, each
// worker's lines in order with none missing, and the terminal event last.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('./lib/harness');

const PAGE = path.join(__dirname, 'pages', 'client.html');
// What run.sh prepares: the Python package installed into its virtualenv, the TypeScript
// package built into dist/, the Rust example built beside the gateway.
const PYTHON = path.join(h.REPO, 'publisher-sdk', 'python', '.venv', 'bin', 'python');
const PYTHON_WORKER = path.join(__dirname, 'workers', 'log_worker.py');
const NODE_WORKER = path.join(__dirname, 'workers', 'log_worker.mjs');
const RUST_WORKER = path.join(h.BIN_DIR, 'examples', 'log_worker');
// Each worker's pause between two lines: together about 150 events a second.
const INTERVAL_MS = 20;

const procs = new h.Processes();
let site;
let redis;
let redisPrefix;
let nodes;
let lb;
let browser;

before(async () => {
  site = await h.startStaticServer(procs, { '/client.html': PAGE });
  redis = await h.startRedis(procs);
  redisPrefix = `${h.unique('workers')}:`;
  nodes = await Promise.all(['node-a', 'node-b'].map((name) => h.startGateway(procs, `gateway-workers-${name}`, {
    demo: false, redisUrl: redis.url, redisPrefix, cors: [site.origin],
  })));
  lb = await h.startNginx(procs, nodes);
  browser = await h.launchBrowser(procs);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

const openStreams = (node) => h.metric(node.metricsUrl, 'sse_gateway_open_connections');

/**
 * Starts a worker (same flags and output in every language) that publishes `<name> <n>`
 * lines until its standard input closes; `published` collects what it reports.
 */
function startWorker(name, command, args, broker, { job, owner }) {
  const worker = { name, published: [], done: null, errors: [] };
  worker.child = procs.spawn(`worker-${name}`, command, [
    ...args, '--broker', broker, '--job', job, '--owner', owner, '--name', name, '--interval-ms', String(INTERVAL_MS),
  ], {
    stdin: 'pipe',
    onLine(line) {
      let m;
      if ((m = /^published (\d+) (\d+-\d+)$/.exec(line))) {
        worker.published.push({ n: Number(m[1]), id: m[2] });
      } else if ((m = /^done (\d+)$/.exec(line))) {
        worker.done = Number(m[1]);
      } else if (line.trim()) {
        worker.errors.push(line);
      }
    },
  });
  return worker;
}

/** `a` - `b` for event ids `<ms>-<seq>` (as BigInts: exact at any size). */
function compareIds(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am === bm ? Number(as - bs) : Number(am - bm);
}

test('a Python, a Node and a Rust worker interleave into one stream that the page receives in order, exactly once, through a node kill', { timeout: 60_000 }, async () => {
  const user = h.unique('mia');
  const job = h.unique('render');
  const context = await browser.newContext();
  const workers = [];
  try {
    // The job exists (its owner registered) before the page asks for it.
    await h.publish(lb.url, job, { owner: user, type: 'stage', data: { stage: 'Rendering' } });
    const page = await h.newPage(context);
    await page.goto(`${site.origin}/client.html`);
    await h.waitInPage(page, 'the client module', () => window.ready === true);
    await page.evaluate(([g, j, t]) => {
      window.follow('workers', { gateway: g, job: j, token: t });
      // Every event as delivered, with the connection (1, 2, …) it came on. Added in the
      // same task as the stream opens, so that nothing is delivered before it.
      const rec = window.streams.workers;
      rec.received = [];
      rec.stream.onEvent((e) => rec.received.push({ type: e.type, id: e.id, message: e.data.message ?? null, connection: rec.stream.stats.opens }));
    }, [lb.url, job, h.userToken(user)]);
    await h.waitInPage(page, 'the stream to open', () => window.streams.workers.received.length >= 1);

    const serving = await h.waitFor('one node to hold the stream', async () => {
      const counts = await Promise.all(nodes.map(openStreams));
      return counts[0] + counts[1] === 1 ? nodes[counts.indexOf(1)] : null;
    });
    const survivor = nodes.find((n) => n !== serving);

    const target = { job, owner: user };
    workers.push(
      startWorker('python', PYTHON, [PYTHON_WORKER, '--prefix', redisPrefix], redis.url, target),
      startWorker('node', process.execPath, [NODE_WORKER, '--prefix', redisPrefix], redis.url, target),
      // Through nginx, over HTTP: its requests in flight on the killed node fail (502)
      // and are retried under their idempotency keys.
      startWorker('rust', RUST_WORKER, ['--token', h.userToken('log-worker', 3600, { role: 'publisher' })], lb.url, target),
    );
    const lines = (name, connection) => page.evaluate(([w, c]) => window.streams.workers.received
      .filter((e) => e.type === 'log' && e.message.startsWith(`${w} `) && (c === null || e.connection === c)).length, [name, connection]);
    const everyWorker = async (connection, atLeast) => {
      for (const w of workers) {
        if (w.child.exitCode !== null) { throw new Error(`worker ${w.name} exited with ${w.child.exitCode}: ${w.errors.join(' | ')}`); }
        if ((await lines(w.name, connection)) < atLeast) { return false; }
      }
      return true;
    };

    // Lines from all three on the first connection; then the kill, while they flow.
    await h.waitFor('5 lines of each worker in the page', () => everyWorker(1, 5), { timeout: 20_000 });
    const publishedAtKill = workers.map((w) => w.published.length);
    await procs.kill(serving.child);
    assert.equal((await serving.child.exited).signal, 'SIGKILL');
    await h.waitInPage(page, 'the client to reconnect', () => window.streams.workers.stream.stats.opens >= 2, undefined, 15_000);
    await h.waitFor('10 lines of each worker on the new connection', () => everyWorker(2, 10), { timeout: 20_000 });
    assert.equal(await openStreams(survivor), 1, 'the page is on the surviving node');

    // Stop the workers (their input closes), then the job completes.
    for (const w of workers) { w.child.stdin.end(); }
    for (const w of workers) {
      const exit = await w.child.exited;
      assert.deepEqual([exit.code, w.errors], [0, []], `worker ${w.name} (log: ${w.child.logPath})`);
      assert.equal(w.done, w.published.length, `worker ${w.name} reported every line`);
    }
    const total = workers.reduce((sum, w) => sum + w.published.length, 0);
    const completeId = await h.publish(lb.url, job, { type: 'complete', data: { result: { lines: total } } });
    await h.waitInPage(page, 'the stream to finish', () => window.streams.workers.stream.state === 'finished');

    const r = await page.evaluate(() => {
      const rec = window.streams.workers;
      return { received: rec.received, stats: { ...rec.stream.stats }, states: rec.states, job: rec.job };
    });
    const events = r.received;
    // The stream: the job's state, every line, the terminal event.
    assert.equal(events[0].type, 'status');
    assert.equal(events.at(-1).type, 'complete');
    assert.equal(events.at(-1).id, completeId);
    const logs = events.slice(1, -1);
    assert.ok(logs.every((e) => e.type === 'log'), `only log lines between: ${[...new Set(logs.map((e) => e.type))]}`);
    // Exactly what the workers published, each once, in id order.
    const published = workers.flatMap((w) => w.published.map((p) => ({ id: p.id, message: `${w.name} ${p.n}` })))
      .sort((a, b) => compareIds(a.id, b.id));
    assert.deepEqual(logs.map((e) => ({ id: e.id, message: e.message })), published, 'every line exactly once, in order');
    for (let i = 1; i < events.length; i++) {
      assert.ok(compareIds(events[i].id, events[i - 1].id) > 0, `ids increase: ${events[i - 1].id} then ${events[i].id}`);
    }
    // Each worker's lines in its own order, from 1, with no gap.
    for (const w of workers) {
      const numbers = logs.filter((e) => e.message.startsWith(`${w.name} `)).map((e) => Number(e.message.split(' ')[1]));
      assert.deepEqual(numbers, Array.from({ length: w.done }, (_, i) => i + 1), `the lines of ${w.name}`);
    }
    // They interleaved: the stream switches worker often, not once per worker.
    const switches = logs.filter((e, i) => i > 0 && e.message.split(' ')[0] !== logs[i - 1].message.split(' ')[0]).length;
    assert.ok(switches >= 20, `${switches} switches between workers in ${logs.length} lines`);
    // The kill fell while all three were publishing: lines of each before and after it.
    for (const [i, w] of workers.entries()) {
      assert.ok(publishedAtKill[i] >= 5 && w.published.length >= publishedAtKill[i] + 10,
        `${w.name}: ${publishedAtKill[i]} lines before the kill, ${w.published.length} in all`);
      const on = (c) => logs.filter((e) => e.connection === c && e.message.startsWith(`${w.name} `)).length;
      assert.ok(on(1) >= 5 && on(2) >= 10, `${w.name}: ${on(1)} lines on the first connection, ${on(2)} on the second`);
    }
    // One reconnection, by the client, resumed from its last id: no duplicate, no snapshot.
    assert.deepEqual([r.stats.opens, r.stats.duplicates, r.stats.resyncs], [2, 0, 0]);
    assert.deepEqual(r.states.filter((s) => s.state === 'open').map((s) => s.resumed), [false, true]);
    assert.deepEqual([r.job.status, r.job.result, r.job.lastEventId], ['completed', { lines: total }, completeId]);
  } finally {
    for (const w of workers) { w.child.stdin?.end(); }
    await context.close();
  }
});
