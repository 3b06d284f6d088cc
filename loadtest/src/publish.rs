//! Publishing load-test events to the system under test: the gateway's jobs, users or
//! topics (HTTP API, or the `sse-publisher` SDK over HTTP or Redis), Nchan's publisher
//! location, or the floor server. Every event carries `seq` (per topic) and `t_us` (publish time, µs since
//! the epoch, taken just before sending) for the subscribers' accounting; a `stage`
//! string pads frames to about the same size on every target.
//!
//! Events of one topic go through one worker, in order; topics are spread over
//! `concurrency` workers, so the rate holds while per-topic order is kept.
//!
//! With `batch` > 1 (gateway, HTTP), consecutive events go in groups of up to `batch` to
//! `POST /v1/events:batch`: a group holds topics of one block (`t / batch`), and a block
//! always goes through the same worker, so per-topic order is kept there too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sse_publisher::{Publisher, RedisOptions};

use crate::conn::now_us;
use crate::{StreamKind, Target, Topics};

/// How events are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// No publishing from this process.
    None,
    /// Raw HTTP POSTs (keep-alive) to the target's publish endpoint.
    Http,
    /// The SDK's HTTP transport (gateway only).
    SdkHttp,
    /// The SDK's Redis transport (gateway with Redis only).
    SdkRedis,
}

pub struct PublishConfig {
    pub target: Target,
    pub stream: StreamKind,
    pub base_url: String,
    pub token: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub via: Via,
    /// Length of the padding string in each event.
    pub pad: usize,
    /// Events per request (`POST /v1/events:batch` when more than 1).
    pub batch: usize,
}

enum Transport {
    Http(Box<Client<HttpConnector, Full<Bytes>>>),
    Sdk(Publisher),
}

/// A publisher for one target.
pub struct Sender {
    cfg: PublishConfig,
    transport: Transport,
    pad: String,
    pub sent: AtomicU64,
    pub failures: Mutex<BTreeMap<String, u64>>,
}

