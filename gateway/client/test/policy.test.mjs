// The reconnect policy as pure functions: what each status means, and the delays.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, parseRetryAfter, retryDelay, DEFAULT_RETRY } from '../dist/index.js';

test('each answer has one decision', () => {
  assert.equal(decide(200, 'text/event-stream'), 'stream');
  assert.equal(decide(200, 'text/event-stream; charset=utf-8'), 'stream');
  assert.equal(decide(200, 'text/html'), 'stop', 'a proxy\'s page is not a stream');
  assert.equal(decide(200, null), 'stop');
  assert.equal(decide(204, null), 'finished');
  assert.equal(decide(401, 'application/json'), 'refresh');
  for (const status of [408, 425, 429, 500, 502, 503, 504]) { assert.equal(decide(status, 'application/json'), 'retry', String(status)); }
  for (const status of [400, 403, 404, 405, 409, 413, 431]) { assert.equal(decide(status, 'application/json'), 'stop', String(status)); }
});

test('Retry-After: seconds or an HTTP date', () => {
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter('1'), 1000);
  assert.equal(parseRetryAfter(' 5 '), 5000);
  const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:30 GMT', now), 30_000);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:27:00 GMT', now), 0, 'a date in the past: now');
  assert.equal(parseRetryAfter('soon'), null);
  assert.equal(parseRetryAfter('-3'), null);
});

test('backoff doubles from the first delay up to the ceiling', () => {
  const options = { ...DEFAULT_RETRY, initialDelayMs: 500, maxDelayMs: 8000 };
  const low = () => 0;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 50].map((n) => retryDelay(n, null, options, low)), [500, 1000, 2000, 4000, 8000, 8000, 8000]);
});

test('Retry-After is a floor, even above the ceiling', () => {
  const options = { ...DEFAULT_RETRY, initialDelayMs: 500, maxDelayMs: 8000 };
  const low = () => 0;
  assert.equal(retryDelay(0, 1000, options, low), 1000);
  assert.equal(retryDelay(3, 1000, options, low), 4000, 'the backoff, when it is longer');
  assert.equal(retryDelay(0, 60_000, options, low), 60_000);
});

test('jitter only ever lengthens a delay, by at most `jitter` of it', () => {
  const options = { ...DEFAULT_RETRY, initialDelayMs: 1000, jitter: 0.5 };
  assert.equal(retryDelay(0, 2000, options, () => 0), 2000);
  assert.equal(retryDelay(0, 2000, options, () => 0.5), 2500);
  assert.equal(retryDelay(0, 2000, options, () => 0.999999), 3000);
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const d = retryDelay(0, 1000, options);
    assert.ok(d >= 1000 && d <= 1500, String(d));
    seen.add(d);
  }
  assert.ok(seen.size > 20, 'spread, not one value');
  assert.equal(retryDelay(2, null, { ...options, jitter: 0 }, () => 0.9), 4000);
});
