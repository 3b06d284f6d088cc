"""The Redis transport against a real redis-server (one per test): every fixture case lands
under the fixture's keys with the fixture's bytes, frames included; the scenarios' outcomes;
owner registration and its cache; NOSCRIPT; outages; lost answers; credentials; TLS; asyncio's
automatic pipelining."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import redis
from cases import outcome, publish, publish_async, with_ts
from support import CuttingProxy, Inspector, RedisServer, TlsFiles, fixtures, next_message

from sse_publisher import (
    Ambiguous,
    AsyncJob,
    AsyncPublisher,
    EventOptions,
    InvalidArgument,
    OwnerConflict,
    Publisher,
    RedisOptions,
    Retention,
    RetryPolicy,
    Unauthorized,
    Unavailable,
)

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05)


def stream_key(case: dict[str, Any]) -> str:
    keys: list[str] = case["expect"]["publish"]["keys"]
    return keys[1] if case["input"]["kind"] == "job" else keys[0]


def channel(case: dict[str, Any]) -> str:
    args: list[str] = case["expect"]["publish"]["args"]
    return args[10] if case["input"]["kind"] == "job" else args[4]


def channels(cases: list[dict[str, Any]]) -> list[str]:
    """Every channel the cases publish to: a job event goes to its owner's too."""
    names = {channel(case) for case in cases}
    names |= {case["expect"]["publish"]["args"][11] for case in cases if case["input"]["kind"] == "job"}
    return sorted(names)


def check_landed(server: RedisServer, pubsub: redis.client.PubSub, case: dict[str, Any], event_id: str) -> None:
    """What the publish of `case` left in Redis and sent on its channel."""
    name, case_input, expect = case["name"], case["input"], case["expect"]
    client = server.client()
    entries = client.xrange(stream_key(case), event_id, event_id)
    assert len(entries) == 1, f"{name}: no entry {event_id} in {stream_key(case)}"
    fields = entries[0][1]
    ts = json.loads(fields["data"])["ts"]
    assert fields["data"] == with_ts(expect["dataJson"], case_input["ts"], ts), name
    assert fields["type"] == case_input["type"], name
    keys, args = expect["publish"]["keys"], expect["publish"]["args"]
    if case_input["kind"] == "job":
        # The state fields this event set, as the fixture's call gives them.
        pairs = dict(zip(args[15::2], args[16::2], strict=True))
        stored = client.hgetall(keys[0])
        assert {field: stored[field] for field in pairs} == pairs, name
        assert stored["lastEventId"] == f'"{event_id}"', name
        assert client.get(expect["registerOwner"]["keys"][0]) == case_input["owner"], name
    if "idempotencyKey" in case_input:
        record = keys[4] if case_input["kind"] == "job" else keys[1]
        assert client.get(record) == event_id, f"{name}: the idempotency record"
    # The frame on the channel: the fixture's, with this stream's id and the real ts. A
    # job's event goes to its job's channel, then (with the user stream's id) its owner's.
    frame = with_ts(expect["frame"], case_input["ts"], ts)
    sample = f"id: {fixtures()['sampleId']}\n"
    message = next_message(pubsub)
    assert (message["channel"], message["data"]) == (channel(case), frame.replace(sample, f"id: {event_id}\n")), name
    if case_input["kind"] == "job":
        user_id = client.last_id(keys[2])
        message = next_message(pubsub)
        assert (message["channel"], message["data"]) == (args[11], frame.replace(sample, f"id: {user_id}\n")), name


def accepted_cases(wire: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for case in wire["cases"] if "error" not in case["expect"]]


def test_every_fixture_case_lands_as_the_fixture_says(redis_server: RedisServer, wire: dict[str, Any]) -> None:
    cases = accepted_cases(wire)
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(*channels(cases))
    with Publisher.connect(redis_server.url, RedisOptions(prefix=wire["prefix"])) as publisher:
        for case in cases:
            check_landed(redis_server, pubsub, case, publish(publisher, case["input"]))
    pubsub.close()


