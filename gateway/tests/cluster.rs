//! Failure scenarios of a real cluster: redis-server, several gateway processes, and nginx
//! configured as deploy/nginx/render.sh configures it, with clients that behave like
//! EventSource (reconnect by themselves after `retry:` with `Last-Event-ID`). Nodes are
//! killed, drained, restarted; every client must end with exactly the full sequence.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sse_publisher::testing::{free_port, RedisServer};
use sse_publisher::{Publisher, RedisOptions};
use support::follow::{follow, Followed};
use support::http::{self, Request};
use support::sse::Event;
use support::{bounded, wait_until, Backend, Gateway, TempDir};

const LIMIT: Duration = Duration::from_secs(240);

/// Held by each scenario for its whole run: one fleet at a time. Each scenario is a load
/// test of its own (the storm reconnects a thousand clients at once); run side by side on
/// two cores, one starved the other's gateways until their Redis pool's time bounds ran
/// out and resumes were refused with `503` — a failure of the neighbour, not of the
/// scenario. What a node does when it is starved is a question for a benchmark.
static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Every node's `retry:`: clients come back quickly.
const RETRY: &str = "300ms";

/// nginx as the load balancer, started from the project's own config; killed on drop.
struct LoadBalancer {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl LoadBalancer {
    async fn start(ports: &[u16]) -> LoadBalancer {
        let dir = TempDir::new("nginx");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path.join("nginx.conf");
        let render = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx/render.sh");
        let status = Command::new(render)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--run-dir")
            .arg(&dir.path)
            .arg(&config)
            .args(ports.iter().map(u16::to_string))
            .status()
            .expect("run deploy/nginx/render.sh");
        assert!(status.success(), "render.sh failed");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir.path)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.path.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (make test installs it)");
        let lb = LoadBalancer {
            child,
            addr,
            _dir: dir,
        };
        wait_until("nginx answers", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        lb
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._dir.path.join("error.log")).unwrap_or_default();
            let kept = std::env::temp_dir().join(format!("nginx-error-{}.log", self.child.id()));
            let _ = std::fs::write(&kept, &log);
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "nginx error.log kept at {} (last lines, newest first):\n{}",
                kept.display(),
                tail.join("\n")
            );
        }
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gateway nodes on fixed ports (so a node can be restarted in place) behind nginx, on
/// one Redis. Tests own the node processes; the fleet knows where their metrics are.
struct Fleet {
    redis: RedisServer,
    prefix: String,
    secret: String,
    flags: Vec<(String, String)>,
    ports: Vec<u16>,
    /// Metrics address of each live node (None while a node is down).
    metrics: std::sync::Mutex<Vec<Option<SocketAddr>>>,
    lb: LoadBalancer,
}

impl Fleet {
    async fn start(count: usize, flags: &[(&str, &str)]) -> (Fleet, Vec<Gateway>) {
        let redis = RedisServer::start();
        let prefix = format!("f{:08x}:", rand::random::<u32>());
        let secret = support::gateway::random_secret();
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let mut flags: Vec<(String, String)> = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        flags.push(("--retry".into(), RETRY.into()));
        let lb = LoadBalancer::start(&ports).await;
        let metrics = std::sync::Mutex::new(vec![None; count]);
        let fleet = Fleet {
            redis,
            prefix,
            secret,
            flags,
            ports,
            metrics,
            lb,
        };
        let mut nodes = Vec::new();
        for i in 0..count {
            nodes.push(fleet.start_node(i).await);
        }
        (fleet, nodes)
    }

    /// Starts node `i` on its port (first start or restart).
    async fn start_node(&self, i: usize) -> Gateway {
        let mut builder = Gateway::builder(Backend::Redis)
            .shared_redis(&self.redis.url(), &self.prefix)
            .secret(&self.secret)
            .listen(&format!("127.0.0.1:{}", self.ports[i]));
        for (name, value) in &self.flags {
            builder = builder.flag(name, value.clone());
        }
        let node = builder.start().await;
        self.metrics.lock().unwrap()[i] = Some(node.metrics_addr);
        node
    }

    /// Node `i` is going down: stop reading its metrics.
    fn forget(&self, i: usize) {
        self.metrics.lock().unwrap()[i] = None;
    }

