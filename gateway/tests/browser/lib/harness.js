'use strict';
// What every browser test starts for real, and stops by PID afterwards: gateway nodes (the
// debug binaries `run.sh` builds), redis-server, nginx in front of a local cluster, small
// static HTTP servers, and headless Debian Chromium through playwright-core. No fixed
// sleeps: every wait polls a condition against a deadline.

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');
// Where the gateway and the publisher CLI were built (`cargo build`, debug by default).
const BIN_DIR = process.env.SSE_BIN_DIR || path.join(REPO, 'target', 'debug');
const ARTIFACTS = path.join(REPO, 'artifacts');
const LOG_DIR = path.join(ARTIFACTS, 'browser-tests');
const DASHBOARD = path.join(REPO, 'gateway', 'assets', 'dashboard.html');
// The client package's browser bundle, as committed (what the gateway serves in demo mode).
const CLIENT_BUNDLE = path.join(REPO, 'gateway', 'assets', 'sse-client.js');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SECRET = 'browser-tests-secret-0123456789-0123456789';

/** Resolves when `check()` returns a truthy value (which it resolves to); rejects at the deadline. */
async function waitFor(what, check, { timeout = 10_000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) { return value; }
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** An HS256 JWT signed with `secret`, made here so no JWT library is needed. */
function mintToken(claims, secret = SECRET) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const signature = crypto.createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** A token for `sub` that expires `seconds` from now. */
function userToken(sub, seconds = 3600, extra = {}) {
  return mintToken({ sub, exp: Math.floor(Date.now() / 1000) + seconds, ...extra });
}

const PUBLISHER = () => userToken('browser-test-worker', 3600, { role: 'publisher' });

/** A unique name, so that tests never see one another's users, jobs or keys. */
function unique(prefix) {
  return `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
}

/** A free TCP port on the loopback (for programs that cannot be told to bind port 0). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Every process and server a test file starts, so its `after` hook can stop all of them,
 * by PID, whether the tests passed or not.
 */
class Processes {
  constructor() {
    this.children = [];
    this.servers = [];
    this.browsers = [];
    this.dirs = [];
    fs.mkdirSync(LOG_DIR, { recursive: true });
  }

  /** A temporary directory, removed by `stopAll`. */
  tempDir(prefix) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  /**
   * Starts `command` in a process group of its own (so that nginx's workers go with their
   * master); its output goes to artifacts/browser-tests/<name>.log (and to `onLine`).
   * `stopSignal` is what `stopAll` sends first (SIGKILL after 5 s if that was not enough).
   * `stdin: 'pipe'` gives the child a standard input (`child.stdin`) the test can close.
   */
  spawn(name, command, args, { onLine, stopSignal = 'SIGKILL', stdin = 'ignore' } = {}) {
    const logPath = path.join(LOG_DIR, `${name}.log`);
    const log = fs.createWriteStream(logPath);
    log.write(`$ ${command} ${args.join(' ')}\n`);
    const child = spawn(command, args, { stdio: [stdin, 'pipe', 'pipe'], detached: true });
    child.logPath = logPath;
    child.stopSignal = stopSignal;
    LIVE.add(child);
    child.once('exit', () => LIVE.delete(child));
    child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.once('error', (error) => log.write(`spawn error: ${error.message}\n`));
    // Closing the input of a child that has already gone is no error worth a crash.
    child.stdin?.on('error', () => {});
    let buffered = '';
    const onData = (chunk) => {
      log.write(chunk);
      if (!onLine) { return; }
      buffered += chunk.toString('utf8');
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        onLine(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code, signal) => log.end(`\n[exit code=${code} signal=${signal}]\n`));
    this.children.push(child);
    return child;
  }

  /** Sends `signal` to the child's process group (by its PID) and waits, at most 5 s, for the exit. */
  async kill(child, signal = 'SIGKILL') {
    signalGroup(child, signal);
    const exited = await Promise.race([child.exited, new Promise((resolve) => setTimeout(() => resolve(null), 5000))]);
    if (!exited) {
      signalGroup(child, 'SIGKILL');
      await child.exited;
    }
    // Anything left holding the pipes (it should not be) must not keep this process alive.
    child.stdin?.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
  }

  /** Sends `signal` to the child's process group and returns at once (a drain is watched by the test). */
  signal(child, signal) {
    signalGroup(child, signal);
  }

  async stopAll() {
    for (const browser of this.browsers.splice(0)) {
      // A browser that hangs on close is killed by PID like the rest.
      const pid = browser.process && browser.process() ? browser.process().pid : null;
      await Promise.race([browser.close().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 5000))]);
      if (pid) { try { process.kill(pid, 'SIGKILL'); } catch { /* closed */ } }
    }
    await Promise.all(this.servers.splice(0).map((server) => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    })));
    await Promise.all(this.children.splice(0).map((child) => this.kill(child, child.stopSignal)));
    for (const dir of this.dirs.splice(0)) { fs.rmSync(dir, { recursive: true, force: true }); }
  }
}

// Every child still running, and their process groups: killed by PID when this process
// exits, however it exits (a crashed test file must not leave a gateway or nginx behind).
const LIVE = new Set();

function signalGroup(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) { return; }
  try {
    process.kill(-child.pid, signal);
  } catch {
    try { process.kill(child.pid, signal); } catch { /* already gone */ }
  }
}

process.once('exit', () => {
  for (const child of LIVE) { signalGroup(child, 'SIGKILL'); }
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(130));
}

/**
 * A CA of the test's own and a certificate it signs for `127.0.0.1`/`localhost` (openssl,
 * P-256), as files in a temporary directory: `{ dir, ca, cert, key, spki }`, where `spki`
 * is the base64 SHA-256 of the certificate's public key (what Chromium's
 * `--ignore-certificate-errors-spki-list` takes, to accept that one certificate only).
 */
function makeTestCertificate(procs) {
  const dir = procs.tempDir('sse-browser-tls-');
  const file = (name) => path.join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2',
    '-subj', '/CN=browser test CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', ...ec, '-keyout', file('key.pem'), '-out', file('csr.pem'), '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(file('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', file('csr.pem'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-CAcreateserial', '-out', file('cert.pem'), '-days', '2', '-extfile', file('ext.cnf'));
  const certificate = new crypto.X509Certificate(fs.readFileSync(file('cert.pem')));
  const spki = crypto.createHash('sha256')
    .update(certificate.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  return { dir, ca: file('ca.pem'), cert: file('cert.pem'), key: file('key.pem'), spki };
}

/** The status of `GET url`, over HTTPS trusting `ca` (a PEM file) when given. */
function getStatus(url, ca) {
  if (!ca) {
    return fetch(url, { signal: AbortSignal.timeout(5000) }).then((response) => response.status);
  }
  return new Promise((resolve, reject) => {
    const request = https.get(url, { ca: fs.readFileSync(ca), timeout: 5000 }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on('error', reject);
    request.on('timeout', () => request.destroy(new Error('timeout')));
  });
}

/**
 * Starts `sse-gateway` on ephemeral ports and resolves once it logged where it listens
 * (and, with Redis, once `/readyz` says its pub/sub works). `tls` (from
 * `makeTestCertificate`): HTTPS with `--tls-cert`/`--tls-key`.
 */
async function startGateway(procs, name, { demo = true, redisUrl, redisPrefix, cors = [], args = [], tls } = {}) {
  const argv = [
    '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--log-format', 'json',
    '--jwt-secret', SECRET, '--retry', '500ms', '--heartbeat', '1s',
  ];
  if (demo) { argv.push('--demo'); }
  if (redisUrl) { argv.push('--redis-url', redisUrl, '--redis-prefix', redisPrefix); }
  for (const origin of cors) { argv.push('--cors-origin', origin); }
  if (tls) { argv.push('--tls-cert', tls.cert, '--tls-key', tls.key); }
  argv.push(...args);
  let listening;
  const lines = [];
  const child = procs.spawn(name, path.join(BIN_DIR, 'sse-gateway'), argv, {
    onLine(line) {
      if (lines.length < 10_000) { lines.push(line); }
      if (listening || !line.startsWith('{')) { return; }
      try {
        const fields = JSON.parse(line).fields || {};
        if (fields.message === 'listening') { listening = fields; }
      } catch { /* not a log line */ }
    },
  });
  await waitFor(`${name} to listen (log: ${child.logPath})`, () => {
    if (child.exitCode !== null) { throw new Error(`${name} exited with ${child.exitCode}`); }
    return listening;
  }, { timeout: 15_000 });
  const gateway = {
    name, child, pid: child.pid, lines,
    url: `${tls ? 'https' : 'http'}://${listening.addr}`,
    port: Number(listening.addr.split(':').pop()),
    metricsUrl: `http://${listening.metrics_addr}/metrics`,
  };
  await waitFor(`${name} to be ready`, async () => (await getStatus(`${gateway.url}/readyz`, tls && tls.ca)) === 200, { timeout: 15_000 });
  return gateway;
}

