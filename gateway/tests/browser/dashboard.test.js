'use strict';
// The dashboard in headless Chromium against one gateway on the embedded broker (--demo
// serves the page and the client bundle; the demo publisher works for `demo`, our jobs
// belong to other users, and it announces on the topic `demo.announcements`): signing in by
// itself, jobs progressing to their exact final state, the detail view, a session that runs
// out and is renewed with nothing lost, the announcements feed (the latest one at once on
// load, then live), and the board after many jobs — filter, summaries, notifications and
// announcements clear of the cards — at desktop and phone widths, with screenshots in
// artifacts/.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./lib/harness');

const procs = new h.Processes();
let gateway;
let browser;

const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

before(async () => {
  // --jwt-leeway 0s: a token's stream ends right at its `exp`.
  gateway = await h.startGateway(procs, 'gateway-dashboard', { args: ['--jwt-leeway', '0s'] });
  browser = await h.launchBrowser(procs);
  fs.mkdirSync(h.ARTIFACTS, { recursive: true });
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

const FEED = '/v1/topics/demo.announcements/events';

/** Every response the page gets, as "<status> <path>". */
function recordResponses(page) {
  const seen = [];
  page.on('response', (r) => seen.push(`${r.status()} ${new URL(r.url()).pathname}`));
  return seen;
}

/** The responses of one path, and of the others. */
const only = (responses, path) => responses.filter((r) => r.endsWith(` ${path}`));
const besides = (responses, path) => responses.filter((r) => !r.endsWith(` ${path}`));

/** Opens the dashboard in a fresh context and switches to `user`. */
async function pageAs(user, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport });
  const page = await h.newPage(context);
  await page.goto(`${gateway.url}/`);
  await h.signIn(page, user);
  return { context, page };
}

const cardStatus = (page, pairs) => h.waitInPage(page, `cards ${JSON.stringify(pairs)}`, (ids) => ids.every(([id, status]) => {
  const card = document.querySelector(`article.job[data-job-id="${id}"]`);
  return card && card.dataset.status === status;
}), pairs);

