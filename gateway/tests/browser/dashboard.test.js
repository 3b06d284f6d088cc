'use strict';
// The dashboard in headless Chromium against one gateway on the embedded broker (--demo
// serves the page; our jobs belong to other users than the demo publisher's `demo`):
// jobs progressing to their exact final state, the detail view and the 204 that stops
// EventSource, cookie expiry with and without a refreshed cookie.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./lib/harness');

const procs = new h.Processes();
let gateway;
let browser;

before(async () => {
  // --jwt-leeway 0s: a token's stream ends right at its `exp`.
  gateway = await h.startGateway(procs, 'gateway-dashboard', { args: ['--jwt-leeway', '0s'] });
  browser = await h.launchBrowser(procs);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

/** Opens the dashboard in a fresh context and logs in as `user` through the login form. */
async function loggedInPage(user) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await h.newPage(context);
  await page.goto(`${gateway.url}/`);
  // No cookie yet: the stream is refused (401) and the page asks for a login.
  await h.waitInPage(page, 'the login form', () => document.querySelector('#connection').dataset.state === 'stopped'
    && !document.querySelector('#login').hidden);
  await page.fill('#user', user);
  await page.click('#login button[type=submit]');
  await h.waitInPage(page, 'the stream to open', (u) => window.dashboard.state === 'connected' && window.dashboard.user === u, user);
  return { context, page };
}

test('jobs progress on the board to their exact final state', { timeout: 45_000 }, async () => {
  const user = h.unique('alice');
  const { context, page } = await loggedInPage(user);
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

    await pub(render, 'log', { level: 'info', message: 'encoded 1200 frames' });
    await pub(importJob, 'progress', { progress: 60, stage: 'Importing' });
    await pub(render, 'progress', { progress: 90, stage: 'Uploading' });
    await pub(importJob, 'failed', { error: 'disk full on /var/imports' });
    await pub(build, 'log', { message: 'ld -o app' });
    await pub(render, 'complete', { result: { outputPath: 'renders/clip-7.mp4', durationSeconds: 42 } });

    // Mid-run (one job done, one failed, one going): once the page shows it and its
    // animations have settled, keep a picture for people.
    await h.waitInPage(page, 'the mid-run state', (ids) => ids.every(([id, status]) => {
      const card = document.querySelector(`article.job[data-job-id="${id}"]`);
      return card && card.dataset.status === status;
    }), [[render, 'completed'], [importJob, 'failed'], [build, 'active']]);
    await h.settled(page);
    fs.mkdirSync(h.ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(h.ARTIFACTS, 'dashboard.png'), fullPage: true });

    await pub(build, 'cancelled', { message: 'superseded by a newer commit' });
    // Text that would be markup if it were ever put in innerHTML.
    await pub(nasty, 'log', { level: 'error', message: '<img src=x onerror="window.pwned=1"><b>bold</b> & co' });
    await h.notify(gateway.url, user, { type: 'notice', data: { text: 'Your <script>export</script> is ready' } });

    await h.waitInPage(page, 'every job to reach its final status', (ids) => ids.every(([id, status]) => {
      const card = document.querySelector(`article.job[data-job-id="${id}"]`);
      return card && card.dataset.status === status;
    }), [[render, 'completed'], [importJob, 'failed'], [build, 'cancelled']]);
    await h.waitInPage(page, 'the last log line and the toast', (id) => {
      const li = document.querySelector(`article.job[data-job-id="${id}"] ol.log > li`);
      return li && document.querySelector('#toasts .toast');
    }, nasty);

    assert.deepEqual(await h.readCard(page, render), {
      status: 'completed', statusText: 'completed', progress: 100, stage: 'Uploading',
      log: ['fetched source.mov', 'encoded 1200 frames'],
      logHtml: ['fetched source.mov', 'encoded 1200 frames'],
      result: JSON.stringify({ outputPath: 'renders/clip-7.mp4', durationSeconds: 42 }, null, 2),
      error: null,
    });
    assert.deepEqual(await h.readCard(page, importJob), {
      status: 'failed', statusText: 'failed', progress: 60, stage: 'Importing',
      log: ['row 17 skipped'], logHtml: ['row 17 skipped'],
      result: null, error: 'disk full on /var/imports',
    });
    assert.deepEqual(await h.readCard(page, build), {
      status: 'cancelled', statusText: 'cancelled', progress: 30, stage: 'Compile',
      log: ['cc -O2 main.c', 'ld -o app'], logHtml: ['cc -O2 main.c', 'ld -o app'],
      result: null, error: null,
    });
    const nastyCard = await h.readCard(page, nasty);
    assert.deepEqual(nastyCard.log, ['<img src=x onerror="window.pwned=1"><b>bold</b> & co']);
    assert.deepEqual(nastyCard.logHtml, ['&lt;img src=x onerror="window.pwned=1"&gt;&lt;b&gt;bold&lt;/b&gt; &amp; co']);
    const page2 = await page.evaluate(() => ({
      pwned: window.pwned === 1,
      toast: document.querySelector('#toasts .toast .toast-text').textContent,
      injected: document.querySelectorAll('#jobs img, #jobs b, #toasts script').length,
      order: Array.from(document.querySelectorAll('#jobs article.job')).map((a) => window.dashboard.jobs.get(a.dataset.jobId).updatedAt),
      stats: window.dashboard.stats,
      state: window.dashboard.state,
    }));
    assert.equal(page2.pwned, false);
    assert.equal(page2.injected, 0);
    assert.equal(page2.toast, 'Your <script>export</script> is ready');
    // Most recently updated first.
    assert.deepEqual(page2.order, [...page2.order].sort((a, b) => b - a));
    assert.equal(page2.stats.duplicates, 0);
    assert.equal(page2.stats.opens, 1);
    assert.equal(page2.state, 'connected');
  } finally {
    await context.close();
  }
});

