'use strict';
// HTTPS with HTTP/2 on the gateway's own listener (--tls-cert/--tls-key), in headless
// Chromium: a page on the gateway's HTTPS origin opens ten EventSources at once — more than
// the six connections per host that HTTP/1.1 allows — and all ten receive, over h2
// (`nextHopProtocol === "h2"`). The certificate is signed by a CA made for the test; this
// test's browser alone is told to accept that one certificate (its public key's hash,
// --ignore-certificate-errors-spki-list), nothing else.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./lib/harness');

const STREAMS = 10;

const procs = new h.Processes();
let gateway;
let browser;

before(async () => {
  const tls = h.makeTestCertificate(procs);
  gateway = await h.startGateway(procs, 'gateway-https', { demo: false, tls });
  browser = await h.launchBrowser(procs, [`--ignore-certificate-errors-spki-list=${tls.spki}`]);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

test('ten EventSources to one HTTPS origin at once all receive, over h2', { timeout: 45_000 }, async () => {
  const user = h.unique('hana');
  const jobs = Array.from({ length: STREAMS }, (_, i) => h.unique(`render${i}`));
  const context = await browser.newContext();
  try {
    const page = await h.newPage(context);
    // What the network layer says of each EventSource response (its protocol), beside
    // what the page itself can see (Resource Timing, once a response is complete).
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    const protocols = [];
    cdp.on('Network.responseReceived', (event) => {
      if (event.type === 'EventSource') { protocols.push(event.response.protocol); }
    });
    // A page of the HTTPS origin itself: its requests are same-origin.
    const landing = await page.goto(`${gateway.url}/healthz`);
    assert.equal(landing.status(), 200);
    assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');

    await page.evaluate(([token]) => {
      window.post = async (job, body) => {
        const response = await fetch(`/v1/jobs/${encodeURIComponent(job)}/events`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        if (response.status !== 201) { throw new Error(`publish to ${job}: ${response.status} ${await response.text()}`); }
        return (await response.json()).id;
      };
    }, [h.userToken('browser-test-worker', 3600, { role: 'publisher' })]);
    const queued = await page.evaluate(([js, owner]) => Promise.all(js.map((job, i) => window.post(job, { owner, type: 'stage', data: { stage: `queued ${i}` } }))), [jobs, user]);
    assert.equal(queued.length, STREAMS);

    // Ten streams, all opened at once.
    await page.evaluate(([js, token]) => {
      window.seen = {};
      window.sources = js.map((job) => {
        const seen = { events: [], opened: 0 };
        window.seen[job] = seen;
        const source = new EventSource(`/v1/jobs/${encodeURIComponent(job)}/events?token=${encodeURIComponent(token)}`);
        source.onopen = () => { seen.opened += 1; };
        for (const type of ['status', 'progress', 'complete']) {
          source.addEventListener(type, (event) => seen.events.push([type, event.lastEventId]));
        }
        return source;
      });
    }, [jobs, h.userToken(user)]);
    await h.waitInPage(page, `all ${STREAMS} streams to open and get their status`,
      (n) => Object.values(window.seen).filter((s) => s.events.length === 1 && s.events[0][0] === 'status').length === n, STREAMS);
    assert.equal(await h.metric(gateway.metricsUrl, 'sse_gateway_open_connections'), STREAMS, 'ten streams open on the node at once');
    const tcp = await h.metric(gateway.metricsUrl, 'sse_gateway_tcp_connections');
    assert.ok(tcp <= 2, `the streams share a connection (${tcp} TCP connections for ${STREAMS} streams)`);

    // A publish to each job while all ten are open: each stream receives its own.
    const progress = await page.evaluate((js) => Promise.all(js.map((job) => window.post(job, { type: 'progress', data: { progress: 50 } }))), jobs);
    await h.waitInPage(page, `a progress event on every one of the ${STREAMS} streams`,
      (n) => Object.values(window.seen).filter((s) => s.events.length === 2).length === n, STREAMS);
    const seen = await page.evaluate(() => window.seen);
    jobs.forEach((job, i) => {
      assert.deepEqual(seen[job].events, [['status', queued[i]], ['progress', progress[i]]], `${job}: its status, then its progress`);
    });

    // The jobs complete: each stream ends, and EventSource stops on the next answer (204).
    await page.evaluate((js) => Promise.all(js.map((job) => window.post(job, { type: 'complete', data: {} }))), jobs);
    await h.waitInPage(page, 'every EventSource to stop', () => window.sources.every((s) => s.readyState === EventSource.CLOSED), undefined, 15_000);
    const timing = await page.evaluate(() => performance.getEntriesByType('resource')
      .filter((entry) => new URL(entry.name).pathname.endsWith('/events'))
      .map((entry) => entry.nextHopProtocol));
    assert.ok(timing.length >= STREAMS, `a Resource Timing entry per stream (${timing.length})`);
    assert.deepEqual([...new Set(timing)], ['h2'], `nextHopProtocol of every stream: ${timing}`);
    assert.ok(protocols.length >= STREAMS, `the network layer saw every stream (${protocols.length})`);
    assert.deepEqual([...new Set(protocols)], ['h2'], `protocol of every EventSource response: ${protocols}`);
    assert.ok(await h.metric(gateway.metricsUrl, 'sse_gateway_tls_handshakes_total') >= 1);
  } finally {
    await context.close();
  }
});
