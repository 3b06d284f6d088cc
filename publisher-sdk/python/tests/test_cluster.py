"""The Redis transport on a real Redis Cluster (3 masters made by `redis-cli --cluster
create`): each user's and topic's keys on the shard of their hash tag, live events by
`SPUBLISH` (sharded pub/sub), scripts loaded again after `SCRIPT FLUSH`."""

from __future__ import annotations

import json

import redis
from support import RedisCluster, next_message

from sse_publisher import AsyncPublisher, Publisher


def sharded_subscriber(cluster: RedisCluster, channel: str) -> redis.client.PubSub:
    pubsub = cluster.node_of(channel).client().raw.pubsub()
    pubsub.ssubscribe(channel)
    return pubsub


def test_publishes_land_on_each_users_shard_and_go_out_by_spublish(cluster: RedisCluster) -> None:
    users = ["alice", "bob", "carol", "dave"]
    assert len({cluster.node_of(f"sse:{{u:{u}}}").port for u in users}) > 1, "the users span shards"
    job_channels = {user: sharded_subscriber(cluster, f"sse:{{u:{user}}}:job:c-{user}") for user in users}
    topic_channel = sharded_subscriber(cluster, "sse:{t:cluster-news}")
    with Publisher.connect_cluster(cluster.seeds[:1]) as publisher:
        for user in users:
            event_id = publisher.job(f"c-{user}", user).progress(30, "Sharded")
            node = cluster.node_of(f"sse:{{u:{user}}}")
            entries = node.client().xrange(f"sse:{{u:{user}}}:joblog:c-{user}")
            assert [entry_id for entry_id, _ in entries] == [event_id]
            assert node.client().hget(f"sse:{{u:{user}}}:job:c-{user}", "status") == '"active"'
            assert cluster.node_of(f"sse:owner:c-{user}").client().get(f"sse:owner:c-{user}") == user
            message = next_message(job_channels[user], sharded=True)
            data = entries[0][1]["data"]
            assert message["data"] == f"id: {event_id}\nevent: progress\ndata: {data}\n\n"
        notice = publisher.notify("bob", "notice", {"text": "hi"})
        log = cluster.node_of("sse:{u:bob}").client().xrange("sse:{u:bob}:log")
        assert log[-1][0] == notice
        news = publisher.topic("cluster-news").publish("flash", {"n": 1})
        message = next_message(topic_channel, sharded=True)
        assert message["data"].startswith(f"id: {news}\nevent: flash\n")
        for node in cluster.nodes:
            node.client().command("SCRIPT", "FLUSH")
        again = publisher.job("c-alice", "alice").stage("after SCRIPT FLUSH")
        stream = cluster.node_of("sse:{u:alice}").client().xrange("sse:{u:alice}:joblog:c-alice")
        assert stream[-1][0] == again and len(stream) == 2
    for pubsub in [*job_channels.values(), topic_channel]:
        pubsub.close()


async def test_asyncio_publishes_on_the_cluster(cluster: RedisCluster) -> None:
    async with await AsyncPublisher.connect_cluster(cluster.seeds) as publisher:
        job = publisher.job("c-async", "erin")
        first = await job.progress(10, "Async")
        second = await job.complete({"ok": True})
        news = await publisher.topic("cluster-news-2").publish("flash")
    entries = cluster.node_of("sse:{u:erin}").client().xrange("sse:{u:erin}:joblog:c-async")
    assert [entry_id for entry_id, _ in entries] == [first, second]
    assert json.loads(entries[1][1]["data"])["result"] == {"ok": True}
    topic = cluster.node_of("sse:{t:cluster-news-2}").client().xrange("sse:{t:cluster-news-2}:log")
    assert [entry_id for entry_id, _ in topic] == [news]
