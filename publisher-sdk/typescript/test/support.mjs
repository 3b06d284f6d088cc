// What the tests start for real, and stop by PID afterwards: redis-server processes (one,
// or three masters made a Redis Cluster with `redis-cli --cluster create`), sse-gateway
// processes (the debug binary check.sh builds), and a TCP proxy that can lose a reply.
// Every wait polls a condition against a deadline; nothing sleeps to synchronise.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Redis } from 'ioredis';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE = path.resolve(HERE, '..');
export const REPO = path.resolve(PACKAGE, '..', '..');
export const FIXTURES_PATH = path.join(REPO, 'publisher-sdk', 'wire', 'fixtures', 'wire-cases.json');
const BIN_DIR = process.env.SSE_BIN_DIR || path.join(REPO, 'target', 'debug');
const SECRET = 'typescript-sdk-tests-secret-0123456789-abcdef';

/** The shared wire fixtures. */
export function fixtures() {
  return JSON.parse(readFileSync(FIXTURES_PATH, 'utf8'));
}

/** Resolves to `check()`'s first truthy value; rejects at the deadline. */
export async function waitFor(what, check, { timeout = 10_000, interval = 20 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** A loopback port that was free a moment ago (and its cluster bus port, +10000, too). */
export async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const server = net.createServer();
      server.on('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port: p } = server.address();
        server.close(() => resolve(p));
      });
    });
    if (port + 10_000 > 65_535) continue;
    const busFree = await new Promise((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port + 10_000, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (busFree) return port;
  }
}

// Every child still running: killed by PID when this process exits, however it exits.
const LIVE = new Set();
process.once('exit', () => {
  for (const child of LIVE) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(child) {
  LIVE.add(child);
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    LIVE.delete(child);
    resolve({ code, signal });
  }));
  return child;
}

async function stopChild(child, signal = 'SIGKILL') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  let timer;
  const done = await Promise.race([child.exited, new Promise((resolve) => { timer = setTimeout(() => resolve(null), 5000); })]);
  clearTimeout(timer);
  if (!done) {
    child.kill('SIGKILL');
    await child.exited;
  }
}

/** A redis-server on a free loopback port, no persistence; `stop()` ends it. */
export class RedisServer {
  static async start(extra = []) {
    const server = new RedisServer(await freePort(), extra);
    await server.spawn();
    return server;
  }

  /**
   * A redis-server that speaks TLS only (`--port 0 --tls-port`), with the certificates of
   * `files` (a {@link TlsFiles}); `clients: true` makes it ask for a client certificate.
   */
  static async startTls(files, { clients = false } = {}) {
    const server = new RedisServer(await freePort(), [], { files, clients });
    await server.spawn();
    return server;
  }

  constructor(port, extra, tls = null) {
    this.port = port;
    this.extra = extra;
    this.tls = tls;
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'sse-ts-redis-'));
    this.child = null;
    this.client = null;
  }

  get url() {
    return `${this.tls ? 'rediss' : 'redis'}://127.0.0.1:${this.port}`;
  }

  async spawn() {
    const base = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir];
    const listen = this.tls
      ? [
          '--port', '0', '--tls-port', String(this.port),
          '--tls-cert-file', this.tls.files.serverCert, '--tls-key-file', this.tls.files.serverKey,
          '--tls-ca-cert-file', this.tls.files.caCert, '--tls-auth-clients', this.tls.clients ? 'yes' : 'no',
        ]
      : ['--port', String(this.port)];
    this.child = track(spawn('redis-server', [...listen, ...base, ...this.extra], { stdio: 'ignore' }));
    const answers = this.tls ? () => tlsPing(this.port, this.tls.files) : () => ping(this.port);
    await waitFor(`redis-server on port ${this.port}`, answers);
  }

  /** A client for assertions (created on first use). */
  redis() {
    if (!this.client) {
      const tls = this.tls ? { tls: this.tls.files.clientOptions() } : {};
      this.client = new Redis(this.port, '127.0.0.1', { lazyConnect: false, maxRetriesPerRequest: 1, ...tls });
      this.client.on('error', () => {});
    }
    return this.client;
  }

  async kill() {
    if (this.child) await stopChild(this.child);
    this.child = null;
  }

  async restart() {
    await this.kill();
    await this.spawn();
  }

  async stop() {
    this.client?.disconnect();
    this.client = null;
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Whether a TLS-only Redis answers PING on the port (redis-cli with the test CA). */
function tlsPing(port, files) {
  try {
    const args = ['--tls', '--cacert', files.caCert, '--cert', files.clientCert, '--key', files.clientKey, '-h', '127.0.0.1', '-p', String(port), 'PING'];
    return execFileSync('redis-cli', args, { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] }).trim() === 'PONG';
  } catch {
    return false;
  }
}

/**
 * A test CA, and a server certificate (for 127.0.0.1) and a client certificate signed by
 * it, made with openssl in a temporary directory; `remove()` deletes them.
 */