/** A throwaway redis-server on a free port, with no persistence. */
async function startRedis(procs) {
  const port = await freePort();
  const dir = procs.tempDir('sse-browser-redis-');
  const child = procs.spawn('redis', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
  ], { stopSignal: 'SIGTERM' });
  await waitFor('redis-server to answer PING', () => redisPing(port), { timeout: 10_000 });
  return { child, port, url: `redis://127.0.0.1:${port}` };
}

function redisPing(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(1000);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => { socket.destroy(); resolve(data.toString().startsWith('+PONG')); });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
  });
}

/** nginx in front of the given gateways, configured by deploy/nginx/render.sh. */
async function startNginx(procs, gateways) {
  const port = await freePort();
  const dir = procs.tempDir('sse-browser-nginx-');
  const conf = path.join(dir, 'nginx.conf');
  const render = procs.spawn('nginx-render', path.join(REPO, 'deploy', 'nginx', 'render.sh'), [
    '--listen', `127.0.0.1:${port}`, '--run-dir', dir, '--worker-connections', '1024', conf, ...gateways.map((g) => String(g.port)),
  ]);
  const rendered = await render.exited;
  if (rendered.code !== 0) { throw new Error(`render.sh failed (${render.logPath})`); }
  // SIGTERM: nginx's fast shutdown, which stops the workers too.
  const child = procs.spawn('nginx', 'nginx', ['-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')], { stopSignal: 'SIGTERM' });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('nginx to proxy /healthz', async () => {
    if (child.exitCode !== null) { throw new Error(`nginx exited with ${child.exitCode} (${dir}/error.log)`); }
    return (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) })).status === 200;
  }, { timeout: 10_000 });
  return { child, port, url, dir };
}

