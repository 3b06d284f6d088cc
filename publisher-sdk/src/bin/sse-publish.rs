//! `sse-publish`: publish job events, user notifications and topic events from shell
//! scripts.
//!
//! ```text
//! sse-publish --gateway http://127.0.0.1:8080 --token "$PUBLISHER_TOKEN" \
//!     job j1 --owner u1 progress --data '{"progress":45,"stage":"Encoding"}'
//! sse-publish --gateway http://127.0.0.1:8080 --token "$T" notify u1 notice --data '{"text":"hi"}'
//! sse-publish --gateway http://127.0.0.1:8080 --token "$T" topic news announcement --data '{"title":"…"}'
//! ```
//! Prints the event id. Exit status: 0 published, 1 failed, 2 usage, 3 owner conflict,
//! 4 job finished.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use sse_publisher::{Error, EventOptions, Publisher};

#[derive(Parser)]
#[command(
    name = "sse-publish",
    version,
    about = "Publish events to the SSE gateway"
)]
struct Cli {
    /// Gateway base URL (HTTP transport).
    #[arg(long, env = "SSE_GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Token with role "publisher" (e.g. from `sse-gateway mint-token --role publisher`).
    #[arg(long, env = "SSE_PUBLISH_TOKEN", hide_env_values = true)]
    token: String,
    /// Correlation id carried in the event and logged by the gateway.
    #[arg(long, global = true)]
    correlation_id: Option<String>,
    /// Idempotency key: running the same command again within the gateway's
    /// --idempotency-window publishes nothing and prints the first event's id.
    #[arg(long, global = true)]
    idempotency_key: Option<String>,
    #[command(subcommand)]
    command: What,
}

#[derive(Subcommand)]
enum What {
    /// Publish a job event.
    Job {
        /// Job id.
        job: String,
        /// Owner user id, on every job event: the gateway registers it with the job's first
        /// event and refuses another owner afterwards (exit status 3).
        #[arg(long)]
        owner: String,
        /// Event type: progress, stage, log, complete, failed, cancelled or your own.
        event_type: String,
        /// Event fields, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
    },
    /// Publish an event to a topic (a broadcast feed).
    Topic {
        /// Topic name.
        topic: String,
        /// Event type, e.g. announcement.
        event_type: String,
        /// Event fields, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
    },
    /// Publish a notification to a user's stream.
    Notify {
        /// User id.
        user: String,
        /// Event type, e.g. notice.
        event_type: String,
        /// Event fields, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let publisher = match Publisher::http(&cli.gateway, cli.token) {
        Ok(publisher) => publisher,
        Err(error) => return fail(&error),
    };
    let mut options = EventOptions::default();
    if let Some(id) = cli.correlation_id {
        options = options.correlation_id(id);
    }
    if let Some(key) = cli.idempotency_key {
        options = options.idempotency_key(key);
    }
    let result = match cli.command {
        What::Job {
            job,
            owner,
            event_type,
            data,
        } => match parse(&data) {
            Ok(data) => {
                publisher
                    .job(job, owner)
                    .event_with(&event_type, data, options)
                    .await
            }
            Err(error) => Err(error),
        },
        What::Topic {
            topic,
            event_type,
            data,
        } => match parse(&data) {
            Ok(data) => {
                publisher
                    .topic(topic)
                    .publish_with(&event_type, data, options)
                    .await
            }
            Err(error) => Err(error),
        },
        What::Notify {
            user,
            event_type,
            data,
        } => match parse(&data) {
            Ok(data) => {
                publisher
                    .notify_with(&user, &event_type, data, options)
                    .await
            }
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn parse(data: &str) -> Result<Value, Error> {
    serde_json::from_str(data)
        .map_err(|e| Error::InvalidArgument(format!("--data is not JSON: {e}")))
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("sse-publish: {error}");
    match error {
        Error::InvalidArgument(_) => ExitCode::from(2),
        Error::OwnerConflict { .. } => ExitCode::from(3),
        Error::JobFinished { .. } => ExitCode::from(4),
        _ => ExitCode::FAILURE,
    }
}
