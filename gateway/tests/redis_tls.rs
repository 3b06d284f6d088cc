//! TLS to Redis for real (issue 14): a `redis-server` that speaks TLS only (`--tls-port`,
//! `--port 0`) with a certificate of a CA made by the test, gateways on `rediss://` with
//! `--redis-ca-file`, and the Redis behaviour that matters over it: publish (SDK and HTTP),
//! streams, resuming on another node, the pub/sub connection killed, Redis restarted,
//! mutual TLS; a wrong CA refused at start with one line naming the option (exit 64); and a
//! Redis Cluster over TLS through a master failover.

mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use sse_publisher::testing::{RedisCluster, RedisServer, TestCa};
use sse_publisher::{Publisher, RedisOptions};
use support::follow::{follow, Followed};
use support::gateway::BINARY;
use support::http::Request;
use support::sse::OpenResultExt;
use support::{bounded, expect_opening, expect_retry, wait_until, Backend, Gateway};

const LIMIT: Duration = Duration::from_secs(60);

/// A gateway on the TLS Redis `redis`, trusting `ca`.
async fn node(redis: &RedisServer, ca: &TestCa, prefix: &str, secret: &str) -> Gateway {
    Gateway::builder(Backend::Redis)
        .shared_redis(&redis.url(), prefix)
        .secret(secret)
        .flag("--redis-ca-file", ca.cert_file().display().to_string())
        .flag("--heartbeat", "500ms")
        .start()
        .await
}

async fn publisher(redis: &RedisServer, ca: &TestCa, prefix: &str) -> Publisher {
    Publisher::connect_with(
        &redis.url(),
        RedisOptions::default()
            .prefix(prefix.to_owned())
            .tls(ca.client_tls()),
    )
    .await
    .expect("the SDK connects over TLS")
}

