// Concurrent publishes through the TypeScript SDK against a Redis: job events of 100 jobs
// (10 users), `--concurrency` in flight at once, or batches of `--batch` events. Prints one
// JSON line: events, seconds. Run by measure.py, which reads Redis's CPU and I/O counters.
//
//   node driver.mjs <redis url> <events> <concurrency> <batch> <auto-pipelining: on|off>

import { CONNECTION_OPTIONS } from '../../publisher-sdk/typescript/dist/redis.js';
import { Publisher } from '../../publisher-sdk/typescript/dist/index.js';

const [url, eventsText, concurrencyText, batchText, pipelining] = process.argv.slice(2);
const [events, concurrency, batch] = [Number(eventsText), Number(concurrencyText), Number(batchText)];
// The "before" figure: the package's connection options without auto-pipelining.
CONNECTION_OPTIONS.enableAutoPipelining = pipelining === 'on';
const publisher = await Publisher.connect(url);
const jobs = Array.from({ length: 100 }, (_, n) => publisher.job(`bench-${n}`, `user-${n % 10}`));
for (const job of jobs) await job.stage('start');
process.stdout.write('ready\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
process.stdin.pause();
const started = process.hrtime.bigint();
let next = 0;
async function worker() {
  while (next < events) {
    if (batch > 1) {
      const b = publisher.batch();
      for (let n = 0; n < batch && next < events; n += 1, next += 1) b.progress(jobs[next % 100], next % 100);
      const results = await b.send();
      if (results.some((r) => r.status !== 'fulfilled')) throw new Error(String(results.find((r) => r.status !== 'fulfilled').reason));
    } else {
      const n = next++;
      await jobs[n % 100].progress(n % 100);
    }
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
process.stdout.write(`${JSON.stringify({ events, seconds })}\n`);
await publisher.close();
