'use strict';
// Topic streams through the client package (gateway/client, as its committed bundle) in
// headless Chromium, from a page on an origin of its own: three topics in one stream behind
// nginx in front of three Redis-backed nodes, the serving node killed before the first event
// and again mid-stream, with every event of every topic exactly once; a position too old
// for one of three topics (a node keeping 5 events per topic) giving a resync marker for
// that topic alone; and an anonymous topic streaming to a page with no token and no cookie.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('./lib/harness');

const PAGE = path.join(__dirname, 'pages', 'client.html');

const procs = new h.Processes();
let site;       // the test page's origin
let nodes;      // three nodes on one Redis, behind nginx
let lb;
let trimming;   // a node of its own on the same Redis: 5 events per topic, the anonymous topic `lobby`
let browser;

before(async () => {
  site = await h.startStaticServer(procs, { '/client.html': PAGE });
  const redis = await h.startRedis(procs);
  const shared = { demo: false, redisUrl: redis.url, redisPrefix: `${h.unique('topics')}:`, cors: [site.origin] };
  [nodes, trimming] = await Promise.all([
    Promise.all(['a', 'b', 'c'].map((n) => h.startGateway(procs, `gateway-topics-${n}`, shared))),
    h.startGateway(procs, 'gateway-topics-trimming', {
      ...shared, redisPrefix: `${h.unique('trim')}:`, args: ['--topic-stream-maxlen', '5', '--anonymous-topic', 'lobby'],
    }),
  ]);
  lb = await h.startNginx(procs, nodes);
  browser = await h.launchBrowser(procs);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

async function clientPage(context) {
  const page = await h.newPage(context);
  await page.goto(`${site.origin}/client.html`);
  await h.waitInPage(page, 'the client module', () => window.ready === true);
  return page;
}

/** The headers of every GET the page makes to `pathname` (promises, in order). */
function recordRequests(page, pathname) {
  const seen = [];
  page.on('request', (request) => {
    if (request.method() === 'GET' && new URL(request.url()).pathname === pathname) { seen.push(request.allHeaders()); }
  });
  return seen;
}

const rec = (page, name) => page.evaluate((n) => {
  const r = window.topics[n];
  return { events: r.events, states: r.states, state: r.stream.state, lastEventId: r.stream.lastEventId, stats: { ...r.stream.stats } };
}, name);

/** The publisher's counters a recording holds for `topic`, in the order received. */
const counters = (events, topic, type = 'tick') => events.filter((e) => e.topic === topic && e.type === type).map((e) => e.n);

const COMPOSITE = /^t1\.[0-9a-z]{4}\.[0-9a-z]+(\.(_|[0-9a-z]+~[0-9a-z]+))+$/;

test('three topics in one stream behind nginx: the serving node is killed before the first event and again mid-stream; every event of every topic arrives once, in order', { timeout: 60_000 }, async () => {
  const prefix = h.unique('tb');
  const topics = ['a', 'b', 'c'].map((t) => `${prefix}.${t}`);
  const token = h.userToken(h.unique('tina'), 3600, { topics: [`${prefix}.*`] });
  const context = await browser.newContext();
  const alive = new Set(nodes);
  const serving = () => h.waitFor('one node to hold the stream', async () => {
    const live = Array.from(alive);
    const counts = await Promise.all(live.map((n) => h.metric(n.metricsUrl, 'sse_gateway_open_connections')));
    return counts.reduce((a, b) => a + b, 0) === 1 ? live[counts.indexOf(1)] : null;
  });
  const published = Object.fromEntries(topics.map((t) => [t, []]));
  let counter = 0;
  const publishRound = async (via) => {
    for (const topic of topics) {
      const n = ++counter;
      await h.publishTopic(via.url, topic, { type: 'tick', data: { n } });
      published[topic].push(n);
    }
  };
  const received = async () => (await rec(page, 'three')).events.length;
  let page;
  try {
    page = await clientPage(context);
    const requests = recordRequests(page, '/v1/topics/events');
    await page.evaluate(([g, t, tk]) => window.followTopics('three', { gateway: g, topics: t, token: tk }), [lb.url, topics, token]);
    // A fresh stream opens at the live edge with an id-only block: no event, but a position.
    await h.waitInPage(page, 'the stream to open with a position', () => window.topics.three.stream.lastEventId !== null);
    const edge = (await rec(page, 'three')).lastEventId;
    assert.match(edge, COMPOSITE);
    assert.equal(await received(), 0);

    // 1. Killed before the first event: the reconnection resumes from the id-only block's
    //    position, so what was published meanwhile is replayed, not skipped.
    const first = await serving();
    await procs.kill(first.child);
    alive.delete(first);
    const [survivorA, survivorB] = Array.from(alive);
    for (let i = 0; i < 3; i++) { await publishRound(survivorA); }
    await h.waitInPage(page, 'the reconnection and the 9 events', () => window.topics.three.stream.stats.opens === 2
      && window.topics.three.events.length === 9, undefined, 15_000);

    // 2. Killed mid-stream while a worker publishes to every topic all along (to a node
    //    that stays up: publishing is not what is tested).
    const second = await serving();
    const publisher = second === survivorA ? survivorB : survivorA;
    let publishing = true;
    const worker = (async () => {
      while (publishing) {
        await publishRound(publisher);
        await new Promise((resolve) => setTimeout(resolve, 15));   // pacing, not synchronisation
      }
    })();
    try {
      await h.waitFor('10 more events on the page', async () => (await received()) >= 19);
      await procs.kill(second.child);
      alive.delete(second);
      await h.waitInPage(page, 'the second reconnection', () => window.topics.three.stream.stats.opens === 3, undefined, 15_000);
      const at = counter;
      await h.waitFor('30 more events after it', async () => counter >= at + 30 && (await received()) >= at + 10);
    } finally {
      publishing = false;
      await worker;
    }
    await h.waitFor('every event on the page', async () => (await received()) >= counter, { timeout: 10_000 });

    const seen = await rec(page, 'three');
    assert.ok(counter >= 60 && counter < 900, `published ${counter}`);
    for (const topic of topics) {
      assert.deepEqual(counters(seen.events, topic), published[topic], `${topic}: every event exactly once, in order`);
    }
    assert.equal(seen.events.length, counter, 'no event of another topic, no resync marker');
    assert.equal(seen.stats.duplicates, 0);
    assert.equal(seen.stats.resyncs, 0);
    assert.equal(seen.stats.opens, 3, 'two reconnections, by the client itself');
    assert.ok(seen.events.every((e) => COMPOSITE.test(e.id)), 'every event carries a composite id');
    // Each attempt sent back, verbatim, the position it had: none (fresh), the id-only
    // block's, then the id of the last event before the second kill.
    const sent = (await Promise.all(requests)).map((r) => r['last-event-id']);
    assert.equal(sent.length, 3, JSON.stringify(sent));
    assert.deepEqual(sent.slice(0, 2), [undefined, edge]);
    assert.ok(seen.events.some((e) => e.id === sent[2]), `resumed from an id the stream sent: ${sent[2]}`);
    assert.equal(await h.metric(publisher.metricsUrl, 'sse_gateway_open_connections'), 1);
    // The browser reports each stream the kills broke, and nothing else.
    assert.deepEqual(page.consoleLines, Array(2).fill('error: Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING'));
  } finally {
    await context.close();
  }
});

test('a position too old for one of three topics: a resync marker for that topic alone, the others replay exactly what they missed', { timeout: 45_000 }, async () => {
  const prefix = h.unique('tc');
  const [x, y, z] = ['x', 'y', 'z'].map((t) => `${prefix}.${t}`);
  const token = h.userToken(h.unique('rita'), 3600, { topics: [`${prefix}.*`] });
  const pub = (topic, n) => h.publishTopic(trimming.url, topic, { type: 'tick', data: { n } });
  const context = await browser.newContext();
  try {
    for (const topic of [x, y, z]) { await pub(topic, 1); await pub(topic, 2); }
    const page = await clientPage(context);
    const requests = recordRequests(page, '/v1/topics/events');
    const follow = (name, extra = {}) => page.evaluate(([n, g, t, tk, e]) => window.followTopics(n, { gateway: g, topics: t, token: tk, ...e }),
      [name, trimming.url, [x, y, z], token, extra]);
    await follow('before');
    await h.waitInPage(page, 'the stream to open', () => window.topics.before.stream.lastEventId !== null);
    for (const topic of [x, y, z]) { await pub(topic, 3); }
    await h.waitInPage(page, 'three live events', () => window.topics.before.events.length === 3);
    const position = (await rec(page, 'before')).lastEventId;
    await page.evaluate(() => window.topics.before.stream.close());

    // Away: `y` moves on by 300 events (Redis trims `MAXLEN ~ 5` by whole nodes of 100
    // entries, so it takes well over 100 for the position to be trimmed), x and z by 2.
    for (let n = 4; n < 304; n += 20) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => pub(y, n + i)));
    }
    for (const topic of [x, z]) { await pub(topic, 4); await pub(topic, 5); }

    await follow('after', { lastEventId: position });
    await h.waitInPage(page, 'the resync marker for y (its history trimmed) and x and z replayed', ([ty]) => {
      const events = window.topics.after.events;
      return events.some((e) => e.type === 'resync' && e.topic === ty) && events.filter((e) => e.type === 'tick').length === 4;
    }, [y]);
    for (const topic of [x, y, z]) { await pub(topic, topic === y ? 304 : 6); }
    await h.waitInPage(page, 'the live events', () => window.topics.after.events.filter((e) => e.type === 'tick').length === 7);

    const seen = await rec(page, 'after');
    assert.deepEqual(seen.events.filter((e) => e.type === 'resync').map((e) => [e.topic, e.resync]), [[y, true]], 'one marker, for y only');
    assert.deepEqual(counters(seen.events, x), [4, 5, 6]);
    assert.deepEqual(counters(seen.events, z), [4, 5, 6]);
    assert.deepEqual(counters(seen.events, y), [304], 'y goes on from its live edge');
    const marker = seen.events.findIndex((e) => e.type === 'resync');
    assert.ok(marker < seen.events.findIndex((e) => e.topic === y && e.type === 'tick'), 'the marker comes before y\'s next event');
    assert.ok(seen.events.every((e) => COMPOSITE.test(e.id)));
    assert.equal(seen.stats.resyncs, 1);
    assert.equal(seen.stats.duplicates, 0);
    assert.equal(seen.stats.opens, 1);
    const sent = (await Promise.all(requests)).map((r) => r['last-event-id']);
    assert.deepEqual(sent, [undefined, position], 'the composite position sent back verbatim');
    assert.deepEqual(page.consoleLines, []);
  } finally {
    await context.close();
  }
});