/**
 * A static server for the dashboard and the client bundle it imports, as pages on an origin
 * of their own; `extra` maps more paths to files (a test page).
 */
async function startStaticServer(procs, extra = {}) {
  const files = {
    '/dashboard.html': DASHBOARD,
    '/assets/sse-client.js': CLIENT_BUNDLE,
    ...extra,
  };
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };
  const server = http.createServer((request, response) => {
    const file = files[new URL(request.url, 'http://x').pathname];
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(response);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  procs.servers.push(server);
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/**
 * A TCP proxy on a free loopback port, as a layer-4 load balancer (a Kubernetes Service)
 * is: each new connection goes to `proxy.target` (a port, changeable at any time), bytes
 * are passed on as they are, and nothing is retried. `proxy.cut()` drops every connection
 * it carries, as a network failure would.
 */
async function startTcpProxy(procs, targetPort) {
  const pairs = new Set();
  const proxy = {
    target: targetPort,
    connections: 0,
    cut() {
      for (const pair of pairs) { for (const socket of pair) { socket.destroy(); } }
      pairs.clear();
    },
  };
  const server = net.createServer((client) => {
    proxy.connections++;
    const upstream = net.connect(proxy.target, '127.0.0.1');
    const pair = [client, upstream];
    pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of pair) {
      socket.on('error', end);
      socket.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = server.address().port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  // Stopped like the HTTP servers: connections first, then the listener.
  procs.servers.push({ closeAllConnections: () => proxy.cut(), close: (callback) => server.close(callback) });
  return proxy;
}

/** POST one job event through a gateway's HTTP API; resolves to its id. */
async function publish(baseUrl, job, body, token = PUBLISHER()) {
  const response = await fetch(`${baseUrl}/v1/jobs/${encodeURIComponent(job)}/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  if (response.status !== 201) { throw new Error(`publish ${job} ${body.type}: ${response.status} ${text}`); }
  return JSON.parse(text).id;
}

/** POST one topic event (`{type, data}`) through a gateway's HTTP API; resolves to its id. */
async function publishTopic(baseUrl, topic, body, token = PUBLISHER()) {
  const response = await fetch(`${baseUrl}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  if (response.status !== 201) { throw new Error(`publish to topic ${topic}: ${response.status} ${text}`); }
  return JSON.parse(text).id;
}

async function notify(baseUrl, user, body, token = PUBLISHER()) {
  const response = await fetch(`${baseUrl}/v1/users/${encodeURIComponent(user)}/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  if (response.status !== 201) { throw new Error(`notify ${user}: ${response.status} ${await response.text()}`); }
}

/** The sum of a metric's samples (all label sets) in a Prometheus text page. */
async function metric(metricsUrl, name) {
  const text = await (await fetch(metricsUrl, { signal: AbortSignal.timeout(5000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

/**
 * Headless Debian Chromium with a fresh profile (playwright's own temporary user-data dir);
 * `extraArgs` for one test's browser only.
 */
async function launchBrowser(procs, extraArgs = []) {
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
  procs.browsers.push(browser);
  return browser;
}

/** A new page whose console errors and page errors are kept (and shown on failure). */
async function newPage(context) {
  const page = await context.newPage();
  page.consoleLines = [];
  page.on('console', (message) => page.consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => page.consoleLines.push(`pageerror: ${error.message}`));
  return page;
}

/** Sets the gateway's token cookie in a browser context, as a login flow would. */
async function setTokenCookie(context, gatewayUrl, token) {
  await context.addCookies([{ name: 'sse_token', value: token, url: gatewayUrl, httpOnly: true, sameSite: 'Lax' }]);
}

/**
 * Switches the dashboard's user through its form (the demo sign-in), and waits for the
 * user's stream to be live.
 */
async function signIn(page, user) {
  await waitInPage(page, 'the page to be signed in or stopped', () => window.dashboard && ['connected', 'stopped'].includes(window.dashboard.state));
  const before = await page.evaluate(() => window.dashboard.streams);
  if (await page.isHidden('#login')) { await page.click('#switch-user'); }
  await page.fill('#user', user);
  await page.click('#login button[type=submit]');
  await waitInPage(page, `the stream of ${user} to open`, ([u, n]) => window.dashboard.streams > n
    && window.dashboard.user === u && window.dashboard.state === 'connected', [user, before]);
}

/** Waits on a condition evaluated in the page, with a deadline. */
function waitInPage(page, what, fn, arg, timeout = 10_000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 }).catch((error) => {
    throw new Error(`timed out waiting in the page for ${what}: ${error.message.split('\n')[0]}\n  console: ${page.consoleLines.slice(-10).join('\n  ')}`);
  });
}

/** Waits until every finite animation and transition in the page is over (for screenshots). */
function settled(page) {
  return waitInPage(page, 'animations to settle', () => document.getAnimations()
    .every((a) => a.effect.getComputedTiming().iterations === Infinity || a.playState !== 'running'));
}

/** The visible state of one job card, as a person would read it. */
function readCard(page, jobId) {
  return page.evaluate((id) => {
    const card = document.querySelector(`#jobs article.job[data-job-id="${CSS.escape(id)}"]`);
    if (!card) { return null; }
    const shown = (node) => node && !node.hidden && node.getClientRects().length > 0;
    const text = (selector) => {
      const node = card.querySelector(selector);
      return shown(node) ? node.textContent : null;
    };
    const summary = card.querySelector('dl.summary');
    return {
      status: card.dataset.status,
      statusText: text('.status'),
      compact: card.classList.contains('done'),
      progress: Number(card.querySelector('.progress-bar').dataset.progress),
      stage: text('.stage'),
      log: Array.from(card.querySelectorAll('ol.log > li')).filter(shown).map((li) => li.textContent),
      logHtml: Array.from(card.querySelectorAll('ol.log > li')).filter(shown).map((li) => li.innerHTML),
      // The result's summary: [label, value] rows.
      result: shown(summary) ? Array.from(summary.querySelectorAll('dt')).map((dt) => [dt.textContent, dt.nextElementSibling.textContent]) : null,
      error: text('.error'),
    };
  }, jobId);
}

module.exports = {
  REPO, BIN_DIR, ARTIFACTS, DASHBOARD, CLIENT_BUNDLE, SECRET,
  waitFor, mintToken, userToken, unique, freePort, Processes, makeTestCertificate,
  startGateway, startRedis, startNginx, startStaticServer, startTcpProxy,
  publish, publishTopic, notify, metric, launchBrowser, newPage, setTokenCookie, signIn, waitInPage, settled, readCard,
};
