// A worker that publishes numbered `log` lines to one job, one every `--interval-ms`, until
// its standard input closes (or `--max` lines), with the TypeScript SDK as built into
// publisher-sdk/typescript/dist (`npm run build` there): the Node worker of
// workers.test.js. Same flags and output as the Rust worker
// (publisher-sdk/examples/log_worker.rs) and the Python one (log_worker.py):
// `published <n> <event id>` per line, `done <count>` at the end.

import { parseArgs } from 'node:util';
import { Publisher } from '../../../../publisher-sdk/typescript/dist/index.js';

const { values: args } = parseArgs({
  options: {
    broker: { type: 'string' },                 // redis://host:port, or http://host:port (a gateway)
    prefix: { type: 'string', default: 'sse:' }, // the gateways' --redis-prefix
    token: { type: 'string', default: '' },     // a publisher token (HTTP)
    job: { type: 'string' },
    owner: { type: 'string' },
    name: { type: 'string' },
    'interval-ms': { type: 'string', default: '20' },
    max: { type: 'string', default: '5000' },
  },
});
for (const required of ['broker', 'job', 'owner', 'name']) {
  if (!args[required]) {
    console.error(`log_worker.mjs: --${required} is required`);
    process.exit(2);
  }
}

// Standard input closing is the signal to stop.
let stopped = false;
let wake = () => {};
process.stdin.on('end', () => { stopped = true; wake(); });
process.stdin.resume();

const publisher = args.broker.startsWith('http://')
  ? Publisher.http(args.broker, args.token)
  : await Publisher.connect(args.broker, { prefix: args.prefix });
const job = publisher.job(args.job, args.owner);
const interval = Number(args['interval-ms']);
let n = 0;
try {
  while (n < Number(args.max) && !stopped) {
    n += 1;
    // The key makes a retry of an attempt whose outcome is unknown safe.
    const id = await job.log('info', `${args.name} ${n}`, { idempotencyKey: `${args.name}:${args.job}:${n}` });
    console.log(`published ${n} ${id}`);
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, interval);
      wake = () => { clearTimeout(timer); resolve(); };
    });
  }
} catch (error) {
  console.error(`log_worker.mjs: ${error.name}: ${error.message}`);
  process.exitCode = 1;
} finally {
  await publisher.close();
  process.stdin.destroy();
}
if (!process.exitCode) { console.log(`done ${n}`); }
