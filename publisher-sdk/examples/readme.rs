//! The README's Rust example, as a program: `deploy/checks/docs.py` (`make test-docs`)
//! checks that the README's ```rust block equals the region between the two `README:`
//! markers below, and runs it, as the README does, against `make run`'s gateway:
//!
//! ```text
//! SSE_PUBLISH_TOKEN=$PUB cargo run -q -p sse-publisher --example readme
//! ```
//!
//! Its job (`video-3`) is one no demo job can own (theirs are `render-N`, `import-N`,
//! `build-N` for the user `demo`).

// README: begin
use serde_json::json;
use sse_publisher::{Level, Publisher};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sse_publisher::Error> {
    // Through a gateway's HTTP API, with a publisher token. With Redis behind the gateways,
    // `Publisher::connect("redis://127.0.0.1:6379").await?` writes into it instead.
    let token = std::env::var("SSE_PUBLISH_TOKEN").unwrap_or_default();
    let publisher = Publisher::http("http://127.0.0.1:8080", token)?;
    let job = publisher.job("video-3", "alice");
    job.progress(45, "Encoding").await?;
    job.log(Level::Info, "frame 100/200").await?;
    let id = job.complete(json!({"outputPath": "out.mp4"})).await?;
    println!("video-3 completed: {id}");
    Ok(())
}
// README: end
