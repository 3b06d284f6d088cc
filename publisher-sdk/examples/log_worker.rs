//! A worker that publishes numbered `log` lines to one job, one every `--interval-ms`,
//! until its standard input closes (or `--max` lines): the Rust worker of the browser
//! suite's three-language test (`gateway/tests/browser/workers.test.js`), whose Python and
//! Node workers take the same flags and print the same lines.
//!
//! ```text
//! cargo run -p sse-publisher --example log_worker -- --broker redis://127.0.0.1:6379 \
//!     --job render-7 --owner alice --name rust </dev/null
//! cargo run -p sse-publisher --example log_worker -- --broker http://127.0.0.1:8080 \
//!     --token "$PUBLISHER_TOKEN" --job render-7 --owner alice --name rust
//! ```
//!
//! Each line is `"<name> <n>"`, n from 1, published with the idempotency key
//! `<name>:<job>:<n>`, so an attempt whose outcome is unknown (a gateway killed under the
//! request, which a proxy in front reports as `502`) is retried without publishing twice.
//! Prints `published <n> <event id>` for each line and `done <count>` at the end; exits 1
//! on the first publish that fails.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use sse_publisher::{EventOptions, Level, Publisher, RedisOptions};

#[derive(Parser)]
struct Args {
    /// `redis://host:port` (the Redis transport) or `http://host:port` (a gateway).
    #[arg(long)]
    broker: String,
    /// The gateways' `--redis-prefix` (Redis transport).
    #[arg(long, default_value = "sse:")]
    prefix: String,
    /// A token whose role is `publisher` (HTTP transport).
    #[arg(long, default_value = "")]
    token: String,
    #[arg(long)]
    job: String,
    #[arg(long)]
    owner: String,
    /// Names the lines, and the idempotency keys.
    #[arg(long)]
    name: String,
    /// Pause between two lines.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Stop after this many lines even if standard input stays open.
    #[arg(long, default_value_t = 5000)]
    max: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let publisher = if args.broker.starts_with("http://") {
        Publisher::http(&args.broker, args.token)
    } else {
        let options = RedisOptions::default().prefix(args.prefix);
        Publisher::connect_with(&args.broker, options).await
    };
    let publisher = match publisher {
        Ok(publisher) => publisher,
        Err(error) => {
            eprintln!("log_worker: {error}");
            return ExitCode::FAILURE;
        }
    };

    // Standard input closing is the signal to stop. A thread of its own reads it: the
    // process may end while the read still blocks, which a runtime's blocking task would
    // not allow.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop.send(true);
    });

    let job = publisher.job(&args.job, &args.owner);
    let interval = Duration::from_millis(args.interval_ms);
    let mut n = 0;
    while n < args.max && !*stopped.borrow() {
        n += 1;
        let line = json!({"level": Level::Info.as_str(), "message": format!("{} {n}", args.name)});
        let options =
            EventOptions::default().idempotency_key(format!("{}:{}:{n}", args.name, args.job));
        match job.event_with("log", line, options).await {
            Ok(id) => println!("published {n} {id}"),
            Err(error) => {
                eprintln!("log_worker: line {n}: {error}");
                return ExitCode::FAILURE;
            }
        }
        tokio::select! {
            _ = stopped.changed() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
    println!("done {n}");
    ExitCode::SUCCESS
}