async def test_every_fixture_case_lands_as_the_fixture_says_asyncio(
    redis_server: RedisServer, wire: dict[str, Any]
) -> None:
    cases = accepted_cases(wire)
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(*channels(cases))
    async with await AsyncPublisher.connect(redis_server.url, RedisOptions(prefix=wire["prefix"])) as publisher:
        for case in cases:
            check_landed(redis_server, pubsub, case, await publish_async(publisher, case["input"]))
    pubsub.close()


def check_state(server: RedisServer, step_input: dict[str, Any], state: dict[str, Any], where: str) -> None:
    stored = server.client().hgetall(f"sse:{{u:{step_input['owner']}}}:job:{step_input['job']}")
    for field, value in state.items():
        assert json.loads(stored[field]) == value, f"{where}: {field}"


def test_every_fixture_scenario_has_its_outcomes(redis_server: RedisServer, wire: dict[str, Any]) -> None:
    with Publisher.connect(redis_server.url) as publisher:
        for scenario in wire["scenarios"]:
            ids: list[str | None] = []
            for n, step in enumerate(scenario["steps"]):
                where = f"{scenario['name']}, step {n}"
                try:
                    result: str | Exception = publish(publisher, step["input"])
                except (OwnerConflict, Exception) as error:
                    result = error
                assert outcome(step["expect"], result) == step["expect"]["outcome"], where
                event_id = result if isinstance(result, str) else None
                if "sameIdAsStep" in step["expect"]:
                    assert event_id == ids[step["expect"]["sameIdAsStep"]], f"{where}: the first id"
                if "state" in step["expect"]:
                    check_state(redis_server, step["input"], step["expect"]["state"], where)
                ids.append(event_id)


async def test_every_fixture_scenario_has_its_outcomes_asyncio(redis_server: RedisServer, wire: dict[str, Any]) -> None:
    async with await AsyncPublisher.connect(redis_server.url) as publisher:
        for scenario in wire["scenarios"]:
            ids: list[str | None] = []
            for n, step in enumerate(scenario["steps"]):
                where = f"{scenario['name']}, step {n}"
                try:
                    result: str | Exception = await publish_async(publisher, step["input"])
                except Exception as error:
                    result = error
                assert outcome(step["expect"], result) == step["expect"]["outcome"], where
                event_id = result if isinstance(result, str) else None
                if "sameIdAsStep" in step["expect"]:
                    assert event_id == ids[step["expect"]["sameIdAsStep"]], f"{where}: the first id"
                if "state" in step["expect"]:
                    check_state(redis_server, step["input"], step["expect"]["state"], where)
                ids.append(event_id)


