//! One bounded run: set-up publishes (create jobs, or publish the history a resume
//! scenario replays), the connect ramp (paced, from several source addresses, with RSS
//! samples of the watched servers at chosen connection counts), the publish phase, the
//! wait for every expected event, an optional idle hold, then stop and report.
//!
//! CPU and RSS of the watched processes are sampled at each phase boundary, so the
//! report gives e.g. server CPU per delivered event for the publish phase alone.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::conn::{self, Shared, Spec, Stats};
use crate::procstat::{self, Sample, Watched};
use crate::publish::{self, PublishConfig, Sender, Via};
use crate::report::percentiles;
use crate::token::Minter;
use crate::{StreamKind, Target, Topics};

/// How clients authenticate (as a browser would: `EventSource` cannot set headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    Cookie,
    Query,
    None,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Server under test.
    #[arg(long, value_enum, default_value_t = Target::Gateway)]
    pub target: Target,
    /// Base URL, loopback only (http://127.0.0.1:8080).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Gateway stream kind.
    #[arg(long, value_enum, default_value_t = StreamKind::Job)]
    pub stream: StreamKind,
    /// Number of topics (jobs, users, channels); connection c watches topic c % topics.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Prefix of topic and user names (keeps runs on one Redis apart).
    #[arg(long, default_value = "lt")]
    pub topic_prefix: String,
    /// Connections to open (each its own TCP connection).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Connections opened per second during the ramp (0: as fast as allowed).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Connection attempts in flight at once (storm mode: open connections at once).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Loopback source addresses used round-robin (each has its own ephemeral ports).
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,
    #[arg(long, value_enum, default_value_t = Auth::Cookie)]
    pub auth: Auth,
    /// HS256 secret: every client gets its own user's token; publishers get role publisher.
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Cookie name carrying the token.
    #[arg(long, default_value = "sse_token")]
    pub cookie_name: String,
    /// Connect storm: each connection closes (RST) after its first SSE line.
    #[arg(long)]
    pub storm: bool,
    /// Resume: before connecting, publish this many events to each topic; clients then
    /// send the first one's id as Last-Event-ID and expect the rest replayed.
    #[arg(long, default_value_t = 0)]
    pub resume_history: u64,
    /// Events each connection must receive (default: computed from what this process
    /// publishes; set it when another process publishes).
    #[arg(long)]
    pub expect_events: Option<u64>,
    /// How events are published.
    #[arg(long, value_enum, default_value_t = Via::None)]
    pub publish: Via,
    /// Live events to publish in total (spread round-robin over topics).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Publishing workers (per-topic order is kept).
    #[arg(long, default_value_t = 64)]
    pub publish_workers: usize,
    /// Events per publish request: more than 1 sends them in groups to the gateway's
    /// `POST /v1/events:batch` (with `--publish http`).
    #[arg(long, default_value_t = 1)]
    pub publish_batch: usize,
    /// Latency from when the pacer hands each event to its publishing worker (when it
    /// falls due at `--rate`), not from when its request is sent: an event that waited
    /// behind a slow publish counts that wait, so a publish path that cannot keep up
    /// shows in the latency (saturation sweeps).
    #[arg(long)]
    pub latency_from_dispatch: bool,
    /// Redis for the SDK's Redis transport.
    #[arg(long)]
    pub redis_url: Option<String>,
    #[arg(long, default_value = "sse:")]
    pub redis_prefix: String,
    /// Padding in each event's data (frames of about 200 bytes by default).
    #[arg(long, default_value_t = 40)]
    pub pad: usize,
    /// Skip creating jobs before connecting (gateway job streams need a job to exist).
    #[arg(long)]
    pub no_create: bool,
    #[arg(long, default_value = "5s", value_parser = humantime_secs)]
    pub connect_timeout: Duration,
    /// Hard limit on the whole run.
    #[arg(long, default_value = "120s", value_parser = humantime_secs)]
    pub max_duration: Duration,
    /// After publishing, how long to wait for the last expected events.
    #[arg(long, default_value = "15s", value_parser = humantime_secs)]
    pub drain_timeout: Duration,
    /// Keep the connections open this long after everything else (idle capacity).
    #[arg(long, default_value = "0s", value_parser = humantime_secs)]
    pub hold: Duration,
    /// Connection counts at which to pause the ramp and sample the watched RSS.
    #[arg(long, value_delimiter = ',')]
    pub rss_steps: Vec<usize>,
    /// Pause before each RSS sample.
    #[arg(long, default_value = "1s", value_parser = humantime_secs)]
    pub settle: Duration,
    /// Processes to sample, `name=pid` (repeatable).
    #[arg(long = "watch")]
    pub watch: Vec<Watched>,
    /// Written (empty) when the connect ramp is over; for multi-process runs.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Wait for this file to exist before publishing (multi-process runs).
    #[arg(long)]
    pub go_file: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Send a `GET` of this path first on each connection and read its whole answer
    /// before the stream's request: a stream on a reused keep-alive connection (a
    /// browser that loaded a page first, a proxy's upstream keep-alive pool).
    #[arg(long)]
    pub keep_alive_first: Option<String>,
    /// Open each stream over h2c (HTTP/2 with prior knowledge), one stream per
    /// connection unless `--h2c-streams` says otherwise.
    #[arg(long)]
    pub h2c: bool,
    /// With `--h2c`: this many streams share each h2c connection, as a browser's streams
    /// to one host share one HTTP/2 connection (the last connection may have fewer).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub h2c_streams: u32,
    /// The server's CA (PEM), for an `https://` URL.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Also put the raw samples that percentiles cannot be merged from into the JSON
    /// report (`first_id_us` of every connection), for runs split over processes.
    #[arg(long)]
    pub raw_samples: bool,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The server's address and `Host`, and whether the URL is `https://`.
