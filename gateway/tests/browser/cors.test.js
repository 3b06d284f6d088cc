'use strict';
// The dashboard as a static page on another origin (`?gateway=`): it signs in through the
// gateway with a credentialed fetch (which sets the gateway's cookie) and streams with
// `credentials: 'include'`, as --cors-origin allows; a page on an origin that is not
// allowed never gets a stream, and an unreachable gateway is said to be one.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./lib/harness');

const procs = new h.Processes();
let allowed;    // static server whose origin the gateway allows
let refused;    // static server on another port: same site for cookies, not allowed by CORS
let gateway;
let browser;

before(async () => {
  allowed = await h.startStaticServer(procs);
  refused = await h.startStaticServer(procs);
  gateway = await h.startGateway(procs, 'gateway-cors', { cors: [allowed.origin] });
  browser = await h.launchBrowser(procs);
}, { timeout: 60_000 });

after(() => procs.stopAll(), { timeout: 60_000 });

/** Stream responses seen by the page: status and CORS headers. */
function recordStreams(page) {
  const seen = [];
  page.on('response', async (response) => {
    if (!new URL(response.url()).pathname.endsWith('/events') || response.request().method() !== 'GET') { return; }
    const headers = await response.allHeaders().catch(() => ({}));
    seen.push({ path: new URL(response.url()).pathname, status: response.status(), origin: headers['access-control-allow-origin'] || null, credentials: headers['access-control-allow-credentials'] || null });
  });
  return seen;
}

test('a page on an allowed origin signs in through the gateway and streams with its cookie', { timeout: 30_000 }, async () => {
  const user = h.unique('erin');
  const context = await browser.newContext();
  try {
    const page = await h.newPage(context);
    const streams = recordStreams(page);
    await page.goto(`${allowed.origin}/dashboard.html?gateway=${encodeURIComponent(gateway.url)}`);
    // Signed in as demo by itself, across origins.
    await h.waitInPage(page, 'the cross-origin demo stream', () => window.dashboard.state === 'connected' && window.dashboard.user === 'demo');
    assert.equal(await page.textContent('#origin'), `via ${gateway.url}`);
    // The cookie belongs to the gateway's host, and the page cannot read it (HttpOnly).
    const cookies = await context.cookies(gateway.url);
    assert.deepEqual(cookies.map((c) => [c.name, c.httpOnly]), [['sse_token', true]]);
    assert.equal(await page.evaluate(() => document.cookie), '');

    await h.signIn(page, user);
    const job = h.unique('render');
    await h.publish(gateway.url, job, { owner: user, type: 'progress', data: { progress: 40, stage: 'Encoding' } });
    await h.publish(gateway.url, job, { type: 'log', data: { message: 'half way' } });
    await h.publish(gateway.url, job, { type: 'complete', data: { result: 'ok' } });
    await h.notify(gateway.url, user, { type: 'notice', data: { text: 'hello across origins' } });
    await h.waitInPage(page, 'the completed card and the toast', (id) => {
      const card = document.querySelector(`article.job[data-job-id="${id}"]`);
      return card && card.dataset.status === 'completed' && document.querySelector('#toasts .toast-text')?.textContent === 'hello across origins';
    }, job);
    const card = await h.readCard(page, job);
    assert.deepEqual([card.progress, card.result], [100, [['result', 'ok']]]);
    assert.deepEqual(await page.evaluate((id) => window.dashboard.jobs.get(id).logs.map((l) => l.message), job), ['half way']);
    // Two user streams (demo, then the user), and the announcements feed (a topic) beside them.
    const sorted = (list) => list.map((r) => JSON.stringify(r)).sort();
    const answer = (path) => ({ path, status: 200, origin: allowed.origin, credentials: 'true' });
    assert.deepEqual(sorted(streams), sorted([
      answer('/v1/users/me/events'), answer('/v1/users/me/events'), answer('/v1/topics/demo.announcements/events'),
    ]));

    // The detail view streams cross-origin too (a preflighted request: it sends Last-Event-ID).
    await page.click(`article.job[data-job-id="${job}"] h3 a`);
    await h.waitInPage(page, 'the detail view to say finished', () => document.querySelector('#detail').dataset.stream === 'finished');
    assert.deepEqual(await page.$$eval('#detail ol.log > li', (lis) => lis.map((li) => li.textContent)), ['half way']);
    assert.deepEqual(streams.at(-1), answer(`/v1/jobs/${job}/events`));
  } finally {
    await context.close();
  }
});