test('the detail view shows a job\'s whole log live, then "finished", and EventSource stops at 204', { timeout: 45_000 }, async () => {
  const user = h.unique('dora');
  const { context, page } = await loggedInPage(user);
  try {
    const job = h.unique('render');
    const pub = (type, data) => h.publish(gateway.url, job, { owner: user, type, data });
    const lines = [];
    await pub('progress', { progress: 10, stage: 'Decoding' });
    for (let i = 1; i <= 7; i++) {
      lines.push(`frame batch ${i}/12`);
      await pub('log', { message: lines[lines.length - 1] });
    }
    await h.waitInPage(page, 'the card', (id) => document.querySelectorAll(`article.job[data-job-id="${id}"] ol.log > li`).length === 5, job);
    // The card shows the last five lines only.
    assert.deepEqual((await h.readCard(page, job)).log, lines.slice(-5));

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
    await pub('complete', { result: { outputPath: `renders/${job}.mp4` } });

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
        result: d.querySelector('.result').textContent,
        readyState: window.dashboard.detail.source.readyState,
        stats: window.dashboard.detail.stats,
      };
    });
    assert.deepEqual(detail, {
      status: 'completed', jobId: job, streamText: 'finished', progress: '100', stage: 'Muxing',
      log: lines, result: JSON.stringify({ outputPath: `renders/${job}.mp4` }, null, 2),
      readyState: 2, // EventSource.CLOSED
      stats: { opens: 1, errors: 2, events: 15, duplicates: 0, resyncs: 0 },
    });
    // The stream that carried the job ended after `complete`; the reconnection got 204.
    assert.deepEqual(streamResponses, [200, 204]);
    // And nothing more: over six `retry:` intervals, the browser does not try again.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.deepEqual(streamResponses, [200, 204]);

    // A finished job opened afresh: the same history, the same end, straight to 204.
    streamResponses.length = 0;
    await page.reload();
    await h.waitInPage(page, 'the reopened detail view to say finished', (n) => {
      const d = document.querySelector('#detail');
      return d.dataset.stream === 'finished' && d.querySelectorAll('ol.log > li').length === n;
    }, lines.length);
    assert.deepEqual(streamResponses, [200, 204]);

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
    assert.equal(await page.textContent('#detail ol.log'), '');
  } finally {
    await context.close();
  }
});