fn prefix() -> String {
    format!("tls{:08x}:", rand::random::<u32>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_publish_and_resume_on_another_node_over_tls() {
    bounded(LIMIT, async {
        let ca = TestCa::new("redis test CA");
        let redis = RedisServer::start_tls(&ca, &[]);
        assert!(redis.url().starts_with("rediss://"));
        let (prefix, secret) = (prefix(), support::gateway::random_secret());
        let a = node(&redis, &ca, &prefix, &secret).await;
        let b = node(&redis, &ca, &prefix, &secret).await;
        let publisher = publisher(&redis, &ca, &prefix).await;
        let job = publisher.job("render", "u1");
        let first = job.stage("queued").await.unwrap().to_string();

        let token = a.token("u1");
        let mut stream = a
            .open(Request::get("/v1/jobs/render/events").bearer(&token))
            .await
            .stream();
        let (status, _) = expect_opening(&mut stream, "status").await;
        assert_eq!(status.id, first);
        let mut published = Vec::new();
        for n in 1..=5 {
            published.push(job.progress(n * 10, "encoding").await.unwrap().to_string());
        }
        // And one through the HTTP publish endpoint of the other node (its script over TLS).
        published.push(
            b.publish(
                "render",
                json!({"type": "log", "data": {"message": "via b"}}),
            )
            .await,
        );
        let mut seen = Vec::new();
        for _ in 0..published.len() {
            seen.push(stream.next_event().await.id);
        }
        assert_eq!(
            seen, published,
            "live events over TLS pub/sub, once, in order"
        );

        // Resume on the other node from the third event: the rest is replayed from the
        // stream in Redis, then live events follow.
        drop(stream);
        let mut resumed = b
            .open(
                Request::get("/v1/jobs/render/events")
                    .bearer(&b.token("u1"))
                    .last_event_id(&published[2]),
            )
            .await
            .stream();
        expect_retry(&mut resumed, 3000).await;
        published.push(job.complete(json!({"ok": true})).await.unwrap().to_string());
        let replayed = resumed
            .events_through("complete", Duration::from_secs(10))
            .await;
        let replayed: Vec<String> = replayed.into_iter().map(|e| e.id).collect();
        assert_eq!(replayed, published[3..], "replay then live on another node");
        resumed.expect_clean_end().await;

        // What Redis holds came over TLS: the job's stream has every event.
        let entries: Vec<(String, HashMap<String, String>)> = redis.cmd(&[
            "XRANGE",
            &format!("{prefix}{{u:u1}}:joblog:render"),
            "-",
            "+",
        ]);
        assert_eq!(entries.len(), 1 + published.len());

        // The SDK without the CA (the system's roots only) is refused with a TLS error that
        // is not worth retrying.
        let error = Publisher::connect(&redis.url())
            .await
            .expect_err("the test CA is not a system root");
        assert!(
            matches!(error, sse_publisher::Error::Tls(_)) && !error.is_transient(),
            "an untrusted server is a TLS error: {error:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_kills_and_a_restart_over_tls_lose_nothing() {
    bounded(LIMIT, async {
        let ca = TestCa::new("redis test CA");
        let mut redis = RedisServer::start_tls(&ca, &[]);
        let (prefix, secret) = (prefix(), support::gateway::random_secret());
        let node = node(&redis, &ca, &prefix, &secret).await;
        let publisher = publisher(&redis, &ca, &prefix).await;
        let job = publisher.job("busy", "u1");
        job.stage("start").await.unwrap();
        let token = node.token("u1");
        let mut stream = node
            .open(Request::get("/v1/jobs/busy/events").bearer(&token))
            .await
            .stream();
        expect_opening(&mut stream, "status").await;
        let mut published = Vec::new();

        // The pub/sub connection killed twice, events published meanwhile.
        for kill in 0..2 {
            published.push(job.progress(kill + 1, "before").await.unwrap().to_string());
            let killed: i64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            assert!(
                killed >= 1,
                "the node's pub/sub connection was there to kill"
            );
            published.push(job.progress(kill + 1, "during").await.unwrap().to_string());
            wait_until(
                "the node reconnected its pub/sub over TLS",
                Duration::from_secs(10),
                || async { node.metric("sse_gateway_broker_reconnects_total").await > kill as f64 },
            )
            .await;
        }

        // Redis restarted: the stream stays open, the node comes back, nothing is lost.
        redis.restart();
        node.wait_ready(Duration::from_secs(20)).await;
        let publisher = self::publisher(&redis, &ca, &prefix).await;
        let job = publisher.job("busy", "u1");
        published.push(job.progress(90, "after").await.unwrap().to_string());
        published.push(job.complete(json!({})).await.unwrap().to_string());
        let seen: Vec<String> = stream
            .events_through("complete", Duration::from_secs(20))
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            seen, published,
            "every event once, in order, across kills and a restart"
        );
        stream.expect_clean_end().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    bounded(LIMIT, async {
        let ca = TestCa::new("redis test CA");
        let redis = RedisServer::start_tls(&ca, &["--tls-auth-clients", "yes"]);
        let client = ca.issue("gateway-client");
        let (prefix, secret) = (prefix(), support::gateway::random_secret());
        let node = Gateway::builder(Backend::Redis)
            .shared_redis(&redis.url(), &prefix)
            .secret(&secret)
            .flag("--redis-ca-file", ca.cert_file().display().to_string())
            .flag(
                "--redis-client-cert",
                client.cert_file.display().to_string(),
            )
            .flag("--redis-client-key", client.key_file.display().to_string())
            .start()
            .await;
        let id = node
            .publish(
                "j1",
                json!({"owner": "u1", "type": "stage", "data": {"stage": "a"}}),
            )
            .await;
        let mut stream = node.open_as("u1", "/v1/jobs/j1/events").await.stream();
        let (status, _) = expect_opening(&mut stream, "status").await;
        assert_eq!(status.id, id);

        // Without the client certificate the server refuses the connection: a setting to
        // fix, so the node stops at start naming it.
        let (code, stderr) = run_to_exit(&[
            "--redis-url",
            &redis.url(),
            "--redis-ca-file",
            &ca.cert_file().display().to_string(),
        ])
        .await;
        assert_eq!(code, Some(64), "exit status; stderr {stderr}");
        assert_one_line_naming(&stderr, "--redis-client-cert");
    })
    .await
}

/// Runs a gateway that is expected to stop by itself; returns (exit code, stderr).
async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(BINARY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "an-hs256-secret-of-more-than-32-bytes-0123456789",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the gateway");
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("the gateway stops by itself")
        .expect("wait for the gateway");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The start-up error is one line, `sse-gateway: invalid configuration: <option>: …`.
#[track_caller]
fn assert_one_line_naming(stderr: &str, option: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sse-gateway:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(
        lines[0].starts_with(&format!("sse-gateway: invalid configuration: {option}: ")),
        "the error names {option}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_at_start_and_insecure_is_an_explicit_opt_out() {
    bounded(LIMIT, async {
        let ca = TestCa::new("redis test CA");
        let other = TestCa::new("some other CA");
        let redis = RedisServer::start_tls(&ca, &[]);
        let url = redis.url();

        for args in [
            // Another CA than the server's.
            vec![
                "--redis-url",
                &url,
                "--redis-ca-file",
                other.cert_file().to_str().unwrap(),
            ],
            // No CA: the system's roots do not know the test CA.
            vec!["--redis-url", &url],
        ] {
            let (code, stderr) = run_to_exit(&args).await;
            assert_eq!(code, Some(64), "{args:?}: exit status; stderr {stderr}");
            assert_one_line_naming(&stderr, "--redis-ca-file");
            assert!(stderr.contains("not trusted"), "says why: {stderr}");
        }
        // The same for a cluster seed (checked before any cluster command).
        let seed = format!("rediss://127.0.0.1:{}", redis.port());
        let (code, stderr) = run_to_exit(&[
            "--redis-cluster",
            &seed,
            "--redis-ca-file",
            other.cert_file().to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, Some(64), "cluster: exit status; stderr {stderr}");
        assert_one_line_naming(&stderr, "--redis-ca-file");

        // Turning verification off is possible, explicitly, and said loudly.
        let node = Gateway::builder(Backend::Redis)
            .shared_redis(&url, &prefix())
            .arg("--redis-tls-insecure")
            .start()
            .await;
        node.wait_ready(Duration::from_secs(10)).await;
        assert!(
            node.log_lines()
                .iter()
                .any(|l| l.contains("WARN") && l.contains("--redis-tls-insecure")),
            "the opt-out is logged as a warning"
        );
    })
    .await
}

/// A stream's ids after `after`, read from the TLS cluster.
fn ids_after(client: &redis::cluster::ClusterClient, key: &str, after: &str) -> Vec<String> {
    let mut connection = client.get_connection().expect("cluster connection");
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
async fn a_redis_cluster_over_tls_survives_a_master_failover() {
    bounded(Duration::from_secs(120), async {
        let ca = TestCa::new("redis cluster test CA");
        let mut cluster = RedisCluster::start_tls(3, 1, &ca);
        let seeds = cluster.seeds();
        assert!(seeds.iter().all(|s| s.starts_with("rediss://")));
        let prefix = prefix();
        let node = Gateway::builder(Backend::Embedded)
            .flag("--redis-cluster", seeds.join(","))
            .flag("--redis-ca-file", ca.cert_file().display().to_string())
            .flag("--redis-prefix", prefix.clone())
            .flag("--retry", "300ms")
            .flag("--heartbeat", "1s")
            .start()
            .await;
        node.wait_ready(Duration::from_secs(20)).await;
        let seed_refs: Vec<&str> = seeds.iter().map(String::as_str).collect();
        let publisher = Publisher::connect_cluster(
            &seed_refs,
            RedisOptions::default()
                .prefix(prefix.clone())
                .tls(ca.client_tls()),
        )
        .await
        .expect("the SDK connects to the TLS cluster");

        // Two users on different shards; the first one's master is killed.
        let mut users: Vec<(String, usize)> = Vec::new();
        for n in 0.. {
            let user = format!("user-{n}");
            let master = cluster.master_of(cluster.slot(&format!("{{u:{user}}}")));
            if !users.iter().any(|(_, m)| *m == master) {
                users.push((user, master));
            }
            if users.len() == 2 {
                break;
            }
        }
        let mut followers = Vec::new();
        for (user, _) in &users {
            let job = format!("{user}-job");
            publisher
                .job(job.clone(), user.clone())
                .stage("queued")
                .await
                .unwrap();
            let follower = follow(
                node.addr,
                node.token(user),
                format!("/v1/jobs/{job}/events"),
                |e| e.event == "complete",
            );
            followers.push((
                format!("{prefix}{{u:{user}}}:joblog:{job}"),
                tokio::spawn(follower),
            ));
        }
        wait_until("both followers stream", Duration::from_secs(10), || async {
            node.metric("sse_gateway_open_connections").await >= 2.0
        })
        .await;

        const ROUNDS: usize = 12;
        for round in 1..=ROUNDS {
            if round == ROUNDS / 3 {
                cluster.kill(users[0].1);
            }
            for (user, _) in &users {
                let handle = publisher.job(format!("{user}-job"), user.clone());
                loop {
                    let result = if round == ROUNDS {
                        handle.complete(json!({"round": round})).await
                    } else {
                        handle
                            .event("progress", json!({"progress": round, "round": round}))
                            .await
                    };
                    match result {
                        Ok(_) => break,
                        // The failover: the replica takes over within about a second.
                        Err(error) if error.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(error) => panic!("publish failed: {error:?}"),
                    }
                }
            }
        }
        cluster.wait_healthy(Duration::from_secs(20));

        let client = redis::cluster::ClusterClient::builder(seeds.clone())
            .certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.cert_pem().into_bytes()),
            })
            .build()
            .expect("cluster client");
        for (key, follower) in followers {
            let followed: Followed = follower.await.expect("follower");
            let truth = ids_after(&client, &key, &followed.opening);
            let seen: Vec<String> = followed.events.iter().map(|e| e.id.clone()).collect();
            assert_eq!(seen, truth, "{key}: exactly the stream, once, in order");
            // A publish whose outcome the failover hid may land twice: at least every round.
            assert!(
                truth.len() >= ROUNDS,
                "{key}: every round landed ({})",
                truth.len()
            );
        }
    })
    .await
}