export class TlsFiles {
  constructor() {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'sse-ts-tls-'));
    const file = (name) => path.join(this.dir, name);
    const openssl = (...args) => execFileSync('openssl', args, { stdio: 'ignore' });
    [this.caCert, this.caKey] = [file('ca.crt'), file('ca.key')];
    [this.serverCert, this.serverKey] = [file('server.crt'), file('server.key')];
    [this.clientCert, this.clientKey] = [file('client.crt'), file('client.key')];
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-subj', '/CN=sse ts test CA', '-keyout', this.caKey, '-out', this.caCert);
    writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    for (const [cert, key, name] of [[this.serverCert, this.serverKey, '127.0.0.1'], [this.clientCert, this.clientKey, 'worker']]) {
      const request = file(`${name}.csr`);
      openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', request);
      openssl('x509', '-req', '-in', request, '-CA', this.caCert, '-CAkey', this.caKey, '-CAcreateserial', '-days', '2',
        '-extfile', file('san.ext'), '-out', cert);
    }
  }

  /** ioredis `tls` options that trust the test CA and present the client certificate. */
  clientOptions() {
    return { ca: readFileSync(this.caCert), cert: readFileSync(this.clientCert), key: readFileSync(this.clientKey) };
  }

  remove() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Whether a Redis answers PING on the port. */
function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.setTimeout(500, () => socket.destroy());
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk;
      if (answer.includes('\r\n')) {
        socket.destroy();
        resolve(answer.startsWith('+PONG'));
      }
    });
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(false));
  });
}

/** A Redis Cluster of `masters` real redis-server processes, no replicas. */
export class RedisCluster {
  static async start(masters = 3) {
    const nodes = [];
    for (let i = 0; i < masters; i += 1) {
      nodes.push(await RedisServer.start([
        '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000',
      ]));
    }
    execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], {
      stdio: 'ignore',
    });
    const cluster = new RedisCluster(nodes);
    await waitFor('cluster_state:ok on every node', async () => {
      for (const node of nodes) {
        const info = await node.redis().cluster('INFO');
        if (!info.includes('cluster_state:ok') || !info.includes('cluster_slots_ok:16384')) return false;
      }
      return true;
    }, { timeout: 20_000 });
    return cluster;
  }

  constructor(nodes) {
    this.nodes = nodes;
  }

  get seeds() {
    return this.nodes.map((n) => `127.0.0.1:${n.port}`);
  }

  /** The node that serves `key`'s slot. */
  async nodeOf(key) {
    const slot = await this.nodes[0].redis().cluster('KEYSLOT', key);
    const slots = await this.nodes[0].redis().cluster('SLOTS');
    for (const [start, end, [, port]] of slots) {
      if (slot >= start && slot <= end) return this.nodes.find((n) => n.port === port);
    }
    throw new Error(`no node serves ${key}`);
  }

  async stop() {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }
}

/** A token signed with the gateways' secret, made by the gateway's own `mint-token`. */
export function mintToken(sub, role) {
  const args = ['mint-token', '--jwt-secret', SECRET, '--sub', sub];
  if (role) args.push('--role', role);
  return execFileSync(path.join(BIN_DIR, 'sse-gateway'), args, { encoding: 'utf8' }).trim();
}

/** An sse-gateway process on ephemeral loopback ports (embedded broker, or Redis at `redisUrl`). */
export class Gateway {
  static async start({ redisUrl, args = [] } = {}) {
    const argv = ['--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--jwt-secret', SECRET, '--log-format', 'json'];
    if (redisUrl) argv.push('--redis-url', redisUrl);
    argv.push(...args);
    const child = track(spawn(path.join(BIN_DIR, 'sse-gateway'), argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
    const gateway = new Gateway(child);
    let buffered = '';
    const onData = (chunk) => {
      buffered += chunk.toString('utf8');
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        gateway.lines.push(line);
        try {
          const fields = JSON.parse(line).fields ?? {};
          if (fields.message === 'listening' && fields.addr) gateway.addr = fields.addr;
        } catch {
          // not a JSON line
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    await waitFor('the gateway to log where it listens', () => gateway.addr || child.exitCode !== null);
    if (!gateway.addr) throw new Error(`the gateway exited: ${gateway.lines.join('\n')}`);
    if (redisUrl) {
      await waitFor('the gateway to be ready', async () => (await fetch(`${gateway.url}/readyz`)).status === 200);
    }
    return gateway;
  }

  constructor(child) {
    this.child = child;
    this.lines = [];
    this.addr = null;
  }

  get url() {
    return `http://${this.addr}`;
  }

  async stop() {
    await stopChild(this.child, 'SIGKILL');
  }
}

/**
 * Follows an SSE stream with fetch; `next(predicate)` resolves to the first frame (its raw
 * text, and `id`, `event`, `data`) that satisfies it.
 */
export async function follow(url, token) {
  const controller = new AbortController();
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal });
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status} ${await response.text()}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  const frames = [];
  return {
    async next(predicate = () => true, timeout = 10_000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const index = frames.findIndex(predicate);
        if (index >= 0) return frames.splice(index, 1)[0];
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw new Error(`no matching frame on ${url} within ${timeout} ms`);
        let timer;
        const chunk = await Promise.race([
          reader.read(),
          new Promise((resolve) => { timer = setTimeout(() => resolve({ timeout: true }), remaining); }),
        ]);
        clearTimeout(timer);
        if (chunk.timeout) continue;
        if (chunk.done) throw new Error(`${url} ended`);
        buffered += chunk.value;
        let end;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const raw = buffered.slice(0, end + 2);
          buffered = buffered.slice(end + 2);
          const frame = { raw };
          for (const line of raw.split('\n')) {
            const colon = line.indexOf(': ');
            if (colon > 0) frame[line.slice(0, colon)] = line.slice(colon + 2);
          }
          if (frame.event) frames.push(frame);
        }
      }
    },
    close() {
      controller.abort();
      reader.cancel().catch(() => {});
    },
  };
}