test('an expiring cookie: the stream ends at exp, a refreshed cookie resumes it with nothing lost', { timeout: 45_000 }, async () => {
  const user = h.unique('bob');
  const job = h.unique('import');
  const context = await browser.newContext();
  try {
    await h.setTokenCookie(context, gateway.url, h.userToken(user, 5));
    const page = await h.newPage(context);
    await page.goto(`${gateway.url}/`);
    await h.waitInPage(page, 'the stream to open', () => window.dashboard.state === 'connected');
    // The login flow refreshes the cookie before the old token expires; the open stream
    // keeps its own token and ends at that token's `exp`.
    await h.setTokenCookie(context, gateway.url, h.userToken(user, 3600));

    // A worker publishes all along, across the end of the stream and the reconnection.
    const published = [];
    let n = 0;
    const publishNext = async () => {
      n += 1;
      const message = `line ${n}`;
      await h.publish(gateway.url, job, { owner: user, type: 'log', data: { message } });
      published.push(message);
    };
    await h.waitFor('the stream to end and EventSource to reconnect', async () => {
      await publishNext();
      return page.evaluate(() => window.dashboard.stats.opens >= 2);
    }, { timeout: 15_000, interval: 100 });
    for (let i = 0; i < 5; i++) { await publishNext(); }
    await h.publish(gateway.url, job, { type: 'complete', data: { result: { rows: published.length } } });

    await h.waitInPage(page, 'the completed card', (id) => {
      const card = document.querySelector(`article.job[data-job-id="${id}"]`);
      return card && card.dataset.status === 'completed';
    }, job);
    const seen = await page.evaluate((id) => ({
      log: window.dashboard.jobs.get(id).logs.map((l) => l.message),
      stats: window.dashboard.stats,
      history: window.dashboard.history,
      state: window.dashboard.state,
    }), job);
    assert.ok(published.length > 5, `published ${published.length}`);
    assert.deepEqual(seen.log, published, 'every event once, in order');
    assert.equal(seen.stats.duplicates, 0);
    assert.equal(seen.stats.opens, 2);
    // Reconnected by itself and resumed (no new `jobs` snapshot: history served the gap).
    assert.deepEqual(seen.history.slice(0, 4), ['connecting', 'connected', 'reconnecting', 'connected']);
    assert.ok(seen.history.includes('resumed'), seen.history.join(','));
    assert.equal(seen.stats.resyncs, 0);
    assert.deepEqual((await h.readCard(page, job)).log, published.slice(-5));
  } finally {
    await context.close();
  }
});

test('without a valid cookie the page stops and shows the login form', { timeout: 30_000 }, async () => {
  const user = h.unique('carol');
  const context = await browser.newContext();
  try {
    // A token that expires soon and is not refreshed: the stream ends at `exp`, the
    // reconnection gets 401, EventSource stops, and the page says so.
    await h.setTokenCookie(context, gateway.url, h.userToken(user, 4));
    const page = await h.newPage(context);
    const statuses = [];
    page.on('response', (r) => { if (new URL(r.url()).pathname === '/v1/users/me/events') { statuses.push(r.status()); } });
    await page.goto(`${gateway.url}/`);
    await h.waitInPage(page, 'the stream to open', () => window.dashboard.state === 'connected');
    assert.equal(await page.isVisible('#login'), false);
    await h.waitInPage(page, 'the page to stop', () => document.querySelector('#connection').dataset.state === 'stopped', undefined, 10_000);
    const shown = await page.evaluate(() => ({
      history: window.dashboard.history,
      login: !document.querySelector('#login').hidden,
      note: document.querySelector('#login .form-note').textContent,
      label: document.querySelector('#connection .label').textContent,
      reconnect: !document.querySelector('#reconnect').hidden,
    }));
    assert.deepEqual(shown.history, ['connecting', 'connected', 'reconnecting', 'stopped']);
    assert.equal(shown.login, true);
    assert.match(shown.note, /session may have expired/);
    assert.equal(shown.label, 'stopped');
    assert.equal(shown.reconnect, true);
    assert.deepEqual(statuses, [200, 401]);

    // A garbage cookie from the start: the same, without ever connecting.
    await h.setTokenCookie(context, gateway.url, 'not-a-jwt');
    statuses.length = 0;
    await page.reload();
    await h.waitInPage(page, 'the page to stop', () => document.querySelector('#connection').dataset.state === 'stopped');
    assert.equal(await page.isVisible('#login'), true);
    assert.deepEqual(statuses, [401]);

    // Logging in again brings the stream back.
    await page.fill('#user', user);
    await page.click('#login button[type=submit]');
    await h.waitInPage(page, 'the stream to reopen', () => window.dashboard.state === 'connected');
    assert.equal(await page.isVisible('#login'), false);
  } finally {
    await context.close();
  }
});