    fn token(&self, user: &str) -> String {
        support::tokens::hs256(&self.secret, &support::tokens::claims_with(user, json!({})))
    }

    async fn publisher(&self) -> Publisher {
        Publisher::connect_with(
            &self.redis.url(),
            RedisOptions::default().prefix(self.prefix.clone()),
        )
        .await
        .unwrap()
    }

    /// A metric summed over the live nodes.
    async fn metric(&self, name: &str) -> f64 {
        let addrs: Vec<SocketAddr> = self
            .metrics
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect();
        let mut total = 0.0;
        for addr in addrs {
            let text = http::send(addr, &Request::get("/metrics")).await.text();
            total += support::metric_sum(&text, name).unwrap_or(0.0);
        }
        total
    }

    /// A topic's stream as Redis holds it, after `after`.
    fn topic_ids_after(&self, topic: &str, after: &str) -> Vec<String> {
        self.ids_after(&format!("{}{{t:{topic}}}:log", self.prefix), after)
    }

    /// The user stream as Redis holds it, after `after`.
    fn user_ids_after(&self, user: &str, after: &str) -> Vec<String> {
        self.ids_after(&format!("{}{{u:{user}}}:log", self.prefix), after)
    }

    fn ids_after(&self, key: &str, after: &str) -> Vec<String> {
        let entries: Vec<(String, HashMap<String, String>)> =
            self.redis.cmd(&["XRANGE", key, "-", "+"]);
        let after = support::parse_id(after);
        entries
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| support::parse_id(id) > after)
            .collect()
    }
}