/**
 * A TCP proxy on the loopback in front of `port`. Armed with `loseReplyTo(marker)`, it lets
 * the next request whose bytes contain `marker` through, then swallows the server's answer
 * and cuts both connections: the command ran, the client never learns it did.
 */
export async function proxy(port) {
  const sockets = new Set();
  let armed = null;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    let requested = false;
    client.on('data', (chunk) => {
      if (armed !== null && chunk.includes(armed)) requested = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (requested) {
        requested = false;
        armed = null;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', close);
    upstream.on('close', close);
    client.on('error', close);
    upstream.on('error', close);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    loseReplyTo(marker) {
      armed = marker;
    },
    /** Whether the reply to the armed request is still to be lost. */
    get armed() {
      return armed !== null;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Whether `input` of a fixture case is published through `publisher`, as a worker would. */
export function publishInput(publisher, input) {
  const options = {};
  if (input.correlationId !== undefined) options.correlationId = input.correlationId;
  if (input.traceparent !== undefined) options.traceparent = input.traceparent;
  if (input.idempotencyKey !== undefined) options.idempotencyKey = input.idempotencyKey;
  if (input.reopen === true) options.reopen = true;
  switch (input.kind) {
    case 'job':
      return publisher.job(input.job, input.owner).event(input.type, input.data, options);
    case 'user':
      return publisher.notify(input.user, input.type, input.data, options);
    default:
      return publisher.topic(input.topic).publish(input.type, input.data, options);
  }
}

/**
 * A MONITOR connection to a Redis: every script call (`EVAL`/`EVALSHA`) the server runs,
 * decoded from MONITOR's quoting, as `{script, keys, args}` with the script named by its
 * file in `lua/`.
 */
export async function monitor(port, luaDir = path.join(PACKAGE, 'lua')) {
  const { createHash } = await import('node:crypto');
  const bySource = new Map();
  const bySha = new Map();
  for (const name of ['register_owner', 'publish_job', 'publish_user', 'publish_topic']) {
    const source = readFileSync(path.join(luaDir, `${name}.lua`), 'utf8');
    bySource.set(source, name);
    bySha.set(createHash('sha1').update(source).digest('hex'), name);
  }
  const calls = [];
  const commands = [];
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write('MONITOR\r\n');
  let buffered = '';
  socket.on('data', (chunk) => {
    buffered += chunk.toString('latin1');
    let end;
    while ((end = buffered.indexOf('\r\n')) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (!line.startsWith('+') || line === '+OK') continue;
      const args = parseMonitorLine(line);
      commands.push(args);
      const name = args[0]?.toLowerCase();
      if (name !== 'eval' && name !== 'evalsha') continue;
      const script = name === 'eval' ? bySource.get(args[1]) : bySha.get(args[1]);
      const count = Number(args[2]);
      calls.push({ script: script ?? `unknown:${args[1].slice(0, 40)}`, keys: args.slice(3, 3 + count), args: args.slice(3 + count) });
    }
  });
  return {
    calls,
    commands,
    /** Takes the calls seen so far, once there are at least `count`. */
    async take(count) {
      await waitFor(`${count} script call(s) in MONITOR`, () => calls.length >= count, { timeout: 5000 });
      return calls.splice(0, calls.length);
    },
    close() {
      socket.destroy();
    },
  };
}

/** The arguments of one MONITOR line (`+<ts> [<db> <addr>] "arg" "arg" …`), unquoted. */
function parseMonitorLine(line) {
  const escapes = { n: 10, r: 13, t: 9, a: 7, b: 8, '\\': 92, '"': 34 };
  const args = [];
  let i = line.indexOf('] "') + 2;
  while (i > 1 && i < line.length) {
    if (line[i] !== '"') {
      i += 1;
      continue;
    }
    i += 1;
    const bytes = [];
    while (i < line.length && line[i] !== '"') {
      if (line[i] === '\\') {
        const next = line[i + 1];
        if (next === 'x') {
          bytes.push(parseInt(line.slice(i + 2, i + 4), 16));
          i += 4;
        } else {
          bytes.push(escapes[next]);
          i += 2;
        }
      } else {
        bytes.push(line.charCodeAt(i));
        i += 1;
      }
    }
    i += 1;
    args.push(Buffer.from(bytes).toString('utf8'));
  }
  return args;
}