fn server_addr(url: &str) -> anyhow::Result<(SocketAddr, String, bool)> {
    let (rest, https) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("http://")
                .context("only http:// and https:// URLs")?,
            false,
        ),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = host.parse().context("URL host must be ip:port")?;
    if !addr.ip().is_loopback() {
        bail!("load runs target loopback only (127.0.0.0/8), not {addr}");
    }
    Ok((addr, host.to_string(), https))
}

/// The clients' TLS for an `https://` URL: the CA of `--ca-file` only, ALPN `http/1.1`
/// (each simulated browser is one HTTP/1.1 stream, as an EventSource without h2 is).
fn client_tls(
    ca_file: Option<&std::path::Path>,
    addr: SocketAddr,
) -> anyhow::Result<(
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
)> {
    use rustls::pki_types::pem::PemObject;
    let path = ca_file.context("an https:// URL needs --ca-file (the server's CA, PEM)")?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-file {}", path.display()))?
    {
        roots.add(certificate.with_context(|| format!("--ca-file {}", path.display()))?)?;
    }
    #[allow(deprecated)] // ring, as the gateway (see its server::tls::provider)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

struct PhaseClock {
    watched: Vec<Watched>,
    start: Instant,
    samples: Vec<Option<Sample>>,
}

impl PhaseClock {
    fn start(watched: &[Watched]) -> PhaseClock {
        PhaseClock {
            watched: watched.to_vec(),
            start: Instant::now(),
            samples: procstat::sample_all(watched),
        }
    }

    fn end(self) -> Value {
        let after = procstat::sample_all(&self.watched);
        let mut procs = serde_json::Map::new();
        for ((w, before), after) in self.watched.iter().zip(self.samples).zip(after) {
            if let (Some(b), Some(a)) = (before, after) {
                procs.insert(
                    w.name.clone(),
                    json!({"cpu_s": (a.cpu.saturating_sub(b.cpu)).as_secs_f64(), "rss_kib": a.rss_kib}),
                );
            }
        }
        json!({"seconds": self.start.elapsed().as_secs_f64(), "procs": procs})
    }
}

/// Runs one bounded load test and returns its JSON report.
pub async fn run(args: RunArgs) -> anyhow::Result<Value> {
    let started = Instant::now();
    let deadline = started + args.max_duration;
    if args.publish_batch > 1 && (args.publish != Via::Http || args.target != Target::Gateway) {
        bail!("--publish-batch needs --publish http to a gateway");
    }
    let (server, host, https) = server_addr(&args.url)?;
    let tls = if https {
        if !matches!(args.publish, Via::None | Via::SdkRedis) {
            bail!("over https://, publish with --publish sdk-redis (or not at all)");
        }
        Some(client_tls(args.ca_file.as_deref(), server)?)
    } else {
        None
    };
    if let Some(ip) = args.source_addrs.iter().find(|ip| !ip.is_loopback()) {
        bail!("source address {ip} is not loopback");
    }
    let topics = Arc::new(Topics {
        count: args.topics.max(1),
        prefix: args.topic_prefix.clone(),
        stream: args.stream,
    });
    let minter = args.jwt_secret.as_deref().map(|s| Minter::new(s, 3600));
    let publisher_token = match &minter {
        Some(m) => Some(m.mint(
            &format!("{}publisher", args.topic_prefix),
            Some("publisher"),
            &[],
        )?),
        None => None,
    };
    let sender = if args.publish == Via::None {
        None
    } else {
        Some(Arc::new(
            Sender::new(PublishConfig {
                target: args.target,
                stream: args.stream,
                base_url: args.url.trim_end_matches('/').to_string(),
                token: publisher_token,
                redis_url: args.redis_url.clone(),
                redis_prefix: args.redis_prefix.clone(),
                via: args.publish,
                pad: args.pad,
                batch: args.publish_batch,
            })
            .await?,
        ))
    };
    let mut phases = serde_json::Map::new();
    // This process too: what the clients cost is part of reading a saturated run.
    let mut args = args;
    args.watch.push(Watched {
        name: "sse-load".into(),
        pid: std::process::id(),
    });

    // Set-up: jobs must exist before a gateway job stream opens; resume history.
    let mut resume_ids: HashMap<usize, String> = HashMap::new();
    if let Some(sender) = &sender {
        let clock = PhaseClock::start(&args.watch);
        if args.target == Target::Gateway && args.stream == StreamKind::Job && !args.no_create {
            let sem = Arc::new(Semaphore::new(64));
            let mut handles = Vec::new();
            for t in 0..topics.count {
                let (sender, topics, sem) = (sender.clone(), topics.clone(), sem.clone());
                handles.push(tokio::spawn(async move {
                    let _permit = sem.acquire().await;
                    sender.publish(&topics, t, None).await
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        }
        for t in 0..topics.count.min(if args.resume_history > 0 {
            usize::MAX
        } else {
            0
        }) {
            for seq in 0..args.resume_history {
                let id = sender.publish(&topics, t, Some(seq)).await;
                if seq == 0 {
                    resume_ids.insert(t, id.context("first resume event failed")?);
                }
            }
        }
        phases.insert("setup".into(), clock.end());
    }

    // Connect ramp.
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_topic_live = |t: usize| {
        let n = topics.count as u64;
        args.events / n + u64::from((t as u64) < args.events % n)
    };
    let in_flight = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut handles = Vec::with_capacity(args.connections);
    let mut rss_steps = Vec::new();
    let mut steps: Vec<usize> = args
        .rss_steps
        .iter()
        .copied()
        .filter(|&s| s <= args.connections)
        .collect();
    steps.sort_unstable();
    let clock = PhaseClock::start(&args.watch);
    let ramp_start = Instant::now();
    if steps.first() == Some(&0) {
        rss_steps.push(json!({"connections": 0, "procs": rss_of(&args.watch)}));
    }
    let mut h2c_share: Arc<conn::H2cShare> = Arc::default();
    for c in 0..args.connections {
        if Instant::now() >= deadline {
            break;
        }
        if steps.contains(&c) && c > 0 {
            wait_until(deadline, || {
                shared.established.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
                    >= c
            })
            .await;
            tokio::time::sleep(args.settle).await;
            rss_steps.push(json!({"connections": shared.established.load(Ordering::Relaxed), "procs": rss_of(&args.watch)}));
        }
        if args.connect_rate > 0.0 {
            let due = ramp_start + Duration::from_secs_f64(c as f64 / args.connect_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let t = topics.of_connection(c);
        let user = match args.stream {
            StreamKind::Job | StreamKind::Topic => format!("{}u{c}", args.topic_prefix),
            StreamKind::User => topics.owner(t),
        };
        let jobs = if args.stream == StreamKind::Job && c != t {
            vec![topics.name(t)]
        } else {
            vec![]
        };
        let token = match (&minter, args.auth) {
            (Some(m), Auth::Cookie | Auth::Query) => Some(m.mint(&user, None, &jobs)?),
            _ => None,
        };
        let mut path = match (args.target, args.stream) {
            (Target::Gateway, StreamKind::Job) => format!("/v1/jobs/{}/events", topics.name(t)),
            (Target::Gateway, StreamKind::User) => "/v1/users/me/events".to_string(),
            (Target::Gateway, StreamKind::Topic) => {
                format!("/v1/topics/{}/events", topics.name(t))
            }
            (Target::Nchan | Target::Floor, _) => format!("/sub/{}", topics.name(t)),
        };
        let mut cookie = None;
        match (args.auth, &token) {
            (Auth::Query, Some(token)) => path.push_str(&format!("?token={token}")),
            (Auth::Cookie, Some(token)) => cookie = Some(format!("{}={token}", args.cookie_name)),
            _ => {}
        }
        let last_event_id = resume_ids.get(&t).cloned();
        let resume_expect = if last_event_id.is_some() {
            args.resume_history.saturating_sub(1)
        } else {
            0
        };
        let expect = args.expect_events.or_else(|| {
            (args.publish != Via::None && (args.events > 0 || resume_expect > 0))
                .then(|| per_topic_live(t) + resume_expect)
        });
        let spec = Arc::new(Spec {
            server,
            source: (!args.source_addrs.is_empty())
                .then(|| args.source_addrs[c % args.source_addrs.len()]),
            request: crate::http::sse_request(
                &host,
                &path,
                cookie.as_deref(),
                last_event_id.as_deref(),
            ),
            expect,
            storm: args.storm,
            tls: tls.clone(),
            check_ids: args.target == Target::Gateway,
            after_id: last_event_id
                .as_deref()
                .and_then(|id| conn::parse_id(id.as_bytes())),
            connect_timeout: args.connect_timeout,
            first_request: args
                .keep_alive_first
                .as_deref()
                .map(|path| crate::http::get_request(&host, path)),
            h2c: args.h2c,
            h2c_share: (args.h2c && args.h2c_streams > 1).then(|| {
                if c % args.h2c_streams as usize == 0 {
                    h2c_share = Arc::default();
                }
                h2c_share.clone()
            }),
        });
        let permit = in_flight.clone().acquire_owned().await?;
        handles.push(tokio::spawn(conn::run(
            spec,
            shared.clone(),
            stop_rx.clone(),
            Some(permit),
        )));
    }
    let attempted = handles.len();
    wait_until(deadline, || {
        let settled =
            shared.established.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        settled >= attempted
            || (args.storm
                && shared.finished.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
                    >= attempted)
    })
    .await;
    let ramp_seconds = ramp_start.elapsed().as_secs_f64();
    phases.insert("connect".into(), clock.end());
    if steps.last().is_some_and(|&s| s >= attempted) {
        tokio::time::sleep(args.settle).await;
        rss_steps.push(json!({"connections": shared.established.load(Ordering::Relaxed), "procs": rss_of(&args.watch)}));
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"")?;
    }
    if args.storm {
        wait_until(deadline, || {
            shared.finished.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
                >= attempted
        })
        .await;
    }

    // Publish, then wait for every expected event.
    let mut publish_report = None;
    let expecting = !args.storm
        && (args.expect_events.is_some()
            || (sender.is_some() && (args.events > 0 || args.resume_history > 0)));
    let clock = PhaseClock::start(&args.watch);
    if let Some(go) = &args.go_file {
        wait_until(deadline, || go.exists()).await;
    }
    let established = shared.established.load(Ordering::Relaxed);
    if let Some(sender) = &sender {
        if args.events > 0 {
            let pacing = publish::Pacing {
                events: args.events,
                rate: args.rate,
                seq_base: args.resume_history,
                workers: args.publish_workers,
                batch: args.publish_batch,
                from_dispatch: args.latency_from_dispatch,
            };
            let took = publish::paced(sender.clone(), topics.clone(), pacing).await;
            publish_report = Some((sender.clone(), took));
        }
    }
    if expecting {
        let drain_deadline = (Instant::now() + args.drain_timeout).min(deadline);
        wait_until(drain_deadline, || {
            shared.finished.load(Ordering::Relaxed) >= established
        })
        .await;
    }
    if expecting || publish_report.is_some() {
        phases.insert("deliver".into(), clock.end());
    }
    if !args.hold.is_zero() {
        let hold_until = (Instant::now() + args.hold).min(deadline);
        tokio::time::sleep_until(hold_until.into()).await;
    }

    // Stop and collect.
    let _ = stop_tx.send(true);
    let mut all = Vec::with_capacity(handles.len());
    for h in handles {
        match tokio::time::timeout(Duration::from_secs(10), h).await {
            Ok(Ok(stats)) => all.push(stats),
            _ => {
                let mut lost = Stats::default();
                lost.failure = Some("task_lost");
                all.push(lost);
            }
        }
    }
    let mut report = aggregate(&args, all, attempted);
    report["phases"] = Value::Object(phases);
    report["rss_steps"] = Value::Array(rss_steps);
    report["connections"]["ramp_seconds"] = json!(ramp_seconds);
    if args.storm {
        let done = report["connections"]["storm_completed"]
            .as_u64()
            .unwrap_or(0);
        report["connections"]["storm_per_second"] = json!(done as f64 / ramp_seconds.max(1e-9));
    }
    if let Some((sender, took)) = publish_report {
        let failures = sender
            .failures
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        report["publish"] = json!({
            "via": format!("{:?}", args.publish),
            "sent": sender.sent.load(Ordering::Relaxed),
            "failed": failures.values().sum::<u64>(),
            "failures": failures,
            "seconds": took.as_secs_f64(),
        });
    }
    report["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(report)
}

fn rss_of(watched: &[Watched]) -> Value {
    let mut m = serde_json::Map::new();
    for w in watched {
        if let Some(s) = procstat::sample(w.pid) {
            m.insert(w.name.clone(), json!(s.rss_kib));
        }
    }
    Value::Object(m)
}

async fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) {
    while !cond() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn aggregate(args: &RunArgs, all: Vec<Stats>, attempted: usize) -> Value {
    let mut failed_by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut established, mut ended_by_server, mut storm_completed) = (0u64, 0u64, 0u64);
    let (mut connect, mut first_byte, mut first_event, mut complete, mut latency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut first_id = Vec::new();
    let (mut held, mut ids_not_increasing, mut bad_ids, mut body_reads) = (0u64, 0u64, 0u64, 0u64);
    let mut fanout: HashMap<u32, u32> = HashMap::new();
    let (mut received, mut unique, mut dups, mut ooo, mut gaps, mut other, mut lost, mut expected) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for s in all {
        if let Some(reason) = s.failure {
            *failed_by_reason.entry(reason).or_default() += 1;
        }
        if s.established {
            established += 1;
            if s.failure.is_none() && !s.ended_by_server {
                held += 1;
            }
        }
        first_id.extend(s.first_id_us);
        ids_not_increasing += s.ids_not_increasing;
        bad_ids += s.bad_ids;
        body_reads += s.body_reads;
        if s.ended_by_server {
            ended_by_server += 1;
        }
        connect.extend(s.connect_us);
        first_byte.extend(s.first_byte_us);
        first_event.extend(s.first_event_us);
        if s.complete_us.is_some() {
            storm_completed += 1;
        }
        complete.extend(s.complete_us);
        received += s.seq_events;
        unique += s.unique;
        dups += s.duplicates;
        ooo += s.out_of_order;
        gaps += s.gaps();
        other += s.other_events;
        if let Some(expect) = expected_of(args, &s) {
            expected += expect;
            lost += expect.saturating_sub(s.unique);
        }
        for &(seq, lat) in &s.samples {
            latency.push(lat);
            let e = fanout.entry(seq).or_insert(0);
            *e = (*e).max(lat);
        }
    }
    let failed: u64 = failed_by_reason.values().sum();
    let mut fanout_by_seq: Vec<(u32, u32)> = fanout.iter().map(|(&s, &l)| (s, l)).collect();
    fanout_by_seq.sort_unstable();
    let raw = args
        .raw_samples
        .then(|| json!({"first_id_us": first_id.clone()}));
    json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "url": args.url,
        "connections": {
            "attempted": attempted,
            "established": established,
            "failed": failed,
            "failed_by_reason": failed_by_reason,
            "storm_completed": storm_completed,
            "held": held,
        },
        "connect_us": percentiles(connect),
        "first_byte_us": percentiles(first_byte),
        "first_event_us": percentiles(first_event),
        "first_id_us": percentiles(first_id),
        "complete_us": percentiles(complete),
        "events": {
            "received": received, "unique": unique, "expected": expected, "lost": lost,
            "gaps": gaps, "duplicates": dups, "out_of_order": ooo, "other": other,
            "ended_by_server": ended_by_server,
            "ids_not_increasing": ids_not_increasing, "bad_ids": bad_ids,
            "body_reads": body_reads,
        },
        "latency_us": percentiles(latency),
        "fanout_last_us": percentiles(fanout.into_values().collect()),
        // Per event (`seq`), the latency of its last subscriber here: runs split over
        // processes take the highest per `seq` to get the whole fan-out's.
        "fanout_last_by_seq": fanout_by_seq,
        "raw": raw,
    })
}

/// Events connection `s` was expected to receive, when known (established ones only:
/// failures are counted as failures, not as lost events).
fn expected_of(args: &RunArgs, s: &Stats) -> Option<u64> {
    if !s.established || args.storm {
        return None;
    }
    s.expect
}
