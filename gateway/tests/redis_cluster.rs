//! Redis Cluster for real: 3 masters + 3 replicas started by the test, two gateway nodes
//! with `--redis-cluster`, users whose keys live on different shards, and a master killed
//! while events flow: a replica takes over, the nodes renew their sharded subscriptions
//! and backfill, and every client ends with exactly its stream.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sse_publisher::testing::RedisCluster;
use sse_publisher::{Publisher, RedisOptions};
use support::follow::{follow, Followed};
use support::http::Request;
use support::sse::OpenResultExt;
use support::{bounded, expect_retry, Backend, Gateway};

const LIMIT: Duration = Duration::from_secs(180);

/// A stream's ids after `after`, read from the cluster.
fn ids_after(cluster: &redis::cluster::ClusterClient, key: &str, after: &str) -> Vec<String> {
    let mut connection = cluster.get_connection().expect("cluster connection");
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .expect("XRANGE");
    let after = support::parse_id(after);
    entries
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| support::parse_id(id) > after)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_carry_their_users_and_a_master_failover_loses_nothing() {
    bounded(LIMIT, async {
        let mut cluster = RedisCluster::start(3, 1);
        let seeds = cluster.seeds();
        let prefix = format!("k{:08x}:", rand::random::<u32>());
        let secret = support::gateway::random_secret();
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let node = Gateway::builder(Backend::Embedded)
                .secret(&secret)
                .flag("--redis-cluster", seeds.join(","))
                .flag("--redis-prefix", prefix.clone())
                .flag("--retry", "300ms")
                .flag("--heartbeat", "1s")
                .start()
                .await;
            node.wait_ready(Duration::from_secs(20)).await;
            nodes.push(node);
        }
        eprintln!("progress: nodes ready");
        // One user per shard.
        let mut users: Vec<(String, usize)> = Vec::new();
        for n in 0.. {
            let user = format!("user-{n}");
            let master = cluster.master_of(cluster.slot(&format!("{{u:{user}}}")));
            if !users.iter().any(|(_, m)| *m == master) {
                users.push((user, master));
            }
            if users.len() == 3 {
                break;
            }
        }
        let publisher =
            Publisher::connect_cluster(&seeds.iter().map(String::as_str).collect::<Vec<_>>(), RedisOptions::default().prefix(prefix.clone()))
                .await
                .unwrap();
        let jobs: Vec<(String, String)> =
            users.iter().flat_map(|(user, _)| (0..2).map(move |j| (format!("{user}-job-{j}"), user.clone()))).collect();
        for (job, owner) in &jobs {
            publisher.job(job.clone(), owner.clone()).stage("queued").await.unwrap();
        }
        // Followers on both nodes: two per job, one per user.
        let mut followers = Vec::new();
        for (i, (job, owner)) in jobs.iter().enumerate() {
            for node in &nodes {
                let token = node.token(owner);
                let follower = follow(node.addr, token, format!("/v1/jobs/{job}/events"), |e| e.event == "complete");
                followers.push((format!("{}{{u:{owner}}}:joblog:{job}", prefix), tokio::spawn(follower)));
            }
            let _ = i;
        }
        for (k, (user, _)) in users.iter().enumerate() {
            let node = &nodes[k % nodes.len()];
            let follower = follow(node.addr, node.token(user), "/v1/users/me/events".into(), |e| e.event == "done");
            followers.push((format!("{prefix}{{u:{user}}}:log"), tokio::spawn(follower)));
        }
        support::wait_until("every follower is streaming", Duration::from_secs(30), || async {
            let mut open = 0.0;
            for node in &nodes {
                open += node.metric("sse_gateway_open_connections").await;
            }
            open >= (jobs.len() * 2 + users.len()) as f64
        })
        .await;

        eprintln!("progress: followers streaming");
        // Publish rounds; kill the master of the first user's shard a third of the way in.
        let victim = users[0].1;
        const ROUNDS: usize = 45;
        for round in 1..=ROUNDS {
            if round == ROUNDS / 3 {
                cluster.kill(victim);
            }
            for (job, owner) in &jobs {
                let handle = publisher.job(job.clone(), owner.clone());
                // During the failover a publish can fail; retry until it lands. A failure
                // whose outcome was unknown could land twice: the oracle is the stream
                // itself, so the followers are still held to exactly what Redis kept.
                loop {
                    let result = if round == ROUNDS {
                        handle.complete(json!({"round": round})).await
                    } else {
                        handle.event("progress", json!({"progress": round * 2, "round": round})).await
                    };
                    match result {
                        Ok(_) => break,
                        Err(error) if error.is_transient() => {
                            let slot = cluster.slot(&format!("{{u:{owner}}}"));
                            eprintln!("progress: retrying a publish after {error} (slot {slot} master: node {})", cluster.master_of(slot));
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(error) => panic!("publish failed: {error:?}"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
            if round % 5 == 0 {
                eprintln!("progress: round {round}");
            }
        }
        for (user, _) in &users {
            loop {
                match publisher.notify(user, "done", json!({})).await {
                    Ok(_) => break,
                    Err(error) if error.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(error) => panic!("publish failed: {error:?}"),
                }
            }
        }
        cluster.wait_healthy(Duration::from_secs(20));

        let client = redis::cluster::ClusterClient::new(seeds.iter().map(|s| format!("redis://{s}")).collect::<Vec<_>>())
            .expect("cluster client");
        let mut reconnects = 0;
        let mut checked = 0;
        for (key, follower) in followers {
            let followed: Followed = follower.await.expect("follower");
            eprintln!("progress: {key} done ({} events, {} reconnects, refusals {:?})", followed.events.len(), followed.reconnects, followed.refusals);
            let truth = ids_after(&client, &key, &followed.opening);
            let seen: Vec<String> = followed.events.iter().map(|e| e.id.clone()).collect();
            assert_eq!(seen, truth, "{key}: exactly the stream after the snapshot, once, in order");
            reconnects += followed.reconnects;
            checked += 1;
        }
        eprintln!("redis cluster: {checked} followers complete across a master failover ({reconnects} reconnects)");

        // After the failover, resuming on the other node replays from the new master.
        let (job, owner) = &jobs[0];
        let key = format!("{prefix}{{u:{owner}}}:joblog:{job}");
        let all = ids_after(&client, &key, "0-0");
        let mut resumed = nodes[1]
            .open(Request::get(format!("/v1/jobs/{job}/events")).bearer(&nodes[1].token(owner)).last_event_id(&all[0]))
            .await
            .stream();
        expect_retry(&mut resumed, 300).await;
        let mut replayed = vec![all[0].clone()];
        while replayed.len() < all.len() {
            replayed.push(resumed.next_event().await.id);
        }
        assert_eq!(replayed, all);
        resumed.expect_clean_end().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_to_another_shard_keeps_its_streams_whole() {
    bounded(LIMIT, async {
        let cluster = RedisCluster::start(3, 0);
        let seeds = cluster.seeds();
        let prefix = format!("m{:08x}:", rand::random::<u32>());
        let node = Gateway::builder(Backend::Embedded)
            .flag("--redis-cluster", seeds.join(","))
            .flag("--redis-prefix", prefix.clone())
            .flag("--retry", "300ms")
            .flag("--heartbeat", "1s")
            .start()
            .await;
        node.wait_ready(Duration::from_secs(20)).await;
        let user = "alice";
        let slot = cluster.slot(&format!("{{u:{user}}}"));
        let from = cluster.master_of(slot);
        let to = (0..3)
            .find(|&i| i != from && cluster.node(i).pid().is_some())
            .expect("another master");
        let seed_refs: Vec<&str> = seeds.iter().map(String::as_str).collect();
        let publisher =
            Publisher::connect_cluster(&seed_refs, RedisOptions::default().prefix(prefix.clone()))
                .await
                .unwrap();
        let job = publisher.job("moving", user);
        job.stage("queued").await.unwrap();
        let token = node.token(user);
        let job_follower = tokio::spawn(follow(
            node.addr,
            token.clone(),
            "/v1/jobs/moving/events".into(),
            |e| e.event == "complete",
        ));
        let user_follower = tokio::spawn(follow(
            node.addr,
            token,
            "/v1/users/me/events".into(),
            |e| e.event == "done",
        ));
        support::wait_until("both followers stream", Duration::from_secs(20), || async {
            node.metric("sse_gateway_open_connections").await >= 2.0
        })
        .await;
        const ROUNDS: usize = 60;
        for round in 1..=ROUNDS {
            if round == ROUNDS / 2 {
                cluster.move_slot(slot, to);
                assert_eq!(cluster.master_of(slot), to, "the slot moved");
            }
            loop {
                let result = if round == ROUNDS {
                    job.complete(json!({"round": round})).await
                } else {
                    job.event("progress", json!({"progress": round, "round": round}))
                        .await
                };
                match result {
                    Ok(_) => break,
                    Err(error) if error.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(error) => panic!("publish failed: {error:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publisher.notify(user, "done", json!({})).await.unwrap();
        let client = redis::cluster::ClusterClient::new(
            seeds
                .iter()
                .map(|s| format!("redis://{s}"))
                .collect::<Vec<_>>(),
        )
        .expect("cluster client");
        for (key, follower) in [
            (format!("{prefix}{{u:{user}}}:joblog:moving"), job_follower),
            (format!("{prefix}{{u:{user}}}:log"), user_follower),
        ] {
            let followed: Followed = follower.await.expect("follower");
            let seen: Vec<String> = followed.events.iter().map(|e| e.id.clone()).collect();
            assert_eq!(
                seen,
                ids_after(&client, &key, &followed.opening),
                "{key}: every event once, in order"
            );
        }
    })
    .await
}

/// Topics on Redis Cluster: three topics whose keys live on three different shards, each
/// followed alone and all three in one stream on both nodes, and the master of one topic's
/// shard killed while events flow: every follower ends with every topic's events exactly
/// as the cluster kept them, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_three_shards_survive_a_master_failover() {
    bounded(LIMIT, async {
        let mut cluster = RedisCluster::start(3, 1);
        let seeds = cluster.seeds();
        let prefix = format!("q{:08x}:", rand::random::<u32>());
        let secret = support::gateway::random_secret();
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let node = Gateway::builder(Backend::Embedded)
                .secret(&secret)
                .flag("--redis-cluster", seeds.join(","))
                .flag("--redis-prefix", prefix.clone())
                .flag("--public-topic", "shard.*")
                .flag("--retry", "300ms")
                .flag("--heartbeat", "1s")
                .start()
                .await;
            node.wait_ready(Duration::from_secs(20)).await;
            nodes.push(node);
        }
        // One topic per shard, sorted (the order of a composite id).
        let mut topics: Vec<(String, usize)> = Vec::new();
        for n in 0.. {
            let topic = format!("shard.{n}");
            let master = cluster.master_of(cluster.slot(&format!("{{t:{topic}}}")));
            if !topics.iter().any(|(_, m)| *m == master) {
                topics.push((topic, master));
            }
            if topics.len() == 3 {
                break;
            }
        }
        topics.sort();
        let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
        let publisher = Publisher::connect_cluster(
            &seeds.iter().map(String::as_str).collect::<Vec<_>>(),
            RedisOptions::default().prefix(prefix.clone()),
        )
        .await
        .unwrap();
        let mut followers = Vec::new();
        for node in &nodes {
            let token = Some(node.token("viewer"));
            let all = format!(
                "/v1/topics/events?topic={}&topic={}&topic={}",
                names[0], names[1], names[2]
            );
            followers.push((
                names.clone(),
                tokio::spawn(ends(node.addr, token.clone(), all, 3)),
            ));
            for name in &names {
                let one = format!("/v1/topics/{name}/events");
                followers.push((
                    vec![name.clone()],
                    tokio::spawn(ends(node.addr, token.clone(), one, 1)),
                ));
            }
        }
        support::wait_until(
            "every follower is streaming",
            Duration::from_secs(30),
            || async {
                let mut open = 0.0;
                for node in &nodes {
                    open += node.metric("sse_gateway_open_connections").await;
                }
                open >= followers.len() as f64
            },
        )
        .await;

        let victim = topics[0].1;
        const ROUNDS: usize = 45;
        for round in 1..=ROUNDS {
            if round == ROUNDS / 3 {
                cluster.kill(victim);
            }
            for name in &names {
                let event = if round == ROUNDS { "end" } else { "note" };
                // A publish during the failover may fail, and one whose outcome was unknown
                // may land twice: the oracle is what the cluster kept.
                loop {
                    match publisher
                        .topic(name.clone())
                        .publish(event, json!({"round": round}))
                        .await
                    {
                        Ok(_) => break,
                        Err(error) if error.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(error) => panic!("publish failed: {error:?}"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        cluster.wait_healthy(Duration::from_secs(20));

        let client = redis::cluster::ClusterClient::new(
            seeds
                .iter()
                .map(|s| format!("redis://{s}"))
                .collect::<Vec<_>>(),
        )
        .expect("cluster client");
        let mut reconnects = 0;
        for (followed_names, follower) in followers {
            let followed: Followed = follower.await.expect("follower");
            assert!(
                followed.refusals.is_empty(),
                "refused {:?}",
                followed.refusals
            );
            reconnects += followed.reconnects;
            let sorted: Vec<&str> = followed_names.iter().map(String::as_str).collect();
            let opening: Vec<String> = if sorted.len() == 1 {
                vec![followed.opening.clone()]
            } else {
                sse_publisher::wire::feeds::decode(&followed.opening, &sorted)
                    .expect("a composite opening id")
                    .into_iter()
                    .map(|p| p.map_or_else(|| "0-0".to_owned(), |id| id.to_string()))
                    .collect()
            };
            for (t, name) in sorted.iter().enumerate() {
                let seen: Vec<String> = followed
                    .events
                    .iter()
                    .filter(|event| event.json()["topic"] == *name)
                    .map(|event| {
                        if sorted.len() == 1 {
                            event.id.clone()
                        } else {
                            sse_publisher::wire::feeds::decode(&event.id, &sorted).unwrap()[t]
                                .unwrap()
                                .to_string()
                        }
                    })
                    .collect();
                let truth = ids_after(&client, &format!("{prefix}{{t:{name}}}:log"), &opening[t]);
                assert!(
                    truth.len() >= ROUNDS,
                    "{name}: every round kept ({})",
                    truth.len()
                );
                assert_eq!(
                    seen, truth,
                    "{name} in {sorted:?}: exactly what the cluster kept, once, in order"
                );
            }
        }
        eprintln!(
            "redis cluster topics: {} shards, master {victim} killed, {reconnects} reconnects",
            names.len()
        );
    })
    .await
}

/// Follows a topic stream until `count` `end` events.
async fn ends(
    addr: std::net::SocketAddr,
    token: Option<String>,
    target: String,
    count: usize,
) -> Followed {
    let mut left = count;
    support::follow::follow_feed(addr, token, target, move |event| {
        if event.event == "end" {
            left -= 1;
        }
        left == 0
    })
    .await
}
