//! The demo's fake jobs (`--demo`): renders, imports and builds for the user `demo` that
//! move through stages, log lines, finish, and now and then fail — and an announcements
//! feed (the topic `demo.announcements`) — published through the node's broker like any
//! publisher's events.

use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::broker::{
    Broker, BrokerError, JobEvent, NodeBroker, PublishMeta, TopicEvent, UserEvent,
};

/// The user the demo publisher works for.
pub const DEMO_USER: &str = "demo";

/// The demo's topics (any signed-in user may watch them) and its announcements feed.
pub const DEMO_TOPICS: &str = "demo.*";
pub const DEMO_ANNOUNCEMENTS: &str = "demo.announcements";

/// What a fake job is.
struct Kind {
    prefix: &'static str,
    stages: &'static [&'static str],
    result: fn(u64) -> serde_json::Value,
}

const KINDS: [Kind; 3] = [
    Kind {
        prefix: "render",
        stages: &["Downloading", "Decoding", "Encoding", "Muxing", "Uploading"],
        result: |n| json!({"outputPath": format!("renders/clip-{n}.mp4"), "durationSeconds": 42}),
    },
    Kind {
        prefix: "import",
        stages: &["Fetching", "Validating", "Importing", "Indexing"],
        result: |n| json!({"rows": 1000 + n * 37, "skipped": n % 5}),
    },
    Kind {
        prefix: "build",
        stages: &["Checkout", "Compile", "Test", "Package"],
        result: |n| json!({"artifact": format!("app-1.{n}.0.tar.gz"), "tests": 128}),
    },
];

/// Publishes fake jobs for the user `demo`, forever: a new job every few seconds, at most
/// a handful running at once, every fifth one failing.
pub async fn publish_demo_jobs(broker: NodeBroker) {
    let mut number: u64 = 0;
    let running = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        number += 1;
        let job_broker = broker.clone();
        tokio::spawn(async move {
            if let Err(error) = run_demo_job(&job_broker, number).await {
                tracing::warn!(%error, "demo job failed to publish");
            }
            drop(permit);
        });
        let pause = Duration::from_millis(rand::rng().random_range(1500..3500));
        tokio::time::sleep(pause).await;
        if number.is_multiple_of(4) {
            let notice = UserEvent {
                user: DEMO_USER.into(),
                event_type: "notice".into(),
                fields: json!({"text": format!("{number} demo jobs started so far")})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                meta: PublishMeta::default(),
            };
            let _ = broker.publish_user_event(notice).await;
        }
    }
}

async fn run_demo_job(broker: &NodeBroker, number: u64) -> Result<(), BrokerError> {
    let kind = &KINDS[(number % KINDS.len() as u64) as usize];
    let job = format!("{}-{number}", kind.prefix);
    let fails = number.is_multiple_of(5);
    let publish = |event_type: &str, fields: serde_json::Value| JobEvent {
        job: job.clone(),
        owner: Some(DEMO_USER.into()),
        event_type: event_type.into(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        meta: PublishMeta {
            correlation_id: Some(format!("demo-{number}")),
            ..PublishMeta::default()
        },
        reopen: false,
    };
    broker
        .publish_job_event(publish("stage", json!({"stage": "Queued"})))
        .await?;
    let total = kind.stages.len() as u64;
    for (index, stage) in kind.stages.iter().enumerate() {
        let index = index as u64;
        broker
            .publish_job_event(publish("stage", json!({"stage": stage})))
            .await?;
        for step in 1..=4u64 {
            let pause = Duration::from_millis(rand::rng().random_range(250..700));
            tokio::time::sleep(pause).await;
            let progress = (index * 100 + step * 25) / total;
            broker
                .publish_job_event(publish(
                    "progress",
                    json!({"progress": progress, "stage": stage}),
                ))
                .await?;
            if step % 2 == 0 {
                let line = format!("{stage}: step {step}/4 done");
                broker
                    .publish_job_event(publish("log", json!({"level": "info", "message": line})))
                    .await?;
            }
        }
        if fails && index + 2 == total {
            let error = format!("{stage} failed: worker ran out of disk space");
            broker
                .publish_job_event(publish("log", json!({"level": "error", "message": error})))
                .await?;
            broker
                .publish_job_event(publish("failed", json!({"error": error})))
                .await?;
            return Ok(());
        }
    }
    broker
        .publish_job_event(publish(
            "complete",
            json!({"result": (kind.result)(number)}),
        ))
        .await?;
    Ok(())
}

/// What the announcements feed says, in turn: (severity, title, text).
const ANNOUNCEMENTS: [(&str, &str, &str); 5] = [
    ("info", "Render farm", "All 12 render nodes are up"),
    (
        "warning",
        "Maintenance",
        "Imports pause on Sunday 02:00-02:30 UTC",
    ),
    (
        "info",
        "Release",
        "Build pipeline 2.4 is live: caching is on for every job",
    ),
    ("info", "Queue", "Jobs are starting within a few seconds"),
    (
        "warning",
        "Storage",
        "The scratch volume is 80% full; old renders are pruned at 90%",
    ),
];

/// Publishes an announcement to [`DEMO_ANNOUNCEMENTS`] every 8 to 14 seconds, forever
/// (the first one at once, so a fresh dashboard has one to resume from).
pub async fn publish_demo_announcements(broker: NodeBroker) {
    for number in 0u64.. {
        let (severity, title, text) = ANNOUNCEMENTS[(number % ANNOUNCEMENTS.len() as u64) as usize];
        let event = TopicEvent {
            topic: DEMO_ANNOUNCEMENTS.into(),
            event_type: "announcement".into(),
            fields: json!({"severity": severity, "title": title, "text": text})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            meta: PublishMeta::default(),
        };
        if let Err(error) = broker.publish_topic_event(event).await {
            tracing::warn!(%error, "demo announcement failed to publish");
        }
        let pause = Duration::from_millis(rand::rng().random_range(8000..14000));
        tokio::time::sleep(pause).await;
    }
}