test('a page on an origin the gateway does not allow gets no stream, and says so', { timeout: 30_000 }, async () => {
  const user = h.unique('grace');
  const job = h.unique('build');
  await h.publish(gateway.url, job, { owner: user, type: 'progress', data: { progress: 10 } });
  const context = await browser.newContext();
  try {
    // A valid cookie that the browser does send (same site: only the port differs), and a
    // session the page remembers, so it goes straight to the stream: the gateway answers,
    // but without CORS headers the browser keeps the answer from the page.
    await h.setTokenCookie(context, gateway.url, h.userToken(user));
    await context.addInitScript(([g, u]) => localStorage.setItem('sse-dashboard:session', JSON.stringify({ gateway: g, user: u, until: Date.now() + 3_600_000 })), [gateway.url, user]);
    const page = await h.newPage(context);
    const streams = recordStreams(page);
    const failed = [];
    page.on('requestfailed', (r) => failed.push([r.url(), r.failure() && r.failure().errorText]));
    await page.goto(`${refused.origin}/dashboard.html?gateway=${encodeURIComponent(gateway.url)}`);
    await h.waitInPage(page, 'the page to stop', () => window.dashboard.state === 'stopped', undefined, 20_000);
    const shown = await page.evaluate(() => ({
      stats: window.dashboard.stats,
      cards: document.querySelectorAll('#jobs article.job').length,
      login: !document.querySelector('#login').hidden,
      note: document.querySelector('#login .form-note').textContent,
      history: window.dashboard.history,
    }));
    assert.equal(shown.cards, 0);
    assert.equal(shown.login, true);
    assert.match(shown.note, /not allowed/);
    assert.deepEqual(shown.history, ['connecting', 'reconnecting', 'stopped']);
    assert.equal(streams.length, 0, 'the page never sees a response');
    assert.deepEqual(failed.filter(([url]) => !url.includes('/v1/topics/')), Array(3).fill([`${gateway.url}/v1/users/me/events`, 'net::ERR_FAILED']));
    // The announcements feed failed alike, and the page closed it when it gave up.
    assert.ok(failed.some(([url]) => url.startsWith(`${gateway.url}/v1/topics/demo.announcements/events`)));
    assert.equal(await page.evaluate(() => window.dashboard.announcements.stream.state), 'closed');
    // The gateway did answer (the cookie went along); its answer carried no CORS headers.
    await h.waitFor('the gateway to log the stream', () => gateway.lines.some((l) => l.includes('"stream closed"') && l.includes(`"user":"${user}"`)));
    const direct = await fetch(`${gateway.url}/v1/jobs/${job}`, { headers: { origin: refused.origin, cookie: `sse_token=${h.userToken(user)}` } });
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('access-control-allow-origin'), null);
    assert.equal(direct.headers.get('access-control-allow-credentials'), null);

    // Its sign-in cannot work either: the preflight is refused.
    await page.fill('#user', user);
    await page.click('#login button[type=submit]');
    await h.waitInPage(page, 'the sign-in error', () => document.querySelector('#login .form-error').textContent !== '');
    assert.match(await page.textContent('#login .form-error'), /does not allow this page's origin/);
    assert.equal(await page.evaluate(() => window.dashboard.state), 'stopped');
  } finally {
    await context.close();
  }
});

test('a gateway that cannot be reached: the page says so at once, and offers to retry', { timeout: 30_000 }, async () => {
  const nowhere = `http://127.0.0.1:${await h.freePort()}`;
  const context = await browser.newContext();
  try {
    const page = await h.newPage(context);
    await page.goto(`${allowed.origin}/dashboard.html?gateway=${encodeURIComponent(nowhere)}`);
    await h.waitInPage(page, 'the page to give up', () => window.dashboard.state === 'stopped');
    const shown = await page.evaluate(() => ({
      history: window.dashboard.history,
      note: document.querySelector('#login .form-note').textContent,
      reconnect: !document.querySelector('#reconnect').hidden,
    }));
    assert.deepEqual(shown.history, ['connecting', 'stopped']);
    assert.match(shown.note, /Could not reach/);
    assert.equal(shown.reconnect, true);
  } finally {
    await context.close();
  }
});