test('a first visit signs in as demo by itself: no refusal, no error on screen, the demo jobs live', { timeout: 45_000 }, async () => {
  const context = await browser.newContext({ viewport: DESKTOP });
  try {
    const page = await h.newPage(context);
    const responses = recordResponses(page);
    await page.goto(`${gateway.url}/`);
    await h.waitInPage(page, 'the demo stream', () => window.dashboard.state === 'connected' && window.dashboard.user === 'demo');
    await h.waitInPage(page, 'the announcements feed', () => window.dashboard.announcements.state === 'live');
    await h.waitInPage(page, 'a demo job on the board', () => document.querySelectorAll('#jobs article.job').length > 0, undefined, 15_000);
    const shown = await page.evaluate(() => ({
      history: window.dashboard.history,
      login: !document.querySelector('#login').hidden,
      pill: document.querySelector('#connection').dataset.state,
      who: document.querySelector('#who').textContent,
      session: JSON.parse(localStorage.getItem('sse-dashboard:session')),
    }));
    assert.deepEqual(shown.history, ['connecting', 'connected'], 'never "stopped"');
    assert.equal(shown.login, false);
    assert.equal(shown.pill, 'connected');
    assert.equal(shown.who, 'signed in as demo');
    assert.equal(shown.session.user, 'demo');
    // The user stream and the feed open side by side after the sign-in, in either order.
    assert.deepEqual(besides(responses, FEED), ['200 /', '200 /assets/sse-client.js', '200 /demo/login', '200 /v1/users/me/events']);
    assert.deepEqual(only(responses, FEED), [`200 ${FEED}`]);
    assert.ok(responses.indexOf(`200 ${FEED}`) > responses.indexOf('200 /demo/login'));
    assert.deepEqual(page.consoleLines, [], 'nothing in the console');

    // The gateway serves the bundle that the client package builds (the check in `make
    // test-client` holds it to the sources).
    const bundle = await fetch(`${gateway.url}/assets/sse-client.js`);
    assert.equal(bundle.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(await bundle.text(), fs.readFileSync(h.CLIENT_BUNDLE, 'utf8'));

    // Back within the session: straight to the stream, no sign-in.
    responses.length = 0;
    await page.reload();
    await h.waitInPage(page, 'the stream again', () => window.dashboard.state === 'connected' && window.dashboard.user === 'demo'
      && window.dashboard.announcements.state === 'live');
    assert.deepEqual(besides(responses, FEED), ['200 /', '200 /assets/sse-client.js', '200 /v1/users/me/events']);
    assert.deepEqual(only(responses, FEED), [`200 ${FEED}`]);
    assert.deepEqual(await page.evaluate(() => window.dashboard.history), ['connecting', 'connected']);
  } finally {
    await context.close();
  }
});

test('jobs progress on the board to their exact final state', { timeout: 45_000 }, async () => {
  const user = h.unique('alice');
  const { context, page } = await pageAs(user);
  try {
    const [render, importJob, build, nasty] = ['render', 'import', 'build', 'nasty'].map((k) => h.unique(`${k}`));
    const pub = (job, type, data, extra = {}) => h.publish(gateway.url, job, { owner: user, type, data, ...extra });

    // Three jobs interleaved, as a worker pool would publish them.
    await pub(render, 'progress', { progress: 5, stage: 'Downloading' });
    await pub(importJob, 'progress', { progress: 10, stage: 'Fetching' });
    await pub(build, 'stage', { stage: 'Checkout' });
    await pub(render, 'log', { level: 'info', message: 'fetched source.mov' });
    await pub(importJob, 'log', { level: 'warn', message: 'row 17 skipped' });
    await pub(render, 'progress', { progress: 45, stage: 'Encoding' });
    await pub(build, 'progress', { progress: 30, stage: 'Compile' });
    await pub(build, 'log', { message: 'cc -O2 main.c' });
    await h.waitInPage(page, 'three cards', () => document.querySelectorAll('#jobs article.job').length === 3);
    assert.deepEqual(await h.readCard(page, render), {
      status: 'active', statusText: 'active', compact: false, progress: 45, stage: 'Encoding',
      log: ['fetched source.mov'], logHtml: ['fetched source.mov'], result: null, error: null,
    });

    await pub(render, 'log', { level: 'info', message: 'encoded 1200 frames' });
    await pub(importJob, 'progress', { progress: 60, stage: 'Importing' });
    await pub(render, 'progress', { progress: 90, stage: 'Uploading' });
    await pub(importJob, 'failed', { error: 'disk full on /var/imports' });
    await pub(build, 'log', { message: 'ld -o app' });
    await pub(render, 'complete', { result: { outputPath: 'renders/clip-7.mp4', durationSeconds: 42 } });
    await cardStatus(page, [[render, 'completed'], [importJob, 'failed'], [build, 'active']]);

    await pub(build, 'cancelled', { message: 'superseded by a newer commit' });
    // Text that would be markup if it were ever put in innerHTML.
    await pub(nasty, 'log', { level: 'error', message: '<img src=x onerror="window.pwned=1"><b>bold</b> & co' });
    await h.notify(gateway.url, user, { type: 'notice', data: { text: 'Your <script>export</script> is ready' } });
    await cardStatus(page, [[render, 'completed'], [importJob, 'failed'], [build, 'cancelled']]);
    await h.waitInPage(page, 'the last log line and the toast', (id) => {
      const li = document.querySelector(`article.job[data-job-id="${id}"] ol.log > li`);
      return li && document.querySelector('#toasts .toast');
    }, nasty);

    // Finished jobs are compact cards: a summary of the result, or the error; no log.
    assert.deepEqual(await h.readCard(page, render), {
      status: 'completed', statusText: 'completed', compact: true, progress: 100, stage: null, log: [], logHtml: [],
      result: [['output path', 'renders/clip-7.mp4'], ['duration seconds', '42']], error: null,
    });
    assert.deepEqual(await h.readCard(page, importJob), {
      status: 'failed', statusText: 'failed', compact: true, progress: 60, stage: null, log: [], logHtml: [],
      result: null, error: 'disk full on /var/imports',
    });
    assert.deepEqual(await h.readCard(page, build), {
      status: 'cancelled', statusText: 'cancelled', compact: true, progress: 30, stage: null, log: [], logHtml: [],
      result: null, error: null,
    });
    const nastyCard = await h.readCard(page, nasty);
    assert.deepEqual(nastyCard.log, ['<img src=x onerror="window.pwned=1"><b>bold</b> & co']);
    assert.deepEqual(nastyCard.logHtml, ['&lt;img src=x onerror="window.pwned=1"&gt;&lt;b&gt;bold&lt;/b&gt; &amp; co']);
    const shown = await page.evaluate((ids) => ({
      pwned: window.pwned === 1,
      toast: document.querySelector('#toasts .toast .toast-text').textContent,
      injected: document.querySelectorAll('#jobs img, #jobs b, #toasts script').length,
      running: Array.from(document.querySelectorAll('#active-grid article.job')).map((a) => a.dataset.jobId),
      finished: Array.from(document.querySelectorAll('#finished-grid article.job')).map((a) => a.dataset.jobId),
      logs: ids.map((id) => window.dashboard.jobs.get(id).logs.map((l) => l.message)),
      stats: window.dashboard.stats,
      state: window.dashboard.state,
    }), [render, importJob, build]);
    assert.equal(shown.pwned, false);
    assert.equal(shown.injected, 0);
    assert.equal(shown.toast, 'Your <script>export</script> is ready');
    // Running jobs first, then finished ones; each most recently updated first.
    assert.deepEqual(shown.running, [nasty]);
    assert.deepEqual(shown.finished, [build, render, importJob]);
    // Every log line once, in order (kept, if not shown, for finished jobs).
    assert.deepEqual(shown.logs, [['fetched source.mov', 'encoded 1200 frames'], ['row 17 skipped'], ['cc -O2 main.c', 'ld -o app']]);
    assert.equal(shown.stats.duplicates, 0);
    assert.equal(shown.stats.opens, 1);
    assert.equal(shown.state, 'connected');
  } finally {
    await context.close();
  }
});

test('the detail view shows a job\'s whole log live, then "finished", and no request after the end', { timeout: 45_000 }, async () => {
  const user = h.unique('dora');
  const { context, page } = await pageAs(user);
  try {
    const job = h.unique('render');
    const pub = (type, data) => h.publish(gateway.url, job, { owner: user, type, data });
    const lines = [];
    await pub('progress', { progress: 10, stage: 'Decoding' });
    for (let i = 1; i <= 7; i++) {
      lines.push(`frame batch ${i}/12`);
      await pub('log', { message: lines[lines.length - 1] });
    }
    await h.waitInPage(page, 'the card', (id) => document.querySelectorAll(`article.job[data-job-id="${id}"] ol.log > li`).length === 3, job);
    // A running card shows the last three lines only.
    assert.deepEqual((await h.readCard(page, job)).log, lines.slice(-3));

    const streamResponses = [];
    page.on('response', (response) => {
      if (new URL(response.url()).pathname === `/v1/jobs/${job}/events`) { streamResponses.push(response.status()); }
    });
    await page.click(`article.job[data-job-id="${job}"] .meta`);
    assert.equal(new URL(page.url()).hash, `#/jobs/${job}`);
    // History from the first event, then live.
    await h.waitInPage(page, 'the detail view with the history', (n) => {
      const d = document.querySelector('#detail');
      return !d.hidden && d.dataset.stream === 'live' && d.querySelectorAll('ol.log > li').length === n;
    }, lines.length);
    assert.equal(await page.isVisible('#board'), false);

    for (let i = 8; i <= 12; i++) {
      lines.push(`frame batch ${i}/12`);
      await pub('log', { message: lines[lines.length - 1] });
    }
    await pub('progress', { progress: 80, stage: 'Muxing' });
    await h.waitInPage(page, 'live lines in the detail view', (n) => document.querySelectorAll('#detail ol.log > li').length === n, lines.length);
    await h.settled(page);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-detail.png'), fullPage: true });
    await pub('complete', { result: { outputPath: `renders/${job}.mp4`, frames: 1200 } });

    await h.waitInPage(page, 'the detail view to say finished', () => document.querySelector('#detail').dataset.stream === 'finished');
    const detail = await page.evaluate(() => {
      const d = document.querySelector('#detail');
      return {
        status: d.dataset.status,
        jobId: d.dataset.jobId,
        streamText: d.querySelector('.stream-state').textContent,
        progress: d.querySelector('.progress-bar').dataset.progress,
        stage: d.querySelector('.stage').textContent,
        log: Array.from(d.querySelectorAll('ol.log > li')).map((li) => li.textContent),
        summary: Array.from(d.querySelectorAll('dl.summary dt')).map((dt) => [dt.textContent, dt.nextElementSibling.textContent]),
        json: d.querySelector('.result-json').textContent,
        state: window.dashboard.detail.stream.state,
        stats: window.dashboard.detail.stats,
      };
    });
    assert.deepEqual(detail, {
      status: 'completed', jobId: job, streamText: 'finished', progress: '100', stage: 'Muxing',
      log: lines, summary: [['output path', `renders/${job}.mp4`], ['frames', '1,200']],
      json: JSON.stringify({ outputPath: `renders/${job}.mp4`, frames: 1200 }, null, 2),
      state: 'finished',
      stats: { attempts: 1, opens: 1, events: 15, duplicates: 0, resyncs: 0, refreshes: 0, malformed: 0 },
    });
    // The client stopped at the terminal event: one request, no reconnection to get a 204.
    assert.deepEqual(streamResponses, [200]);
    // And nothing more over three `retry:` intervals (500 ms here).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(streamResponses, [200]);

    // A finished job opened afresh: the same history, the same end.
    streamResponses.length = 0;
    await page.reload();
    await h.waitInPage(page, 'the reopened detail view to say finished', (n) => {
      const d = document.querySelector('#detail');
      return d.dataset.stream === 'finished' && d.querySelectorAll('ol.log > li').length === n;
    }, lines.length);
    assert.deepEqual(streamResponses, [200]);

    // Back to the board: the detail stream is closed, the card is there.
    await page.click('#detail .back');
    await h.waitInPage(page, 'the board', () => !document.querySelector('#board').hidden && document.querySelector('#detail').hidden
      && window.dashboard.detail === null);
    assert.equal((await h.readCard(page, job)).status, 'completed');

    // A job that is not the user's: the detail stream is refused (404) and says so.
    const other = h.unique('secret');
    await h.publish(gateway.url, other, { owner: h.unique('mallory'), type: 'progress', data: { progress: 1 } });
    await page.goto(`${gateway.url}/#/jobs/${other}`);
    await h.waitInPage(page, 'the refused detail view', () => document.querySelector('#detail').dataset.stream === 'stopped');
    assert.equal(await page.textContent('#detail .stream-state'), 'stopped: no such job, or not yours');
    assert.equal(await page.textContent('#detail ol.log'), '');
  } finally {
    await context.close();
  }
});

test('a session that runs out: the stream ends at exp, gets 401, the page signs in again and resumes with nothing lost', { timeout: 45_000 }, async () => {
  const user = h.unique('bob');
  const job = h.unique('import');
  const context = await browser.newContext();
  try {
    // Signed in as bob earlier (the page remembers it), with a cookie that expires in 4 s.
    await h.setTokenCookie(context, gateway.url, h.userToken(user, 4));
    await context.addInitScript((u) => {
      if (!localStorage.getItem('sse-dashboard:session')) {
        localStorage.setItem('sse-dashboard:session', JSON.stringify({ gateway: '', user: u, until: Date.now() + 3_600_000 }));
      }
    }, user);
    const page = await h.newPage(context);
    const responses = recordResponses(page);
    await page.goto(`${gateway.url}/`);
    await h.waitInPage(page, 'the stream to open', (u) => window.dashboard.state === 'connected' && window.dashboard.user === u, user);

    // A worker publishes all along, across the end of the stream and the new sign-in.
    const published = [];
    const publishNext = async () => {
      const message = `line ${published.length + 1}`;
      await h.publish(gateway.url, job, { owner: user, type: 'log', data: { message } });
      published.push(message);
    };
    await h.waitFor('the stream to end, be refused and resume', async () => {
      await publishNext();
      return page.evaluate(() => window.dashboard.stats.opens >= 2);
    }, { timeout: 15_000, interval: 100 });
    for (let i = 0; i < 5; i++) { await publishNext(); }
    await h.publish(gateway.url, job, { type: 'complete', data: { result: { rows: published.length } } });

    await cardStatus(page, [[job, 'completed']]);
    const seen = await page.evaluate((id) => ({
      log: window.dashboard.jobs.get(id).logs.map((l) => l.message),
      stats: window.dashboard.stats,
      history: window.dashboard.history,
      user: window.dashboard.user,
      login: !document.querySelector('#login').hidden,
    }), job);
    assert.ok(published.length > 5, `published ${published.length}`);
    assert.deepEqual(seen.log, published, 'every event once, in order');
    assert.equal(seen.stats.duplicates, 0);
    assert.equal(seen.stats.opens, 2);
    assert.equal(seen.stats.refreshes, 1);
    assert.equal(seen.stats.resyncs, 0, 'history served the gap, no new snapshot');
    assert.equal(seen.user, user);
    assert.equal(seen.login, false);
    // The 401 shows as "connecting" while the page signs in again: never "stopped".
    assert.deepEqual(seen.history.slice(0, 4), ['connecting', 'connected', 'reconnecting', 'connecting']);
    assert.ok(seen.history.includes('resumed'), seen.history.join(','));
    assert.ok(!seen.history.includes('stopped'), seen.history.join(','));
    assert.deepEqual(besides(responses, FEED).filter((r) => !r.endsWith('.js') && r !== '200 /'), [
      '200 /v1/users/me/events', '401 /v1/users/me/events', '200 /demo/login', '200 /v1/users/me/events',
    ]);
    // The feed ended at the same expiry and resumed on the same sign-in (one /demo/login for both).
    await h.waitInPage(page, 'the feed to resume', () => window.dashboard.announcements.stream.stats.opens >= 2);
    assert.equal(only(responses, FEED).at(-1), `200 ${FEED}`);
    assert.deepEqual((await h.readCard(page, job)).result, [['rows', String(published.length)]]);
  } finally {
    await context.close();
  }
});

/** The announcements feed as it is on screen: every item, and the ones visible. */
function readFeed(page) {
  return page.evaluate(() => {
    const section = document.querySelector('#announcements');
    const items = Array.from(section.querySelectorAll('#feed > li'));
    const box = (n) => n.getBoundingClientRect();
    return {
      state: section.dataset.stream,
      items: items.map((li) => ({
        key: li.dataset.key,
        severity: li.dataset.severity,
        label: li.querySelector('.severity').textContent,
        title: li.querySelector('.title').textContent,
        text: li.querySelector('.text').textContent,
        visible: li.getClientRects().length > 0,
        border: getComputedStyle(li).borderLeftColor,
      })),
      more: section.querySelector('#feed-more').getClientRects().length > 0 ? section.querySelector('#feed-more').textContent : null,
      injected: section.querySelectorAll('img, b').length,
      box: { left: box(section).left, right: box(section).right, bottom: box(section).bottom },
      board: { left: box(document.querySelector('#board')).left, right: box(document.querySelector('#board')).right, top: box(document.querySelector('#board')).top },
      scrollWidth: document.scrollingElement.scrollWidth,
    };
  });
}

test('the announcements feed: the latest announcement at once on load, then live ones on top, severity shown, a handful kept, at desktop and phone widths', { timeout: 45_000 }, async () => {
  // The demo announces at start and then every 8 to 14 s: the topic's latest id is one the
  // page can only show by asking for what the topic keeps (a fresh topic stream starts after it).
  const token = h.userToken(h.unique('viewer'));
  const latest = await h.waitFor('the demo\'s first announcement', async () => {
    const state = await (await fetch(`${gateway.url}/v1/topics/demo.announcements`, { headers: { authorization: `Bearer ${token}` } })).json();
    return state.lastEventId !== '0-0' && state.lastEventId;
  });
  const { context, page } = await pageAs(h.unique('frank'));
  try {
    await h.waitInPage(page, `the latest announcement (${latest}) without waiting for the next`,
      (id) => document.querySelector(`#feed > li[data-key="${id}"]`), latest, 3000);
    let feed = await readFeed(page);
    assert.equal(feed.state, 'live');
    assert.ok(feed.items.length >= 1 && feed.items.length <= 5, `${feed.items.length} items`);
    assert.ok(feed.items.every((i) => ['info', 'warning'].includes(i.severity) && i.title && i.text), JSON.stringify(feed.items));

    // Live: six announcements of ours, with every severity the page styles (and markup that must stay text).
    const ours = [
      ['info', 'Deploy 1', 'Rolling out'], ['warning', 'Deploy 2', 'Slow nodes'], ['critical', 'Outage', 'Imports are down'],
      ['success', 'Recovered', 'Imports are back'], ['info', '<img src=x onerror="window.pwned=1">', '<b>not bold</b>'], ['warning', 'Last', 'The newest one'],
    ].map(([severity, title, text]) => ({ severity, title: `${title} ${h.unique('a').slice(2)}`, text }));
    const ids = [];
    for (const data of ours) {
      ids.push(await h.publishTopic(gateway.url, 'demo.announcements', { type: 'announcement', data }));
    }
    await h.waitInPage(page, 'our newest announcement on top', (id) => document.querySelector('#feed > li')?.dataset.key === id, ids.at(-1));
    await h.settled(page);
    feed = await readFeed(page);
    // A handful (5), newest first; the demo may have announced in between, never more than once.
    assert.equal(feed.items.length, 5);
    const shown = feed.items.filter((i) => ids.includes(i.key));
    assert.ok(shown.length >= 4, `${shown.length} of ours shown`);
    assert.deepEqual(shown.map((i) => i.key), ids.slice(-shown.length).reverse(), 'ours newest first');
    assert.deepEqual(shown.map((i) => [i.severity, i.label, i.title, i.text]),
      ours.slice(-shown.length).reverse().map((a) => [a.severity, a.severity, a.title, a.text]));
    assert.equal(feed.injected, 0);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    // Each severity has its own colour; unknown ones would get the accent (info's).
    const colour = Object.fromEntries(feed.items.map((i) => [i.severity, i.border]));
    assert.equal(new Set(['warning', 'critical', 'success', 'info'].map((sv) => colour[sv])).size, 4, JSON.stringify(colour));
    // Desktop: beside the board, all five visible.
    assert.ok(feed.box.left >= feed.board.right, 'the feed is beside the board');
    assert.ok(feed.items.every((i) => i.visible));
    assert.equal(feed.more, null);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-announcements.png') });

    // Phone: above the board, the newest only, the others behind a button; nothing wider than the screen.
    await page.setViewportSize(PHONE);
    await h.settled(page);
    feed = await readFeed(page);
    assert.ok(feed.box.bottom <= feed.board.top, 'the feed is above the board');
    assert.deepEqual(feed.items.map((i) => i.visible), [true, false, false, false, false]);
    assert.equal(feed.more, 'Show 4 earlier');
    assert.ok(feed.scrollWidth <= PHONE.width, `no horizontal scrolling (${feed.scrollWidth})`);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-phone-announcements.png') });
    await page.click('#feed-more');
    feed = await readFeed(page);
    assert.ok(feed.items.every((i) => i.visible));
    assert.equal(feed.more, 'Show the newest only');
    assert.ok(feed.scrollWidth <= PHONE.width);
    const stats = await page.evaluate(() => window.dashboard.announcements.stream.stats);
    assert.deepEqual([stats.opens, stats.duplicates, stats.resyncs], [1, 0, 0]);
    assert.deepEqual(page.consoleLines, []);
  } finally {
    await context.close();
  }
});

/** Layout facts of the board as it is on screen now. */
function layout(page) {
  return page.evaluate(() => {
    const box = (node) => { const r = node.getBoundingClientRect(); return { left: r.left, top: r.top + scrollY, right: r.right, bottom: r.bottom + scrollY }; };
    const visible = (node) => node.getClientRects().length > 0;
    const cards = Array.from(document.querySelectorAll('#jobs article.job')).filter(visible).map(box);
    const toasts = Array.from(document.querySelectorAll('#toasts .toast')).filter(visible).map(box);
    const announcements = Array.from(document.querySelectorAll('#feed > li')).filter(visible).map(box);
    const overlaps = [];
    for (const t of [...toasts, ...announcements]) {
      for (const c of cards) {
        if (t.left < c.right && c.left < t.right && t.top < c.bottom && c.top < t.bottom) { overlaps.push([t, c]); }
      }
    }
    const wide = Array.from(document.querySelectorAll('body *')).filter((n) => visible(n) && n.getBoundingClientRect().right > innerWidth + 0.5)
      .map((n) => n.id || n.className || n.tagName);
    return {
      width: innerWidth,
      scrollWidth: document.scrollingElement.scrollWidth,
      height: document.scrollingElement.scrollHeight,
      cards: cards.length,
      toasts: toasts.length,
      overlaps,
      wide,
      running: document.querySelectorAll('#active-grid article.job').length,
      finished: document.querySelectorAll('#finished-grid article.job').length,
      more: document.querySelector('#more').hidden ? null : document.querySelector('#more').textContent,
      statuses: Array.from(document.querySelectorAll('#jobs article.job')).map((a) => a.dataset.status),
      counts: Object.fromEntries(Array.from(document.querySelectorAll('#filters button')).map((b) => [b.dataset.filter, Number(b.querySelector('.n').textContent)])),
    };
  });
}

test('after many jobs the board stays usable: filter, summaries, a cap on finished cards, notifications clear of the cards, at desktop and phone widths', { timeout: 60_000 }, async () => {
  const user = h.unique('erin');
  const { context, page } = await pageAs(user);
  try {
    // 70 jobs, as a few minutes of a busy worker pool: 58 completed, 5 failed, 3 cancelled, 4 running.
    const jobs = Array.from({ length: 70 }, (_, i) => `job-${String(i + 1).padStart(2, '0')}-${h.unique('x').slice(2)}`);
    const expected = {};
    for (const [i, job] of jobs.entries()) {
      const pub = (type, data) => h.publish(gateway.url, job, { owner: user, type, data });
      await pub('progress', { progress: 20 + (i % 7) * 10, stage: ['Fetching', 'Encoding', 'Uploading'][i % 3] });
      if (i >= 66) { expected[job] = 'active'; continue; }
      if (i % 13 === 5) {
        await pub('failed', { error: `worker ${i} ran out of disk space while writing a very long temporary file name that wraps` });
        expected[job] = 'failed';
      } else if (i % 20 === 7) {
        await pub('cancelled', { message: 'superseded' });
        expected[job] = 'cancelled';
      } else {
        await pub('complete', { result: { outputPath: `renders/a/rather/deep/directory/structure/clip-${i}-final-final.mp4`, durationSeconds: i, bytes: 1000 * i, codec: 'h264', extra: { nested: true } } });
        expected[job] = 'completed';
      }
    }
    for (let i = 1; i <= 3; i++) {
      await h.notify(gateway.url, user, { type: 'notice', data: { text: `Export ${i} of 3 is ready for download: a notification long enough to wrap onto a second line` } });
    }
    const count = (s) => Object.values(expected).filter((v) => v === s).length;
    assert.deepEqual([count('completed'), count('failed'), count('cancelled'), count('active')], [58, 5, 3, 4]);
    await h.waitInPage(page, 'every job and notification', (n) => window.dashboard.jobs.size === n && document.querySelectorAll('#toasts .toast').length === 3, jobs.length);
    await h.settled(page);

    // All: the running cards, then only the 12 most recent finished ones.
    let shown = await layout(page);
    assert.deepEqual(shown.counts, { all: 70, active: 4, finished: 61, failed: 5 });
    assert.deepEqual([shown.running, shown.finished, shown.more], [4, 12, 'Show all 66 finished']);
    assert.deepEqual(shown.overlaps, [], 'no notification or announcement covers a card');
    assert.equal(shown.toasts, 3);
    assert.ok(shown.scrollWidth <= shown.width, `no horizontal scrolling (${shown.scrollWidth} > ${shown.width}: ${shown.wide})`);
    assert.ok(shown.height < 3 * DESKTOP.height, `the page stays short: ${shown.height}px`);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-desktop.png'), fullPage: true });
    // A finished card reads as a summary: four fields, then how many more.
    const latest = jobs[65];
    assert.deepEqual((await h.readCard(page, latest)).result, [
      ['output path', 'renders/a/rather/deep/directory/structure/clip-65-final-final.mp4'],
      ['duration seconds', '65'], ['bytes', '65,000'], ['codec', 'h264'],
    ]);
    assert.equal(await page.textContent(`article.job[data-job-id="${latest}"] dd.more`), '+1 more field');

    // The filters.
    await page.click('#filters button[data-filter="failed"]');
    shown = await layout(page);
    assert.deepEqual([shown.cards, [...new Set(shown.statuses)], shown.more], [5, ['failed'], null]);
    await h.settled(page);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-failed.png'), fullPage: true });
    await page.click('#filters button[data-filter="active"]');
    shown = await layout(page);
    assert.deepEqual([shown.cards, [...new Set(shown.statuses)], shown.more], [4, ['active'], null]);
    await page.click('#filters button[data-filter="finished"]');
    shown = await layout(page);
    assert.deepEqual([shown.cards, [...new Set(shown.statuses)].sort(), shown.more], [24, ['cancelled', 'completed'], 'Show 24 more (37 hidden)']);
    await page.click('#more');
    shown = await layout(page);
    assert.deepEqual([shown.cards, shown.more], [48, 'Show 13 more (13 hidden)']);
    await page.click('#filters button[data-filter="all"]');
    shown = await layout(page);
    assert.deepEqual([shown.running, shown.finished], [4, 12]);

    // Live updates keep their place: a running job that finishes moves to the finished group.
    const running = jobs[69];
    await h.publish(gateway.url, running, { type: 'complete', data: { result: 'done' } });
    await cardStatus(page, [[running, 'completed']]);
    shown = await layout(page);
    assert.deepEqual([shown.running, shown.finished, shown.counts.active], [3, 12, 3]);
    assert.equal(await page.evaluate(() => document.querySelector('#finished-grid article.job').dataset.jobId), running);

    // Phone width: one column, the newest notification above the board, nothing wider than the screen.
    await page.setViewportSize(PHONE);
    await h.settled(page);
    shown = await layout(page);
    assert.ok(shown.scrollWidth <= PHONE.width, `no horizontal scrolling at ${PHONE.width}px (${shown.scrollWidth}: ${shown.wide})`);
    assert.deepEqual(shown.wide, []);
    assert.equal(shown.toasts, 1, 'the newest notification only');
    assert.deepEqual(shown.overlaps, []);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
    await page.click('#filters button[data-filter="failed"]');
    shown = await layout(page);
    assert.deepEqual([shown.cards, shown.scrollWidth <= PHONE.width], [5, true]);
    await h.settled(page);
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard-phone-failed.png'), fullPage: true });
    assert.deepEqual(page.consoleLines, []);
  } finally {
    await context.close();
  }
});