def test_every_method_writes_the_contract_keys(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with Publisher.connect(redis_server.url) as publisher:
        job = publisher.job("j1", "u1")
        ids = [
            job.progress(45, "Encoding"),
            job.stage("Muxing"),
            job.log("warn", "slow\nframe"),
            job.event("thumbnail", {"url": "/t.png"}, options=EventOptions(correlation_id="c-9")),
            job.complete({"outputPath": "out.mp4"}),
        ]
        entries = client.xrange("sse:{u:u1}:joblog:j1")
        assert [entry_id for entry_id, _ in entries] == ids
        assert [fields["type"] for _, fields in entries] == ["progress", "stage", "log", "thumbnail", "complete"]
        thumbnail = json.loads(entries[3][1]["data"])
        assert (thumbnail["jobId"], thumbnail["correlationId"], thumbnail["url"]) == ("j1", "c-9", "/t.png")
        assert len(client.xrange("sse:{u:u1}:log")) == 5, "every job event is in the owner's stream too"
        state = client.hgetall("sse:{u:u1}:job:j1")
        assert (state["status"], state["progress"], state["stage"]) == ('"completed"', "100", '"Muxing"')
        assert state["result"] == '{"outputPath":"out.mp4"}'
        assert state["lastEventId"] == f'"{ids[-1]}"'
        assert client.zrange("sse:{u:u1}:jobs") == ["j1"]
        assert client.get("sse:owner:j1") == "u1"

        publisher.job("j2", "u1").fail("disk full")
        assert client.hget("sse:{u:u1}:job:j2", "error") == '"disk full"'
        publisher.job("j3", "u1").cancel("user asked")
        assert [client.hget("sse:{u:u1}:job:j3", f) for f in ("status", "message")] == ['"cancelled"', '"user asked"']

        notice = publisher.notify("u1", "notice", {"text": "hi"})
        last_id, last = client.xrange("sse:{u:u1}:log")[-1]
        assert last_id == notice
        assert json.loads(last["data"]) == {
            "userId": "u1",
            "type": "notice",
            "ts": json.loads(last["data"])["ts"],
            "text": "hi",
        }
        news = publisher.topic("news").publish("announcement", {"title": "at 18:00"})
        assert client.xrange("sse:{t:news}:log")[-1][0] == news


def test_another_owner_is_a_typed_conflict_and_writes_nothing(redis_server: RedisServer) -> None:
    with Publisher.connect(redis_server.url) as first, Publisher.connect(redis_server.url) as second:
        first.job("shared", "u1").stage("a")
        with pytest.raises(OwnerConflict) as conflict:
            second.job("shared", "u2").stage("b")
        assert conflict.value.job == "shared"
        assert not conflict.value.transient
    client = redis_server.client()
    assert not client.exists("sse:{u:u2}:joblog:shared", "sse:{u:u2}:log", "sse:{u:u2}:job:shared")
    assert len(client.xrange("sse:{u:u1}:joblog:shared")) == 1


def test_a_known_owner_is_not_registered_again(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with Publisher.connect(redis_server.url) as publisher:
        job = publisher.job("cached", "u1")
        job.stage("one")
        assert client.get("sse:owner:cached") == "u1"
        client.command("DEL", "sse:owner:cached")
        job.stage("two")
        assert client.get("sse:owner:cached") is None, "the cached owner skipped the registration"
        with pytest.raises(OwnerConflict):
            client.command("SET", "sse:owner:cached", "u1")
            publisher.job("cached", "u2").stage("other owner")
    with Publisher.connect(redis_server.url) as fresh:
        client.command("DEL", "sse:owner:cached")
        fresh.job("cached", "u1").stage("three")
        assert client.get("sse:owner:cached") == "u1", "a new publisher registers"


def test_scripts_are_loaded_again_after_script_flush(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with Publisher.connect(redis_server.url) as publisher:
        job = publisher.job("j1", "u1")
        job.stage("one")
        client.command("SCRIPT", "FLUSH")
        job.stage("two")
        client.command("SCRIPT", "FLUSH")
        publisher.notify("u1", "notice")
    assert [fields["type"] for _, fields in client.xrange("sse:{u:u1}:joblog:j1")] == ["stage", "stage"]
    assert len(client.xrange("sse:{u:u1}:log")) == 3, "exactly one event per call"


def test_prefix_and_retention_are_written(redis_server: RedisServer) -> None:
    retention = Retention(retention_ms=60_000, user_retention_ms=600_000, idempotency_window_ms=30_000)
    client = redis_server.client()
    with Publisher.connect(redis_server.url, RedisOptions(prefix="app1:", retention=retention)) as publisher:
        job = publisher.job("j1", "u1")
        job.stage("running", options=EventOptions(idempotency_key="k-1"))
        # Renewed TTLs are the retention plus the refresh window (min(1 min, 600 s / 10)).
        assert 590_000 < client.pttl("app1:{u:u1}:job:j1") <= 660_000, "a running job lives as long as its user"
        assert 0 < client.pttl("app1:{u:u1}:idem:k-1") <= 30_000
        job.complete()
        for key in ("app1:{u:u1}:job:j1", "app1:{u:u1}:joblog:j1"):
            assert 0 < client.pttl(key) <= 60_000, key
        for key in ("app1:{u:u1}:log", "app1:{u:u1}:jobs", "app1:owner:j1"):
            assert 590_000 < client.pttl(key) <= 660_000, key
    assert not client.keys("sse:*")


def test_an_outage_is_retried_then_reported_and_publishing_resumes(redis_server: RedisServer) -> None:
    with Publisher.connect(redis_server.url, RedisOptions(retry=FAST_RETRY)) as publisher:
        job = publisher.job("j1", "u1")
        job.stage("before")
        redis_server.stop()
        with pytest.raises(Unavailable) as unavailable:
            job.stage("during")
        assert unavailable.value.attempts == 3
        assert unavailable.value.transient
        redis_server.start()
        # The pooled connection to the old process is found closed and replaced.
        job.stage("after")
    stages = [json.loads(f["data"])["stage"] for _, f in redis_server.client().xrange("sse:{u:u1}:joblog:j1")]
    assert stages == ["after"], "the restarted server is empty; nothing was written while it was down"


def test_a_publish_during_a_short_outage_succeeds(redis_server: RedisServer) -> None:
    retry = RetryPolicy(attempts=200, initial_backoff=0.01, max_backoff=0.02)
    with Publisher.connect(redis_server.url, RedisOptions(retry=retry)) as publisher:
        job = publisher.job("j1", "u1")
        job.stage("before")
        redis_server.stop()
        published: list[str] = []
        worker = threading.Thread(target=lambda: published.append(job.stage("during")))
        worker.start()
        redis_server.start()
        worker.join(timeout=10)
        assert len(published) == 1
    entries = redis_server.client().xrange("sse:{u:u1}:joblog:j1")
    assert [entry_id for entry_id, _ in entries] == published


def test_a_lost_answer_is_ambiguous_without_a_key_and_retried_with_one(redis_server: RedisServer) -> None:
    proxy = CuttingProxy(redis_server.port, trigger=b"cut-here", cuts=1)
    client = redis_server.client()
    try:
        with Publisher.connect(f"redis://127.0.0.1:{proxy.port}", RedisOptions(retry=FAST_RETRY)) as publisher:
            job = publisher.job("j1", "u1")
            job.stage("first")  # loads the script: the cut call below runs it, no NOSCRIPT
            with pytest.raises(Ambiguous) as ambiguous:
                job.stage("cut-here")
            assert ambiguous.value.transient
            assert proxy.cut == 1
            assert len(client.xrange("sse:{u:u1}:joblog:j1")) == 2, "published once, not retried"

            proxy.cuts_left = 1
            key = EventOptions(idempotency_key="stage-2")
            event_id = job.stage("cut-here again", options=key)
            assert proxy.cut == 2
            entries = client.xrange("sse:{u:u1}:joblog:j1")
            assert len(entries) == 3, "the retry found the first publish by its key"
            assert entries[-1][0] == event_id, "and returned its id"
    finally:
        proxy.close()


async def test_asyncio_lost_answer_and_outage(redis_server: RedisServer) -> None:
    proxy = CuttingProxy(redis_server.port, trigger=b"cut-here", cuts=1)
    options = RedisOptions(retry=FAST_RETRY)
    try:
        async with await AsyncPublisher.connect(f"redis://127.0.0.1:{proxy.port}", options) as publisher:
            job = publisher.job("j1", "u1")
            await job.stage("first")
            with pytest.raises(Ambiguous):
                await job.stage("cut-here")
            proxy.cuts_left = 1
            event_id = await job.stage("cut-here", options=EventOptions(idempotency_key="s-1"))
            assert proxy.cut == 2
            entries = redis_server.client().xrange("sse:{u:u1}:joblog:j1")
            assert [entry_id for entry_id, _ in entries][-1] == event_id
            assert len(entries) == 3
    finally:
        proxy.close()
    async with await AsyncPublisher.connect(redis_server.url, options) as publisher:
        job = publisher.job("j1", "u1")
        await job.stage("second")
        redis_server.stop()
        # The event loop may not have seen the pooled connection close yet, so the first
        # attempt can end with its outcome unknown: with a key, that is retried too.
        with pytest.raises(Unavailable) as unavailable:
            await job.stage("during", options=EventOptions(idempotency_key="s-2"))
        assert unavailable.value.attempts == 3
        redis_server.start()
        await job.stage("after", options=EventOptions(idempotency_key="s-3"))
    stages = [json.loads(f["data"])["stage"] for _, f in redis_server.client().xrange("sse:{u:u1}:joblog:j1")]
    assert stages == ["after"]


def test_a_slow_answer_is_ambiguous_and_a_keyed_publish_is_retried(redis_server: RedisServer) -> None:
    client = redis_server.client()
    options = RedisOptions(timeout=0.2, retry=RetryPolicy(attempts=20, initial_backoff=0.05, max_backoff=0.1))
    with Publisher.connect(redis_server.url, options) as publisher:
        job = publisher.job("j1", "u1")
        job.stage("first")
        # Redis holds every write for 1 s: no answer within the publisher's timeout. (Redis
        # then drops the held command with the connection the publisher gave up on.)
        client.command("CLIENT", "PAUSE", 1000, "WRITE")
        with pytest.raises(Ambiguous):
            job.stage("slow")
        client.command("SET", "probe", "1")  # returns once the pause is over
        assert len(client.xrange("sse:{u:u1}:joblog:j1")) == 1, "not retried without a key"
        client.command("CLIENT", "PAUSE", 1000, "WRITE")
        event_id = job.stage("slow, with a key", options=EventOptions(idempotency_key="slow-1"))
    entries = client.xrange("sse:{u:u1}:joblog:j1")
    assert [entry_id for entry_id, _ in entries][1:] == [event_id], "retried past the pause, published once"


def test_a_unix_socket_url() -> None:
    server = RedisServer()
    socket_path = server.dir / "redis.sock"
    server.stop()
    server.extra = ["--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    server.start()
    try:
        with Publisher.connect(f"unix://{socket_path}") as publisher:
            event_id = publisher.notify("u1", "notice")
        assert server.client().last_id("sse:{u:u1}:log") == event_id
    finally:
        server.close()


def test_connect_reports_an_unreachable_redis(redis_server: RedisServer) -> None:
    redis_server.stop()
    with pytest.raises(Unavailable):
        Publisher.connect(redis_server.url)


def test_credentials_are_checked() -> None:
    server = RedisServer(["--requirepass", "s3cret-pass"])
    try:
        with pytest.raises(Unauthorized):
            Publisher.connect(server.url)
        with pytest.raises(Unauthorized):
            Publisher.connect(f"redis://:wrong@127.0.0.1:{server.port}")
        with Publisher.connect(f"redis://:s3cret-pass@127.0.0.1:{server.port}") as publisher:
            event_id = publisher.notify("u1", "notice")
        client = Inspector(redis.Redis(port=server.port, password="s3cret-pass", decode_responses=True))
        assert client.xrange("sse:{u:u1}:log")[0][0] == event_id
    finally:
        server.close()


def test_rediss_with_a_ca_and_a_client_certificate(tls_files: TlsFiles) -> None:
    server = RedisServer(["--tls-auth-clients", "yes"], tls=tls_files)
    try:
        ca = str(tls_files.ca_cert)
        with pytest.raises(Unavailable):
            Publisher.connect(server.url)  # the test CA is not among the system's roots
        with pytest.raises(Unavailable):
            Publisher.connect(server.url, RedisOptions(ca_file=ca))  # no client certificate
        options = RedisOptions(ca_file=ca, client_cert=str(tls_files.client_cert), client_key=str(tls_files.client_key))
        with Publisher.connect(server.url, options) as publisher:
            event_id = publisher.job("j1", "u1").progress(10, "TLS")
        check = Inspector(
            redis.Redis(
                port=server.port,
                ssl=True,
                ssl_ca_certs=ca,
                ssl_certfile=str(tls_files.client_cert),
                ssl_keyfile=str(tls_files.client_key),
                decode_responses=True,
            )
        )
        assert check.xrange("sse:{u:u1}:joblog:j1")[0][0] == event_id
        with pytest.raises(InvalidArgument, match="rediss"):
            Publisher.connect(f"redis://127.0.0.1:{server.port}", RedisOptions(ca_file=ca))
    finally:
        server.close()


async def started_jobs(publisher: AsyncPublisher, count: int, users: int = 1) -> list[AsyncJob]:
    """Jobs j0.. of users u1.. (or u0.. with several users), each with a first event: owners
    registered and the script loaded before what a test measures."""
    jobs = [publisher.job(f"j{n}", f"u{n % users}" if users > 1 else "u1") for n in range(count)]
    for job in jobs:
        await job.stage("first")
    return jobs


def reads(server: RedisServer) -> int:
    """Reads Redis has made from its clients' sockets so far (this query's included)."""
    return int(server.client().raw.info("stats")["total_reads_processed"])


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_asyncio_concurrent_publishes_are_pipelined_and_each_lands_once_in_order(
    redis_server: RedisServer, auto_pipeline: bool
) -> None:
    client = redis_server.client()
    options = RedisOptions(auto_pipeline=auto_pipeline)
    async with await AsyncPublisher.connect(redis_server.url, options) as publisher:
        jobs = await started_jobs(publisher, 20, users=4)

        async def run(n: int) -> list[str]:
            return [await jobs[n].progress(step * 10) for step in range(10)]

        before = reads(redis_server)
        ids = await asyncio.gather(*(run(n) for n in range(20)))
        used = reads(redis_server) - before - 1
    for n, job_ids in enumerate(ids):
        entries = client.xrange(f"sse:{{u:u{n % 4}}}:joblog:j{n}")
        assert [entry_id for entry_id, _ in entries[1:]] == job_ids, f"j{n}: each event once, in order"
        assert [json.loads(f["data"])["progress"] for _, f in entries[1:]] == [step * 10 for step in range(10)]
    # 200 publishes, 20 at a time: one read per round when pipelined, one per publish when not.
    if auto_pipeline:
        assert used < 50, f"{used} reads for 200 pipelined publishes"
    else:
        assert used >= 180, f"{used} reads for 200 publishes on pooled connections"


async def test_asyncio_a_burst_after_script_flush_loads_the_scripts_and_publishes_each_event_once(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    async with await AsyncPublisher.connect(redis_server.url) as publisher:
        jobs = await started_jobs(publisher, 30)
        client.command("SCRIPT", "FLUSH")
        # Two scripts refused in one pipeline: the job events' and the notices'.
        ids = await asyncio.gather(
            *(job.stage("after flush") for job in jobs), *(publisher.notify("u1", "notice", {"n": n}) for n in range(5))
        )
    for n in range(len(jobs)):
        entries = client.xrange(f"sse:{{u:u1}}:joblog:j{n}")
        assert [fields["type"] for _, fields in entries] == ["stage", "stage"], f"j{n}: published once"
        assert entries[-1][0] == ids[n]
    notices = [entry_id for entry_id, f in client.xrange("sse:{u:u1}:log") if f["type"] == "notice"]
    assert notices == sorted(ids[30:]), "each notice once"


async def test_asyncio_a_pipeline_whose_answers_are_lost_is_retried_by_key_and_publishes_once(
    redis_server: RedisServer,
) -> None:
    proxy = CuttingProxy(redis_server.port, trigger=b"cut-here", cuts=1)
    client = redis_server.client()
    try:
        options = RedisOptions(retry=FAST_RETRY)
        async with await AsyncPublisher.connect(f"redis://127.0.0.1:{proxy.port}", options) as publisher:
            jobs = await started_jobs(publisher, 10)
            ids = await asyncio.gather(
                *(
                    job.stage("cut-here" if n == 0 else f"second {n}", options=EventOptions(idempotency_key=f"k{n}"))
                    for n, job in enumerate(jobs)
                )
            )
            assert proxy.cut == 1, "the answers of the pipeline with the trigger were lost"
            # Without keys, every call of a pipeline whose answers are lost is unknown.
            proxy.cuts_left = 1
            outcomes = await asyncio.gather(
                *(job.stage("cut-here" if n == 0 else f"third {n}") for n, job in enumerate(jobs)),
                return_exceptions=True,
            )
            assert proxy.cut == 2
    finally:
        proxy.close()
    assert all(isinstance(outcome, Ambiguous) for outcome in outcomes), outcomes
    for n, event_id in enumerate(ids):
        entries = client.xrange(f"sse:{{u:u1}}:joblog:j{n}")
        assert len(entries) == 3, f"j{n}: first, second (once, though retried), third (unknown to the caller)"
        assert entries[1][0] == event_id, f"j{n}: the retry returned the first publish's id"


async def test_asyncio_a_publish_cancelled_before_its_pipeline_is_written_is_not_published(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    async with await AsyncPublisher.connect(redis_server.url) as publisher:
        jobs = await started_jobs(publisher, 10)
        tasks = [asyncio.ensure_future(job.stage("second")) for job in jobs]
        await asyncio.sleep(0)  # every task has queued its call; the pipeline is not yet sent
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    for n in range(10):
        stages = [json.loads(f["data"])["stage"] for _, f in client.xrange(f"sse:{{u:u1}}:joblog:j{n}")]
        assert stages == (["first"] if n == 3 else ["first", "second"]), f"j{n}"
