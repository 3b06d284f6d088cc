'use strict';
// The client package (gateway/client, as its committed bundle gateway/assets/sse-client.js)
// in headless Chromium, from a page on an origin of its own, against real gateways: a
// bearer token in `Authorization` refreshed on 401 with nothing lost, 204 and the terminal
// event ending a job stream, resync snapshots replacing state, and a 503 from a draining
// node (where a plain EventSource stops for good) followed by a resume on another node.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('./lib/harness');

const PAGE = path.join(__dirname, 'pages', 'client.html');

const procs = new h.Processes();
let site;       // the test page's origin
let gateway;    // embedded broker, --jwt-leeway 0s
let trimming;   // embedded broker keeping 5 events per job stream and 8 per user stream
let browser;

before(async () => {
  site = await h.startStaticServer(procs, { '/client.html': PAGE });
  [gateway, trimming] = await Promise.all([
    h.startGateway(procs, 'gateway-client', { demo: false, cors: [site.origin], args: ['--jwt-leeway', '0s'] }),
    h.startGateway(procs, 'gateway-client-trimming', { demo: false, cors: [site.origin], args: ['--job-stream-maxlen', '5', '--user-stream-maxlen', '8'] }),
  ]);
  browser = await h.launchBrowser(procs);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

async function clientPage(context) {
  const page = await h.newPage(context);
  await page.goto(`${site.origin}/client.html`);
  await h.waitInPage(page, 'the client module', () => window.ready === true);
  return page;
}

/** GET requests of the page to `pathname`, with all their headers, and the answers' statuses. */
function recordStream(page, pathname) {
  const seen = { requests: [], statuses: [] };
  page.on('request', async (request) => {
    if (request.method() !== 'GET' || new URL(request.url()).pathname !== pathname) { return; }
    seen.requests.push(request.allHeaders());
  });
  page.on('response', (response) => {
    if (response.request().method() === 'GET' && new URL(response.url()).pathname === pathname) { seen.statuses.push(response.status()); }
  });
  return seen;
}

/** The job's state as the gateway answers `GET /v1/jobs/{id}`. */
async function jobState(base, job, user) {
  const response = await fetch(`${base}/v1/jobs/${encodeURIComponent(job)}`, { headers: { authorization: `Bearer ${h.userToken(user)}` } });
  assert.equal(response.status, 200);
  return response.json();
}

const rec = (page, name) => page.evaluate((n) => {
  const r = window.streams[n];
  return { events: r.events, states: r.states, board: r.board, job: r.job, log: r.log, state: r.stream.state, lastEventId: r.stream.lastEventId, stats: { ...r.stream.stats } };
}, name);

test('a bearer token in Authorization; at its expiry a 401, refreshToken() once, and the stream resumes with nothing lost', { timeout: 45_000 }, async () => {
  const user = h.unique('ivan');
  const job = h.unique('render');
  const context = await browser.newContext();   // no cookie at all: the header is the only credential
  try {
    const page = await clientPage(context);
    await page.exposeFunction('freshToken', () => h.userToken(user, 3600));
    const seen = recordStream(page, `/v1/jobs/${job}/events`);
    await h.publish(gateway.url, job, { owner: user, type: 'progress', data: { progress: 5, stage: 'Encoding' } });
    await page.evaluate(([g, j, t]) => window.follow('bearer', { gateway: g, job: j, token: t, refresh: true }), [gateway.url, job, h.userToken(user, 3)]);
    await h.waitInPage(page, 'the stream to open', () => window.streams.bearer.stream.state === 'open');

    // A worker publishes all along, across the token's expiry and the refresh.
    const published = [];
    const publishNext = async () => {
      const message = `frame ${published.length + 1}`;
      await h.publish(gateway.url, job, { type: 'log', data: { level: 'info', message } });
      published.push(message);
    };
    await h.waitFor('the stream to end at exp, be refused, and resume', async () => {
      await publishNext();
      return page.evaluate(() => window.streams.bearer.stream.stats.opens >= 2);
    }, { timeout: 15_000, interval: 100 });
    for (let i = 0; i < 5; i++) { await publishNext(); }
    await h.publish(gateway.url, job, { type: 'progress', data: { progress: 90, stage: 'Muxing', message: 'almost there' } });
    await h.publish(gateway.url, job, { type: 'complete', data: { result: { outputPath: `${job}.mp4` } } });
    await h.waitInPage(page, 'the stream to finish', () => window.streams.bearer.stream.state === 'finished');

    const r = await rec(page, 'bearer');
    assert.ok(published.length > 5, `published ${published.length}`);
    assert.deepEqual(r.log, published, 'every line once, in order');
    assert.deepEqual([r.stats.opens, r.stats.refreshes, r.stats.duplicates, r.stats.resyncs], [2, 1, 0, 0]);
    assert.deepEqual(r.states.map((s) => [s.state, s.status]), [
      ['connecting', null], ['open', 200], ['reconnecting', null], ['reconnecting', 401], ['open', 200], ['finished', null],
    ]);
    assert.equal(r.states[3].code, 'token_expired');
    // Three requests: the stream, the refused resume, the resume with the new token; none after the end.
    assert.deepEqual(seen.statuses, [200, 401, 200]);
    const headers = await Promise.all(seen.requests);
    assert.ok(headers.every((x) => /^Bearer /.test(x.authorization) && x.cookie === undefined), 'the token went in the header, and only there');
    assert.equal(headers[0].authorization, headers[1].authorization);
    assert.notEqual(headers[1].authorization, headers[2].authorization);
    assert.deepEqual(headers.map((x) => x['last-event-id'] === undefined), [true, false, false]);
    assert.equal(headers[2]['last-event-id'], headers[1]['last-event-id'], 'resumed from where the refused attempt would have');
    // The reducer folded the stream into exactly the gateway's own state of the job.
    assert.deepEqual(r.job, await jobState(gateway.url, job, user));
    assert.deepEqual(r.job.result, { outputPath: `${job}.mp4` });
  } finally {
    await context.close();
  }
});

test('a job stream ends at its terminal event without another request; resumed at its end it gets 204 and stops', { timeout: 30_000 }, async () => {
  const user = h.unique('judy');
  const job = h.unique('build');
  const context = await browser.newContext();
  try {
    // The cookie this time (the client's credentialed fetch, cross-origin).
    await h.setTokenCookie(context, gateway.url, h.userToken(user));
    const page = await clientPage(context);
    const seen = recordStream(page, `/v1/jobs/${job}/events`);
    await h.publish(gateway.url, job, { owner: user, type: 'progress', data: { progress: 50 } });
    const logId = await h.publish(gateway.url, job, { type: 'log', data: { message: 'linking' } });
    const endId = await h.publish(gateway.url, job, { type: 'failed', data: { error: 'linker crashed' } });

    await page.evaluate(([g, j, id]) => window.follow('before-end', { gateway: g, job: j, lastEventId: id }), [gateway.url, job, logId]);
    await h.waitInPage(page, 'the stream to finish', () => window.streams['before-end'].stream.state === 'finished');
    let r = await rec(page, 'before-end');
    assert.deepEqual(r.events, [{ type: 'failed', id: endId, resync: false }]);
    assert.deepEqual(r.states.map((s) => [s.state, s.status]), [['connecting', null], ['open', 200], ['finished', null]]);
    assert.deepEqual(seen.statuses, [200]);

    await page.evaluate(([g, j, id]) => window.follow('at-end', { gateway: g, job: j, lastEventId: id }), [gateway.url, job, endId]);
    await h.waitInPage(page, 'the 204', () => window.streams['at-end'].stream.state === 'finished');
    r = await rec(page, 'at-end');
    assert.deepEqual(r.events, []);
    assert.deepEqual(r.states.map((s) => [s.state, s.status]), [['connecting', null], ['finished', 204]]);
    assert.deepEqual(seen.statuses, [200, 204]);
    // And nothing more over three `retry:` intervals (500 ms here).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(seen.statuses, [200, 204]);
    assert.deepEqual((await Promise.all(seen.requests)).map((x) => x['last-event-id']), [logId, endId]);
  } finally {
    await context.close();
  }
});

test('resync: resumed after the history was trimmed, a snapshot with "resync" replaces the job, and the user\'s board', { timeout: 30_000 }, async () => {
  const user = h.unique('kim');
  const job = h.unique('import');
  const other = h.unique('import');
  const context = await browser.newContext();
  try {
    const page = await clientPage(context);
    const token = h.userToken(user);
    await h.publish(trimming.url, job, { owner: user, type: 'progress', data: { progress: 10, stage: 'Fetching' } });
    await h.publish(trimming.url, job, { type: 'log', data: { message: 'old line' } });
    await h.publish(trimming.url, other, { owner: user, type: 'progress', data: { progress: 1 } });
    await page.evaluate(([g, j, t]) => {
      window.follow('job-1', { gateway: g, job: j, token: t });
      window.follow('user-1', { gateway: g, token: t });
    }, [trimming.url, job, token]);
    await h.waitInPage(page, 'both snapshots', () => window.streams['job-1'].events.length === 1 && window.streams['user-1'].events.length === 1);
    const [job1, user1] = [await rec(page, 'job-1'), await rec(page, 'user-1')];
    await page.evaluate(() => { window.streams['job-1'].stream.close(); window.streams['user-1'].stream.close(); });
    assert.deepEqual(Object.keys(user1.board.jobs).sort(), [job, other].sort());

    // Away for a while: more events than either stream keeps.
    for (let i = 1; i <= 12; i++) { await h.publish(trimming.url, job, { type: 'log', data: { message: `line ${i}` } }); }
    await h.publish(trimming.url, job, { type: 'progress', data: { progress: 70, stage: 'Indexing' } });

    await page.evaluate(([g, j, t, jobId, userId]) => {
      window.follow('job-2', { gateway: g, job: j, token: t, lastEventId: jobId });
      window.follow('user-2', { gateway: g, token: t, lastEventId: userId });
    }, [trimming.url, job, token, job1.lastEventId, user1.lastEventId]);
    await h.waitInPage(page, 'both resyncs', () => window.streams['job-2'].events.length === 1 && window.streams['user-2'].events.length === 1);
    const [job2, user2] = [await rec(page, 'job-2'), await rec(page, 'user-2')];
    const state = await jobState(trimming.url, job, user);
    assert.deepEqual(job2.events.map((e) => [e.type, e.resync]), [['status', true]]);
    assert.deepEqual(job2.job, state, 'the snapshot replaced the job');
    assert.deepEqual(job2.log, [], 'the trimmed lines are not replayed');
    assert.equal(job2.stats.resyncs, 1);
    assert.deepEqual(user2.events.map((e) => [e.type, e.resync]), [['jobs', true]]);
    assert.deepEqual(user2.board.jobs[job], state);
    assert.deepEqual(Object.keys(user2.board.jobs).sort(), [job, other].sort());
    assert.equal(user2.board.resyncs, 1);
    assert.equal(user2.board.userId, user);
    assert.notEqual(user2.lastEventId, user1.lastEventId);
    await page.evaluate(() => { window.streams['job-2'].stream.close(); window.streams['user-2'].stream.close(); });
  } finally {
    await context.close();
  }
});

test('a draining node answers 503: the client waits Retry-After and resumes on another node with nothing lost; a plain EventSource stops', { timeout: 60_000 }, async () => {
  // Two nodes on one Redis behind a layer-4 balancer (a TCP proxy, as a Kubernetes Service
  // is, which retries nothing). Node A drains while its endpoint is still in rotation.
  const redis = await h.startRedis(procs);
  const redisPrefix = `${h.unique('client')}:`;
  const common = { demo: false, redisUrl: redis.url, redisPrefix, cors: [site.origin] };
  const [a, b] = await Promise.all([
    h.startGateway(procs, 'gateway-drain-a', { ...common, args: ['--drain-timeout', '20s'] }),
    h.startGateway(procs, 'gateway-drain-b', common),
  ]);
  const proxy = await h.startTcpProxy(procs, a.port);
  const user = h.unique('lena');
  const job = h.unique('render');
  const context = await browser.newContext();
  const held = [];
  let publishing = true;
  let worker = Promise.resolve();
  try {
    await h.setTokenCookie(context, proxy.url, h.userToken(user));
    const page = await clientPage(context);
    const seen = recordStream(page, '/v1/users/me/events');
    await page.evaluate((g) => {
      window.follow('drain', { gateway: g });
      window.plain(`${g}/v1/users/me/events`);
    }, proxy.url);
    await h.waitInPage(page, 'both streams to open', () => window.streams.drain.stream.state === 'open' && window.plainSource.opens === 1);

    // Other clients of node A, so that it is still draining (and answering) when the page
    // comes back: A ends its streams over the first half of its drain timeout.
    for (let i = 0; i < 3; i++) {
      const controller = new AbortController();
      const response = await fetch(`${a.url}/v1/users/me/events`, { headers: { authorization: `Bearer ${h.userToken(h.unique('other'))}` }, signal: controller.signal });
      assert.equal(response.status, 200);
      response.body.pipeTo(new WritableStream()).catch(() => {});
      held.push(controller);
    }

    // A worker publishes all along (through node B: publishing is not what is tested).
    const published = [];
    worker = (async () => {
      await h.publish(b.url, job, { owner: user, type: 'progress', data: { progress: 1 } });
      while (publishing) {
        const message = `frame ${published.length + 1}`;
        await h.publish(b.url, job, { type: 'log', data: { message } });
        published.push(message);
        await new Promise((resolve) => setTimeout(resolve, 25));   // pacing, not synchronisation
      }
    })();
    await h.waitInPage(page, 'ten lines', () => window.streams.drain.log.length >= 10);

    // SIGTERM: A drains. Then the network drops the page's connections; both clients come
    // back through the balancer, which still sends them to A: 503 draining, Retry-After 1.
    procs.signal(a.child, 'SIGTERM');
    await h.waitFor('node A to drain', async () => (await fetch(`${a.url}/readyz`)).status === 503);
    proxy.cut();
    await h.waitInPage(page, 'the 503 and the plain EventSource closed', () => window.streams.drain.states.some((s) => s.status === 503)
      && window.plainSource.source.readyState === EventSource.CLOSED);
    // A leaves the rotation; the next attempts reach B.
    proxy.target = b.port;
    await h.waitInPage(page, 'the client to resume on B', () => window.streams.drain.stream.stats.opens >= 2);
    const at = published.length;
    await h.waitInPage(page, '20 more lines', (n) => window.streams.drain.log.length >= n, at + 20);
    publishing = false;
    await worker;
    await h.publish(b.url, job, { type: 'complete', data: { result: { frames: published.length } } });
    await h.waitInPage(page, 'the completed job', (id) => window.streams.drain.board.jobs[id]?.status === 'completed', job);

    const r = await rec(page, 'drain');
    assert.deepEqual(r.log, published, 'every line exactly once, in order');
    assert.deepEqual([r.stats.opens, r.stats.duplicates, r.stats.resyncs], [2, 0, 0]);
    const refused = r.states.findIndex((s) => s.status === 503);
    assert.deepEqual([r.states[refused].state, r.states[refused].code], ['reconnecting', 'draining']);
    assert.ok(r.states[refused].delayMs >= 1000, `waited ${r.states[refused].delayMs} ms (Retry-After: 1)`);
    const reopened = r.states.findIndex((s, i) => i > refused && s.state === 'open');
    assert.ok(r.states[reopened].at - r.states[refused].at >= 1000, 'not before Retry-After');
    assert.equal(r.states[reopened].resumed, true);
    assert.ok(seen.statuses.includes(503), String(seen.statuses));
    // The folded job equals the gateway's state, but for `lastEventId`: on Redis the user
    // stream numbers its events itself (its id for an event can be a millisecond later than
    // the job stream's), so the folded job carries the user stream's id of its last event.
    const { lastEventId: folded, ...board } = r.board.jobs[job];
    const { lastEventId: _jobStreamId, ...state } = await jobState(b.url, job, user);
    assert.deepEqual(board, state);
    assert.equal(folded, r.lastEventId);
    // The plain EventSource saw the same 503 and gave up: it missed everything since.
    const plain = await page.evaluate(() => ({ state: window.plainSource.source.readyState, lines: window.plainSource.log.length, opens: window.plainSource.opens }));
    assert.equal(plain.state, 2, 'EventSource.CLOSED');
    assert.equal(plain.opens, 1);
    assert.ok(plain.lines < published.length - 20, `plain EventSource: ${plain.lines} of ${published.length} lines`);
  } finally {
    publishing = false;
    await worker.catch(() => {});
    for (const controller of held) { controller.abort(); }
    await context.close();
  }
});
