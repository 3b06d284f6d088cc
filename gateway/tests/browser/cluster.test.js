'use strict';
// The dashboard through nginx in front of two gateway nodes sharing one Redis: the node
// that serves the page's stream is killed (SIGKILL) while a worker keeps publishing; the
// page's client reconnects through nginx to the other node and resumes with Last-Event-ID,
// and every event shows exactly once, in order.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./lib/harness');

const procs = new h.Processes();
let redis;
let nodes;
let lb;
let browser;

before(async () => {
  redis = await h.startRedis(procs);
  const redisPrefix = `${h.unique('browser')}:`;
  nodes = await Promise.all(['node-a', 'node-b'].map((name) => h.startGateway(procs, `gateway-${name}`, { redisUrl: redis.url, redisPrefix })));
  lb = await h.startNginx(procs, nodes);
  browser = await h.launchBrowser(procs);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

// The page holds two streams, the user stream and the announcements feed (a topic), maybe
// on different nodes: the node serving the user stream is the one that logged its opening.
const userStreams = (node, user) => node.lines.filter((l) => l.includes('"message":"stream opened"') && l.includes('"kind":"user"')
  && l.includes(`"user":"${user}"`));

test('killing the node that serves the page: it reconnects through nginx and misses nothing', { timeout: 60_000 }, async () => {
  const user = h.unique('heidi');
  const job = h.unique('render');
  const context = await browser.newContext();
  try {
    const page = await h.newPage(context);
    await page.goto(`${lb.url}/`);
    await h.signIn(page, user);

    const serving = await h.waitFor('one node to hold the user stream', () => {
      const holding = nodes.filter((n) => userStreams(n, user).length === 1);
      return holding.length === 1 ? holding[0] : null;
    });
    const survivor = nodes.find((n) => n !== serving);

    // A worker publishes all along (to the surviving node: publishing is not what is tested).
    const published = [];
    let publishing = true;
    const worker = (async () => {
      await h.publish(survivor.url, job, { owner: user, type: 'progress', data: { progress: 1, stage: 'Encoding' } });
      while (publishing) {
        const message = `frame ${published.length + 1}`;
        await h.publish(survivor.url, job, { type: 'log', data: { message } });
        published.push(message);
        await new Promise((resolve) => setTimeout(resolve, 20));   // pacing, not synchronisation
      }
    })();
    const logged = () => page.evaluate((id) => window.dashboard.jobs.get(id)?.logs.length || 0, job);
    try {
      await h.waitFor('the page to show 10 lines', async () => (await logged()) >= 10);
      await procs.kill(serving.child);
      await h.waitInPage(page, 'the page to notice', () => window.dashboard.history.includes('reconnecting'));
      await h.waitInPage(page, 'the page to reconnect by itself', () => window.dashboard.stats.opens >= 2, undefined, 15_000);
      const at = published.length;
      await h.waitFor('20 more events after the reconnect', async () => published.length >= at + 20 && (await logged()) >= at + 10);
    } finally {
      publishing = false;
      await worker;
    }
    await h.publish(survivor.url, job, { type: 'complete', data: { result: { frames: published.length } } });

    await h.waitInPage(page, 'the completed card', (id) => {
      const card = document.querySelector(`article.job[data-job-id="${id}"]`);
      return card && card.dataset.status === 'completed';
    }, job);
    const seen = await page.evaluate((id) => ({
      log: window.dashboard.jobs.get(id).logs.map((l) => l.message),
      stats: window.dashboard.stats,
      history: window.dashboard.history,
    }), job);
    assert.ok(published.length >= 30 && published.length < 200, `published ${published.length}`);
    assert.deepEqual(seen.log, published, 'every event exactly once, in order');
    assert.equal(seen.stats.duplicates, 0);
    assert.equal(seen.stats.resyncs, 0);
    assert.equal(seen.stats.opens, 2, 'one reconnection, by the client itself');
    assert.ok(seen.history.includes('resumed'), seen.history.join(','));
    // The survivor resumed it.
    assert.equal(userStreams(survivor, user).length, 1);
    assert.match(userStreams(survivor, user)[0], /"resumed_after":"\d+-\d+"/);
    const card = await h.readCard(page, job);
    assert.deepEqual([card.progress, card.result], [100, [['frames', published.length.toLocaleString('en')]]]);
  } finally {
    await context.close();
  }
});