impl Sender {
    pub async fn new(cfg: PublishConfig) -> anyhow::Result<Sender> {
        let transport = match cfg.via {
            Via::None => return Err(anyhow!("no publisher configured")),
            Via::Http => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Transport::Http(Box::new(
                    Client::builder(TokioExecutor::new())
                        .pool_max_idle_per_host(512)
                        .build(connector),
                ))
            }
            Via::SdkHttp => {
                let token = cfg.token.clone().context("--publisher token needed")?;
                Transport::Sdk(Publisher::http(&cfg.base_url, token)?)
            }
            Via::SdkRedis => {
                let url = cfg
                    .redis_url
                    .clone()
                    .context("--redis-url needed for sdk-redis")?;
                let mut options = RedisOptions::default().prefix(cfg.redis_prefix.clone());
                options.pool_size = 64;
                Transport::Sdk(Publisher::connect_with(&url, options).await?)
            }
        };
        let pad = "x".repeat(cfg.pad);
        Ok(Sender {
            cfg,
            transport,
            pad,
            sent: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    fn fail(&self, reason: String) {
        if let Ok(mut map) = self.failures.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    /// Publishes one event to topic `t`; `seq` `None` is a set-up event (it creates
    /// the job) that subscribers do not count. Returns the target's id for it.
    pub async fn publish(&self, topics: &Topics, t: usize, seq: Option<u64>) -> Option<String> {
        self.publish_stamped(topics, t, seq, None).await
    }

    /// As [`Sender::publish`], with the event's `t_us` given (`None`: now, just before
    /// the request).
    pub async fn publish_stamped(
        &self,
        topics: &Topics,
        t: usize,
        seq: Option<u64>,
        t_us: Option<u64>,
    ) -> Option<String> {
        match self.try_publish(topics, t, seq, t_us).await {
            Ok(id) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                Some(id)
            }
            Err(e) => {
                self.fail(format!("{e:#}").chars().take(120).collect());
                None
            }
        }
    }

    /// Publishes events `(topic, seq, t_us)` in one `POST /v1/events:batch`, counting
    /// each (`t_us` `None`: now, just before the request).
    pub async fn publish_batch(&self, topics: &Topics, events: &[(usize, u64, Option<u64>)]) {
        let now = now_us();
        let elements: Vec<serde_json::Value> = events
            .iter()
            .map(|&(t, seq, stamp)| {
                let name = topics.name(t);
                let (event_type, data) = self.event_body(Some(seq), stamp.unwrap_or(now));
                match self.cfg.stream {
                    StreamKind::Job => {
                        json!({"job": name, "owner": topics.owner(t), "type": event_type, "data": data})
                    }
                    StreamKind::User => json!({"user": name, "type": event_type, "data": data}),
                    StreamKind::Topic => json!({"topic": name, "type": event_type, "data": data}),
                }
            })
            .collect();
        match self.post_json("/v1/events:batch", &json!(elements)).await {
            Ok(answer) => {
                let results = answer["results"].as_array().cloned().unwrap_or_default();
                for result in &results {
                    if result["id"].is_string() {
                        self.sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.fail(
                            format!("batch element: {result}")
                                .chars()
                                .take(120)
                                .collect(),
                        );
                    }
                }
                for _ in results.len()..events.len() {
                    self.fail("batch element without a result".into());
                }
            }
            Err(e) => {
                for _ in events {
                    self.fail(format!("{e:#}").chars().take(120).collect());
                }
            }
        }
    }

    /// POSTs a JSON body to the target; its JSON answer.
    async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let Transport::Http(client) = &self.transport else {
            return Err(anyhow!("batches go over HTTP"));
        };
        let mut request = http::Request::post(format!("{}{path}", self.cfg.base_url))
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(token) = &self.cfg.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(anyhow!("http {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }

    /// An event's type and data.
    fn event_body(&self, seq: Option<u64>, t_us: u64) -> (&'static str, serde_json::Value) {
        match seq {
            // A topic event has no job semantics (no `progress`): a custom type.
            Some(seq) if self.cfg.stream == StreamKind::Topic => (
                "update",
                json!({"seq": seq, "t_us": t_us, "stage": self.pad}),
            ),
            Some(seq) => (
                if self.cfg.stream == StreamKind::User {
                    "notice"
                } else {
                    "progress"
                },
                json!({"progress": seq % 101, "seq": seq, "t_us": t_us, "stage": self.pad}),
            ),
            None => ("stage", json!({"stage": "queued"})),
        }
    }

    async fn try_publish(
        &self,
        topics: &Topics,
        t: usize,
        seq: Option<u64>,
        t_us: Option<u64>,
    ) -> anyhow::Result<String> {
        let name = topics.name(t);
        let t_us = t_us.unwrap_or_else(now_us);
        let (event_type, data) = self.event_body(seq, t_us);
        match &self.transport {
            Transport::Sdk(publisher) => {
                let id = match self.cfg.stream {
                    StreamKind::Job => {
                        publisher
                            .job(name.clone(), topics.owner(t))
                            .event(event_type, data)
                            .await?
                    }
                    StreamKind::User => publisher.notify(&name, event_type, data).await?,
                    StreamKind::Topic => {
                        publisher
                            .topic(name.clone())
                            .publish(event_type, data)
                            .await?
                    }
                };
                Ok(id.to_string())
            }
            Transport::Http(client) => {
                let (path, body) = match self.cfg.target {
                    Target::Gateway => match self.cfg.stream {
                        StreamKind::Job => (
                            format!("/v1/jobs/{name}/events"),
                            json!({"owner": topics.owner(t), "type": event_type, "data": data}),
                        ),
                        StreamKind::User => (
                            format!("/v1/users/{name}/events"),
                            json!({"type": event_type, "data": data}),
                        ),
                        StreamKind::Topic => (
                            format!("/v1/topics/{name}/events"),
                            json!({"type": event_type, "data": data}),
                        ),
                    },
                    Target::Nchan | Target::Floor => {
                        // The same fields the gateway's envelope adds, so frames match in size.
                        let key = match self.cfg.stream {
                            StreamKind::Topic => "topic",
                            StreamKind::Job | StreamKind::User => "jobId",
                        };
                        let mut body = json!({key: name, "type": event_type, "ts": t_us / 1000});
                        if let (Some(obj), Some(extra)) = (body.as_object_mut(), data.as_object()) {
                            obj.extend(extra.clone());
                        }
                        (format!("/pub/{name}"), body)
                    }
                };
                let mut request = http::Request::post(format!("{}{path}", self.cfg.base_url))
                    .header("content-type", "application/json")
                    .header("accept", "application/json");
                if let Some(token) = &self.cfg.token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let request = request.body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
                let response = client.request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if !status.is_success() {
                    return Err(anyhow!("http {status}: {}", String::from_utf8_lossy(&body)));
                }
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                // Gateway: {"id"}; Nchan: channel info with last_message_id; floor: {"id"}.
                Ok(value
                    .get("id")
                    .or_else(|| value.get("last_message_id"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string())
            }
        }
    }
}

/// How [`paced`] publishes.
pub struct Pacing {
    /// Events in all.
    pub events: u64,
    /// Events per second (0: as fast as the workers go).
    pub rate: f64,
    /// The first event's `seq`.
    pub seq_base: u64,
    /// Publishing tasks.
    pub workers: usize,
    /// Events per request (more than 1: `POST /v1/events:batch`).
    pub batch: usize,
    /// Stamp each event when it falls due, not when its request is sent.
    pub from_dispatch: bool,
}

/// Publishes `events` events at `rate`/s: event `i` goes to topic `i % topics` with
/// `seq = seq_base + i / topics`; with `batch` > 1, in groups of up to `batch` events of
/// one block of topics (see the module doc). With `from_dispatch`, each event's `t_us` is
/// the time the pacer hands it to its worker (when it falls due, to within the pacer's
/// tick) instead of the time its request is sent, so the time an event waits behind a slow
/// publish on its worker counts in its latency (no coordinated omission). Returns the
/// wall time it took.
pub async fn paced(sender: Arc<Sender>, topics: Arc<Topics>, pacing: Pacing) -> Duration {
    let Pacing {
        events,
        rate,
        seq_base,
        workers,
        batch,
        from_dispatch,
    } = pacing;
    let batch = batch.max(1);
    let workers = workers.max(1).min(topics.count.max(1));
    let mut queues = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(usize, u64, Option<u64>)>>(4096);
        queues.push(tx);
        let sender = sender.clone();
        let topics = topics.clone();
        handles.push(tokio::spawn(async move {
            while let Some(group) = rx.recv().await {
                if batch == 1 {
                    for (t, seq, stamp) in group {
                        sender.publish_stamped(&topics, t, Some(seq), stamp).await;
                    }
                } else {
                    sender.publish_batch(&topics, &group).await;
                }
            }
        }));
    }
    let start = Instant::now();
    let mut next = 0u64;
    let mut group: Vec<(usize, u64, Option<u64>)> = Vec::with_capacity(batch);
    'pace: while next < events {
        let due = if rate > 0.0 {
            ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(events)
        } else {
            events
        };
        let dispatched_us = from_dispatch.then(now_us);
        while next < due {
            let t = (next % topics.count as u64) as usize;
            let seq = seq_base + next / topics.count as u64;
            if group
                .first()
                .is_some_and(|&(first, _, _)| first / batch != t / batch)
            {
                let block = group[0].0 / batch;
                if queues[block % workers]
                    .send(std::mem::take(&mut group))
                    .await
                    .is_err()
                {
                    break 'pace;
                }
            }
            group.push((t, seq, dispatched_us));
            next += 1;
            if group.len() == batch {
                let block = t / batch;
                if queues[block % workers]
                    .send(std::mem::take(&mut group))
                    .await
                    .is_err()
                {
                    break 'pace;
                }
            }
        }
        if next < events {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    if let Some(&(first, _, _)) = group.first() {
        let _ = queues[(first / batch) % workers].send(group).await;
    }
    drop(queues);
    for handle in handles {
        let _ = handle.await;
    }
    start.elapsed()
}
