// @ts-check
// A BullMQ worker whose jobs tell browsers how they are doing, through the SSE gateway.
//
// Each BullMQ job of the `renders` queue is a job on the gateway too (`render-<BullMQ id>`,
// owned by the user in `job.data.owner`): the worker publishes a `stage` when it starts,
// `progress` per frame, and `complete` with the result — or `failed` once BullMQ gives
// up, and a `log` line for each attempt that will be retried. The browser follows
// `/v1/jobs/render-<id>/events` (or the user's own stream) and needs no polling.
//
// Every publish carries an idempotency key made of the job, the attempt and the step, so
// a publish retried after an unknown outcome never shows twice; and the first event of a
// retried attempt reopens the job, in case an earlier attempt had already finished it.
//
//   SSE_REDIS_URL=redis://127.0.0.1:6379 BULLMQ_REDIS_URL=redis://127.0.0.1:6379 \
//     node examples/bullmq-worker.mjs
//   # or, through a gateway's HTTP API:
//   SSE_GATEWAY_URL=http://127.0.0.1:8080 SSE_TOKEN=<publisher token> ... node examples/bullmq-worker.mjs
//
// and add jobs from anywhere: `await new Queue('renders', { connection }).add('render',
// { owner: 'alice', frames: 10 })`.

import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';

import { Worker } from 'bullmq';
import { Publisher } from '@sse-gateway/publisher';

export const QUEUE = 'renders';

/**
 * @typedef {object} RenderData
 * @property {string} owner       the user who watches the job (a gateway user id)
 * @property {number} frames      how many frames to render
 * @property {number} [frameMs]   how long one frame takes (simulated work)
 * @property {number} [failAttempts] attempts that fail on purpose (to show retries)
 */

/**
 * Renders one job, publishing as it goes; returns the result BullMQ stores.
 * @param {import('bullmq').Job<RenderData>} job
 * @param {Publisher} sse
 */
export async function render(job, sse) {
  const { owner, frames, frameMs = 0, failAttempts = 0 } = job.data;
  const events = sse.job(`render-${job.id}`, owner);
  const attempt = job.attemptsMade;
  const key = (/** @type {string} */ step) => `render-${job.id}:${attempt}:${step}`;
  await events.stage('Rendering', { idempotencyKey: key('start'), reopen: attempt > 0 });
  for (let frame = 1; frame <= frames; frame += 1) {
    await sleep(frameMs);
    if (attempt < failAttempts && frame === Math.ceil(frames / 2)) {
      throw new Error(`GPU lost at frame ${frame}`);
    }
    const percent = Math.round((frame * 100) / frames);
    await events.progress(percent, `Frame ${frame}/${frames}`, { idempotencyKey: key(`frame-${frame}`) });
    await job.updateProgress(percent);
  }
  const result = { url: `https://cdn.example/renders/${job.id}.mp4`, frames };
  await events.complete(result, { idempotencyKey: key('complete') });
  return result;
}

/**
 * A worker on the `renders` queue. Jobs that BullMQ will retry get a `log` line; jobs it
 * gives up on get `failed`.
 * @param {{ connection: import('bullmq').ConnectionOptions, sse: Publisher, concurrency?: number }} options
 */
export function renderWorker({ connection, sse, concurrency = 4 }) {
  const worker = new Worker(QUEUE, (/** @type {import('bullmq').Job<RenderData>} */ job) => render(job, sse), {
    connection,
    concurrency,
  });
  worker.on('failed', (job, error) => {
    if (job === undefined) return;
    const events = sse.job(`render-${job.id}`, job.data.owner);
    const attempts = job.opts.attempts ?? 1;
    const key = `render-${job.id}:${job.attemptsMade}:failed`;
    const published =
      job.attemptsMade < attempts
        ? events.log('warn', `attempt ${job.attemptsMade} failed (${error.message}); retrying`, { idempotencyKey: key })
        : events.fail(error, { idempotencyKey: key });
    published.catch((publishError) => console.error(`render-${job.id}: could not publish the failure:`, publishError));
  });
  return worker;
}

async function main() {
  const env = process.env;
  const sse = env.SSE_GATEWAY_URL
    ? Publisher.http(env.SSE_GATEWAY_URL, env.SSE_TOKEN ?? '')
    : await Publisher.connect(env.SSE_REDIS_URL ?? 'redis://127.0.0.1:6379');
  const bullmq = new URL(env.BULLMQ_REDIS_URL ?? env.SSE_REDIS_URL ?? 'redis://127.0.0.1:6379');
  const worker = renderWorker({
    connection: { host: bullmq.hostname, port: Number(bullmq.port || 6379), maxRetriesPerRequest: null },
    sse,
  });
  console.log(`rendering jobs of the "${QUEUE}" queue; Ctrl-C to stop`);
  const stop = async () => {
    await worker.close();
    await sse.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await main();
}
