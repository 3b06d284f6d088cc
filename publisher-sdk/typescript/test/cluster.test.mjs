// The cluster variant against a real Redis Cluster (three masters, redis-server and
// `redis-cli --cluster create`): events of users and topics on different shards land on
// the shard of their hash tag, live events go out with SPUBLISH (only a sharded
// subscriber on that shard hears them), the owner key lives on a shard of its own, and
// the fixture scenarios have their outcomes there too.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { Redis } from 'ioredis';

import { AmbiguousError, JobFinishedError, OwnerConflictError, Publisher } from '../dist/index.js';
import { RedisCluster, fixtures, publishInput, waitFor } from './support.mjs';

const doc = fixtures();
let cluster;
let publisher;

before(async () => {
  cluster = await RedisCluster.start(3);
  publisher = await Publisher.cluster(cluster.seeds);
});

after(async () => {
  await publisher?.close();
  await cluster?.stop();
});

test('events land on their shard and go out with SPUBLISH', async () => {
  // Users whose hash tags fall on every shard.
  const users = [];
  const shards = new Set();
  for (let n = 0; shards.size < 3 && n < 200; n += 1) {
    const node = await cluster.nodeOf(`sse:{u:user-${n}}`);
    if (!shards.has(node.port)) {
      shards.add(node.port);
      users.push({ user: `user-${n}`, node });
    }
  }
  assert.equal(users.length, 3, 'one user per shard');
  for (const { user, node } of users) {
    const subscriber = new Redis(node.port, '127.0.0.1');
    const heard = [];
    subscriber.on('smessage', (channel, message) => heard.push({ channel, message }));
    try {
      await subscriber.ssubscribe(`sse:{u:${user}}:job:render-${user}`, `sse:{u:${user}}`);
      const jobId = await publisher.job(`render-${user}`, user).progress(30, 'Encoding');
      const noticeId = await publisher.notify(user, 'notice', { text: 'hi' });
      await waitFor(`three sharded messages for ${user}`, () => heard.length >= 3);
      const job = heard.find((m) => m.channel === `sse:{u:${user}}:job:render-${user}`);
      assert.match(job.message, new RegExp(`^id: ${jobId}\nevent: progress\ndata: \\{"jobId":"render-${user}","type":"progress"`));
      assert.ok(heard.some((m) => m.channel === `sse:{u:${user}}` && m.message.startsWith(`id: ${noticeId}\nevent: notice\n`)));
      // Stored on that shard.
      assert.equal((await node.redis().xrange(`sse:{u:${user}}:joblog:render-${user}`, jobId, jobId)).length, 1);
      const ownerNode = await cluster.nodeOf(`sse:owner:render-${user}`);
      assert.equal(await ownerNode.redis().get(`sse:owner:render-${user}`), user);
    } finally {
      subscriber.disconnect();
    }
  }
  const topicNode = await cluster.nodeOf('sse:{t:news}');
  const id = await publisher.topic('news').publish('flash', { n: 1 });
  assert.equal((await topicNode.redis().xrange('sse:{t:news}:log', id, id)).length, 1);
});

test('every fixture scenario has its outcomes on a cluster', async () => {
  for (const { name, steps } of doc.scenarios) {
    const ids = [];
    for (const [n, { input, expect }] of steps.entries()) {
      let outcome;
      let id = null;
      try {
        id = await publishInput(publisher, input);
        outcome = expect.sameIdAsStep === undefined ? 'published' : 'duplicate';
      } catch (error) {
        if (error instanceof OwnerConflictError) outcome = 'owner_conflict';
        else if (error instanceof JobFinishedError) outcome = 'job_finished';
        else throw error;
      }
      assert.equal(outcome, expect.outcome, `${name}, step ${n}`);
      if (expect.sameIdAsStep !== undefined) assert.equal(id, ids[expect.sameIdAsStep], `${name}, step ${n}`);
      ids.push(id);
    }
  }
});

test("a node's connection closing under a command makes it ambiguous at once", async () => {
  const node = await cluster.nodeOf('sse:{u:paused}');
  await node.redis().client('PAUSE', '5000', 'WRITE');
  try {
    const started = Date.now();
    const published = publisher.notify('paused', 'notice', {}).catch((error) => error);
    // The publish waits on the paused node; cut the connection it is waiting on.
    const id = await waitFor('the publish to wait on the node', async () => {
      const clients = await node.redis().client('LIST');
      return clients.split('\n').map((line) => /^id=(\d+) .* cmd=(eval|evalsha)\b/.exec(line)).find(Boolean)?.[1];
    });
    await node.redis().client('KILL', 'ID', id);
    const error = await published;
    assert.ok(error instanceof AmbiguousError, String(error));
    assert.match(error.message, /in flight/);
    assert.ok(Date.now() - started < 3000, 'well before the command timeout');
  } finally {
    await node.redis().client('UNPAUSE');
  }
});