test('an anonymous topic streams to a page with no token; the client sends no cookie either, where a stale one would be refused', { timeout: 30_000 }, async () => {
  const context = await browser.newContext();
  try {
    // An expired session cookie of the gateway's host (the page's host too: cookies do not
    // care about ports), as a signed-out visitor may still carry.
    await h.setTokenCookie(context, trimming.url, h.userToken(h.unique('gone'), -60));
    const page = await clientPage(context);
    const requests = recordRequests(page, '/v1/topics/lobby/events');
    await page.evaluate((g) => {
      window.followTopics('anonymous', { gateway: g, topic: 'lobby', anonymous: true });
      window.followTopics('cookie', { gateway: g, topic: 'lobby' });            // the cookie mode sends it
      window.plainTopic(`${g}/v1/topics/lobby/events`, 'tick');                // EventSource without credentials
    }, trimming.url);
    await h.waitInPage(page, 'the anonymous streams to open, the cookie one to stop', () => window.topics.anonymous.stream.lastEventId !== null
      && window.plainTopicSource.opens === 1 && window.topics.cookie.stream.state === 'stopped');
    const ns = [101, 102, 103];
    for (const n of ns) { await h.publishTopic(trimming.url, 'lobby', { type: 'tick', data: { n } }); }
    await h.waitInPage(page, 'three events on both', () => window.topics.anonymous.events.length === 3 && window.plainTopicSource.events.length === 3);

    const anonymous = await rec(page, 'anonymous');
    assert.deepEqual(counters(anonymous.events, 'lobby'), ns);
    assert.equal(anonymous.state, 'open');
    assert.deepEqual(await page.evaluate(() => window.plainTopicSource.events.map((e) => e.n)), ns);
    const cookie = await rec(page, 'cookie');
    assert.deepEqual(cookie.states.at(-1), { state: 'stopped', status: 401, code: 'token_expired' });
    const sent = (await Promise.all(requests)).map((r) => [Boolean(r.cookie), Boolean(r.authorization)]);
    assert.equal(sent.length, 3);
    assert.equal(sent.filter(([c, a]) => !c && !a).length, 2, 'the anonymous client and EventSource send no credential');
    assert.equal(sent.filter(([c]) => c).length, 1, 'only the cookie mode sent the cookie');
  } finally {
    await context.close();
  }
});