/// The node with the most open streams.
async fn busiest(nodes: &[Gateway]) -> usize {
    let mut best = (0, -1.0);
    for (i, node) in nodes.iter().enumerate() {
        let open = node.metric("sse_gateway_open_connections").await;
        if open > best.1 {
            best = (i, open);
        }
    }
    best.0
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// A workload: jobs owned by users, followers of each job and of each user, events
/// published round by round.
struct Workload {
    jobs: usize,
    users: usize,
    followers_per_job: usize,
    followers_per_user: usize,
    events_per_job: usize,
    /// Pause after each round of one event per job.
    pause: Duration,
}

struct Outcome {
    job_followers: Vec<(usize, Followed)>,
    user_followers: Vec<(usize, Followed)>,
    published: Vec<Vec<String>>,
}

impl Workload {
    fn standard() -> Workload {
        Workload {
            jobs: 30,
            users: 10,
            followers_per_job: 6,
            followers_per_user: 4,
            events_per_job: 40,
            pause: Duration::from_millis(40),
        }
    }

    fn clients(&self) -> usize {
        self.jobs * self.followers_per_job + self.users * self.followers_per_user
    }

    fn owner(&self, job: usize) -> String {
        format!("user-{}", job % self.users)
    }

    /// Creates the jobs, opens every follower (each has its snapshot before anything is
    /// published), then publishes while `during` runs; returns once every follower ends.
    async fn run<F: std::future::Future<Output = ()>>(&self, fleet: &Fleet, during: F) -> Outcome {
        let publisher = fleet.publisher().await;
        for j in 0..self.jobs {
            publisher
                .job(format!("job-{j}"), self.owner(j))
                .stage("queued")
                .await
                .unwrap();
        }
        let mut job_tasks = Vec::new();
        for j in 0..self.jobs {
            for _ in 0..self.followers_per_job {
                let target = format!("/v1/jobs/job-{j}/events");
                let follower = follow(fleet.lb.addr, fleet.token(&self.owner(j)), target, |e| {
                    e.event == "complete"
                });
                job_tasks.push((j, tokio::spawn(follower)));
            }
        }
        let mut user_tasks = Vec::new();
        for u in 0..self.users {
            for _ in 0..self.followers_per_user {
                let target = "/v1/users/me/events".to_owned();
                let follower = follow(
                    fleet.lb.addr,
                    fleet.token(&format!("user-{u}")),
                    target,
                    |e| e.event == "done",
                );
                user_tasks.push((u, tokio::spawn(follower)));
            }
        }
        let expected = self.clients() as f64;
        wait_until(
            "every follower has its stream open",
            Duration::from_secs(60),
            || async { fleet.metric("sse_gateway_open_connections").await >= expected },
        )
        .await;

        let (jobs, users, events, pause) = (self.jobs, self.users, self.events_per_job, self.pause);
        let owners: Vec<String> = (0..jobs).map(|j| self.owner(j)).collect();
        let publishing = tokio::spawn(async move {
            let mut published = vec![Vec::with_capacity(events); jobs];
            for n in 1..=events {
                for (j, ids) in published.iter_mut().enumerate() {
                    let job = publisher.job(format!("job-{j}"), owners[j].clone());
                    let id = if n == events {
                        job.complete(json!({"n": n})).await
                    } else {
                        job.event("progress", json!({"progress": n * 100 / events, "n": n}))
                            .await
                    };
                    ids.push(id.expect("publish").to_string());
                }
                tokio::time::sleep(pause).await;
            }
            for u in 0..users {
                publisher
                    .notify(&format!("user-{u}"), "done", json!({}))
                    .await
                    .expect("publish done");
            }
            published
        });
        during.await;
        let published = publishing.await.expect("publisher");
        let mut job_followers = Vec::new();
        for (j, task) in job_tasks {
            job_followers.push((j, task.await.expect("job follower")));
        }
        let mut user_followers = Vec::new();
        for (u, task) in user_tasks {
            user_followers.push((u, task.await.expect("user follower")));
        }
        Outcome {
            job_followers,
            user_followers,
            published,
        }
    }
}

/// Asserts `seen == published`, saying where they part: the first differing position,
/// what is missing and what came twice (a whole-vector dump of hundreds of ids hides it).
fn assert_same_sequence(what: &str, seen: &[String], published: &[String], reconnects: usize) {
    if seen == published {
        return;
    }
    let at = seen
        .iter()
        .zip(published)
        .take_while(|(a, b)| a == b)
        .count();
    let missing: Vec<&String> = published.iter().filter(|id| !seen.contains(id)).collect();
    let mut twice: Vec<&String> = seen
        .iter()
        .filter(|id| seen.iter().filter(|other| other == id).count() > 1)
        .collect();
    twice.dedup();
    panic!(
        "{what}: not exactly the published sequence ({} seen, {} published, {reconnects} reconnects): \
         first difference at {at} (seen {:?}, published {:?}); missing {missing:?}; twice {twice:?}",
        seen.len(),
        published.len(),
        seen.get(at),
        published.get(at),
    );
}

impl Outcome {
    /// Every follower has exactly the full sequence and was never refused; returns the
    /// reconnect count.
    fn assert_complete(&self, fleet: &Fleet) -> usize {
        let mut reconnects = 0;
        for (j, followed) in &self.job_followers {
            assert_same_sequence(
                &format!("job-{j}"),
                &ids(&followed.events),
                &self.published[*j],
                followed.reconnects,
            );
            assert!(
                followed.refusals.is_empty(),
                "job-{j}: refused {:?} (a browser would stop)",
                followed.refusals
            );
            reconnects += followed.reconnects;
        }
        for (u, followed) in &self.user_followers {
            let truth = fleet.user_ids_after(&format!("user-{u}"), &followed.opening);
            assert_eq!(
                ids(&followed.events),
                truth,
                "user-{u}: exactly the user stream after its snapshot"
            );
            assert!(
                followed.refusals.is_empty(),
                "user-{u}: refused {:?}",
                followed.refusals
            );
            reconnects += followed.reconnects;
        }
        reconnects
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_loses_nothing() {
    let _one_fleet = ONE_FLEET.lock().await;
    bounded(LIMIT, async {
        let (fleet, mut nodes) = Fleet::start(3, &[("--heartbeat", "1s")]).await;
        let workload = Workload::standard();
        let fleet = &fleet;
        let victim_index = Arc::new(std::sync::Mutex::new(None));
        let killed = victim_index.clone();
        let outcome = workload
            .run(fleet, async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let victim = busiest(&nodes).await;
                let on_victim = nodes[victim].metric("sse_gateway_open_connections").await;
                fleet.forget(victim);
                nodes[victim].kill9();
                nodes[victim].wait_exit(Duration::from_secs(5)).await;
                *killed.lock().unwrap() = Some(on_victim);
            })
            .await;
        let on_victim = victim_index.lock().unwrap().expect("a node was killed");
        let reconnects = outcome.assert_complete(fleet);
        assert!(
            on_victim >= 30.0,
            "the victim held a fair share of the {} clients ({on_victim})",
            workload.clients()
        );
        assert!(
            reconnects as f64 >= on_victim,
            "the {on_victim} clients of the killed node reconnected ({reconnects})"
        );
        eprintln!("kill -9: {on_victim} clients on the victim, {reconnects} reconnects");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_and_its_clients_move_without_loss() {
    let _one_fleet = ONE_FLEET.lock().await;
    bounded(LIMIT, async {
        let (fleet, mut nodes) =
            Fleet::start(3, &[("--heartbeat", "1s"), ("--drain-timeout", "4s")]).await;
        let fleet = &fleet;
        let outcome = Workload::standard()
            .run(fleet, async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let victim = busiest(&nodes).await;
                let node = &mut nodes[victim];
                let started = Instant::now();
                node.sigterm();
                wait_until(
                    "the node's readiness fails once SIGTERM is handled",
                    Duration::from_secs(2),
                    || async { node.send(Request::get("/readyz")).await.status == 503 },
                )
                .await;
                let readyz = node.send(Request::get("/readyz")).await;
                support::assert_error(&readyz, 503, "draining");
                let refused = node
                    .send(Request::get("/v1/users/me/events").bearer(&fleet.token("user-0")))
                    .await;
                support::assert_error(&refused, 503, "draining");
                support::assert_retry_after(&refused);
                fleet.forget(victim);
                let status = node.wait_exit(Duration::from_secs(8)).await;
                assert!(status.success(), "a drained node exits 0: {status:?}");
                assert!(
                    started.elapsed() < Duration::from_millis(4500),
                    "exit within --drain-timeout"
                );
            })
            .await;
        let reconnects = outcome.assert_complete(fleet);
        assert!(
            reconnects >= 30,
            "the drained node's clients moved ({reconnects} reconnects)"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_nothing() {
    let _one_fleet = ONE_FLEET.lock().await;
    bounded(LIMIT, async {
        let (fleet, nodes) =
            Fleet::start(3, &[("--heartbeat", "1s"), ("--drain-timeout", "2s")]).await;
        let workload = Workload {
            events_per_job: 60,
            pause: Duration::from_millis(60),
            ..Workload::standard()
        };
        let fleet = &fleet;
        let mut replacements = Vec::new();
        let outcome = workload
            .run(fleet, async {
                for (i, mut node) in nodes.into_iter().enumerate() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    node.sigterm();
                    fleet.forget(i);
                    let status = node.wait_exit(Duration::from_secs(5)).await;
                    assert!(status.success(), "node {i} drained and exited 0");
                    replacements.push(fleet.start_node(i).await);
                }
            })
            .await;
        let reconnects = outcome.assert_complete(fleet);
        assert!(
            reconnects >= workload.clients(),
            "every client moved at least once ({reconnects})"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_resumes_everyone_and_replays_only_what_was_missed() {
    let _one_fleet = ONE_FLEET.lock().await;
    bounded(LIMIT, async {
        const HISTORY: usize = 200;
        let (fleet, mut nodes) =
            Fleet::start(2, &[("--heartbeat", "1s"), ("--max-connections-per-user", "1000")]).await;
        let workload = Workload {
            jobs: 20,
            users: 4,
            followers_per_job: 100,
            followers_per_user: 0,
            events_per_job: 40,
            pause: Duration::from_millis(100),
        };
        // Long histories: a client that re-read them on resume would replay 200 events.
        let publisher = fleet.publisher().await;
        for j in 0..workload.jobs {
            let job = publisher.job(format!("job-{j}"), workload.owner(j));
            for n in 0..HISTORY {
                job.event("history", json!({"n": n})).await.unwrap();
            }
        }
        let fleet = &fleet;
        let storm = Arc::new(std::sync::Mutex::new((0.0, Duration::ZERO)));
        let record = storm.clone();
        let outcome = workload
            .run(fleet, async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let victim = busiest(&nodes).await;
                let on_victim = nodes[victim].metric("sse_gateway_open_connections").await;
                fleet.forget(victim);
                let accepted = "sse_gateway_connections_accepted_total";
                let before = fleet.metric(accepted).await;
                let killed_at = Instant::now();
                nodes[victim].kill9();
                wait_until("every client of the dead node resumed on the survivor", Duration::from_secs(60), || async {
                    fleet.metric(accepted).await >= before + on_victim
                })
                .await;
                *record.lock().unwrap() = (on_victim, killed_at.elapsed());
            })
            .await;
        let (on_victim, back_within) = *storm.lock().unwrap();
        let reconnects = outcome.assert_complete(fleet);
        assert!(on_victim >= 500.0, "a storm of {on_victim} reconnecting clients");
        let replayed = fleet.metric("sse_gateway_replayed_events_total").await;
        let bound = reconnects as f64 * workload.events_per_job as f64;
        assert!(
            replayed <= bound,
            "replay read only what clients missed: {replayed} events for {reconnects} resumes (full histories would be ~{})",
            reconnects * HISTORY
        );
        eprintln!("storm: {on_victim} clients back within {back_within:?}; {replayed} events replayed for {reconnects} resumes");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_behind_the_balancer_is_cut_then_resumes_with_nothing_lost() {
    let _one_fleet = ONE_FLEET.lock().await;
    bounded(LIMIT, async {
        const EVENTS: usize = 1200;
        const PAYLOAD: usize = 16 * 1024; // ~20 MB in all
        let (fleet, nodes) = Fleet::start(
            1,
            &[
                ("--send-queue-events", "64"),
                ("--send-queue-bytes", "1048576"),
                ("--heartbeat", "1s"),
            ],
        )
        .await;
        let node = &nodes[0];
        let publisher = fleet.publisher().await;
        let job = publisher.job("busy", "u1");
        job.stage("start").await.unwrap();
        let token = fleet.token("u1");
        // The slow client takes its snapshot, then stops reading.
        let request = Request::get("/v1/jobs/busy/events").bearer(&token);
        let conn = support::http::Conn::with_tiny_receive_buffer(fleet.lb.addr).await;
        let mut slow = support::sse::SseStream::open_on(conn, &request)
            .await
            .expect("stream");
        // (Through nginx: it consumes the X-Accel-Buffering header meant for it.)
        support::expect_retry(&mut slow, 300).await;
        let (opening, _) = slow.next_event_frame().await;
        assert_eq!(opening.event, "status");
        let rss_before = node.rss_bytes();
        let blob = "x".repeat(PAYLOAD);
        let mut published = Vec::with_capacity(EVENTS);
        for n in 1..=EVENTS {
            let id = if n == EVENTS {
                job.complete(json!({"n": n})).await.unwrap()
            } else {
                job.event("chunk", json!({"n": n, "blob": blob}))
                    .await
                    .unwrap()
            };
            published.push(id.to_string());
        }
        wait_until(
            "the node cut the slow client",
            Duration::from_secs(30),
            || async {
                node.metric("sse_gateway_slow_consumer_disconnects_total")
                    .await
                    >= 1.0
            },
        )
        .await;
        let growth = node.rss_bytes().saturating_sub(rss_before);
        assert!(
            growth < 40 * 1024 * 1024,
            "node memory stayed flat: grew {} MiB for ~20 MB published",
            growth >> 20
        );
        // It reads what reached it, then resumes like EventSource from its last id.
        let mut seen: Vec<String> = Vec::new();
        while let Ok(Some(frame)) = slow.try_next_frame(Duration::from_secs(10)).await {
            if let Some(event) = frame.event {
                seen.push(event.id);
            }
        }
        assert!(
            !slow.end().map(|end| end.is_clean()).unwrap_or(true),
            "the cut is abrupt (not a clean end)"
        );
        let last = seen.last().cloned().unwrap_or(opening.id);
        let resume = Request::get("/v1/jobs/busy/events")
            .bearer(&token)
            .last_event_id(&last);
        let mut resumed = support::sse::SseStream::open(fleet.lb.addr, &resume)
            .await
            .expect("resumed stream");
        seen.extend(ids(&resumed
            .events_through("complete", Duration::from_secs(30))
            .await));
        assert_eq!(
            seen, published,
            "every event once, in order, across the cut"
        );
    })
    .await
}

/// Topic followers behind nginx — of one topic, of three in one stream, and without a
/// token — while a node is killed: each resumes on another node with `Last-Event-ID` and
/// ends with every topic's events exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_followers_resume_through_a_node_kill() {
    let _one_fleet = ONE_FLEET.lock().await;
    bounded(LIMIT, async {
        let (fleet, mut nodes) = Fleet::start(
            3,
            &[
                ("--heartbeat", "1s"),
                ("--public-topic", "feed.*"),
                ("--anonymous-topic", "lobby"),
                ("--trusted-proxy", "127.0.0.1"),
                // The 12 followers without a token all come from 127.0.0.1.
                ("--max-anonymous-connections-per-ip", "12"),
            ],
        )
        .await;
        let names = ["feed.a", "feed.b", "lobby"];
        let ends_seen = |names_left: usize| {
            let mut left = names_left;
            move |event: &Event| {
                if event.event == "end" {
                    left -= 1;
                }
                left == 0
            }
        };
        let mut followers = Vec::new();
        for i in 0..36 {
            let token = Some(fleet.token(&format!("viewer-{}", i % 6)));
            let (target, topics, token) = match i % 3 {
                0 => (
                    "/v1/topics/events?topic=feed.a&topic=feed.b&topic=lobby".to_owned(),
                    names.to_vec(),
                    token,
                ),
                1 => ("/v1/topics/feed.a/events".to_owned(), vec!["feed.a"], token),
                _ => ("/v1/topics/lobby/events".to_owned(), vec!["lobby"], None),
            };
            let follower =
                support::follow::follow_feed(fleet.lb.addr, token, target, ends_seen(topics.len()));
            followers.push((topics, tokio::spawn(follower)));
        }
        wait_until(
            "every follower has its stream open",
            Duration::from_secs(60),
            || async {
                fleet.metric("sse_gateway_open_connections").await >= followers.len() as f64
            },
        )
        .await;

        let publisher = fleet.publisher().await;
        const ROUNDS: usize = 40;
        let fleet = &fleet;
        let publishing = async {
            for round in 1..=ROUNDS {
                for name in names {
                    let event = if round == ROUNDS { "end" } else { "note" };
                    publisher
                        .topic(name)
                        .publish(event, json!({"round": round}))
                        .await
                        .expect("publish");
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        };
        let killing = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let victim = busiest(&nodes).await;
            let on_victim = nodes[victim].metric("sse_gateway_open_connections").await;
            fleet.forget(victim);
            nodes[victim].kill9();
            nodes[victim].wait_exit(Duration::from_secs(5)).await;
            on_victim
        };
        let ((), on_victim) = tokio::join!(publishing, killing);

        let mut reconnects = 0;
        for (topics, follower) in followers {
            let followed = follower.await.expect("follower");
            assert!(
                followed.refusals.is_empty(),
                "refused {:?}",
                followed.refusals
            );
            reconnects += followed.reconnects;
            let opening: Vec<Option<String>> = if topics.len() == 1 {
                vec![Some(followed.opening.clone())]
            } else {
                sse_publisher::wire::feeds::decode(&followed.opening, &topics)
                    .expect("a composite opening id")
                    .into_iter()
                    .map(|p| p.map(|id| id.to_string()))
                    .collect()
            };
            for (t, topic) in topics.iter().enumerate() {
                let seen: Vec<String> = followed
                    .events
                    .iter()
                    .filter(|event| event.json()["topic"] == *topic)
                    .map(|event| {
                        if topics.len() == 1 {
                            event.id.clone()
                        } else {
                            let positions =
                                sse_publisher::wire::feeds::decode(&event.id, &topics).unwrap();
                            positions[t].unwrap().to_string()
                        }
                    })
                    .collect();
                let after = opening[t].clone().unwrap_or_else(|| "0-0".into());
                let truth = fleet.topic_ids_after(topic, &after);
                assert_eq!(
                    truth.len(),
                    ROUNDS,
                    "{topic}: the follower opened before any event"
                );
                assert_eq!(
                    seen, truth,
                    "{topic} in {topics:?}: every event once, in order"
                );
            }
        }
        assert!(
            on_victim >= 6.0,
            "the victim held a share of the clients ({on_victim})"
        );
        assert!(
            reconnects as f64 >= on_victim,
            "the {on_victim} followers of the killed node reconnected ({reconnects})"
        );
        eprintln!("topics kill -9: {on_victim} followers on the victim, {reconnects} reconnects");
    })
    .await
}
