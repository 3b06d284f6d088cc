//! Graceful shutdown: on SIGTERM the node reports not ready, refuses new streams with
//! `503 draining`, ends every open stream with a final `retry:` line and a clean end
//! (spread out, not all at once), and exits 0 within `--drain-timeout`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

backend_tests!(sigterm_drains_and_exits_zero_within_the_timeout);

async fn sigterm_drains_and_exits_zero_within_the_timeout(backend: Backend) {
    const STREAMS: usize = 20;
    let drain_timeout = Duration::from_secs(2);
    let mut gw = Gateway::builder(backend)
        .flag("--drain-timeout", "2s")
        .flag("--heartbeat", "10s")
        .start()
        .await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
    )
    .await;

    let mut streams = Vec::new();
    for n in 0..STREAMS {
        let user = format!("u{}", n % 4 + 1);
        let mut stream = if n % 2 == 0 {
            let mut s = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
            expect_opening(&mut s, "status").await;
            s
        } else {
            let mut s = gw.open_as(&user, "/v1/users/me/events").await.stream();
            expect_opening(&mut s, "jobs").await;
            s
        };
        stream.expect_no_event_for(Duration::from_millis(1)).await;
        streams.push(stream);
    }
    assert_eq!(
        gw.metric("sse_gateway_open_connections").await,
        STREAMS as f64
    );

    let sent = tokio::time::Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let (frames, end) = stream.expect_end_within(Duration::from_secs(5)).await;
                (stream.target.clone(), frames, end, sent.elapsed())
            })
        })
        .collect();
    gw.sigterm();

    // Not ready any more, and no new streams, while open ones are being ended.
    wait_until(
        "/readyz to turn 503 after SIGTERM",
        Duration::from_secs(1),
        || async { gw.send(Request::get("/readyz")).await.status == 503 },
    )
    .await;
    let readyz = gw.send(Request::get("/readyz")).await;
    assert_error(&readyz, 503, "draining");
    let refused = gw.open_as("u1", "/v1/jobs/j1/events").await.refused();
    assert_error(&refused, 503, "draining");
    let refused = gw.open_as("u9", "/v1/users/me/events").await.refused();
    assert_error(&refused, 503, "draining");
    let observed_draining = sent.elapsed();

    let status = gw.wait_exit(drain_timeout + Duration::from_secs(1)).await;
    let exited = sent.elapsed();
    assert!(
        status.success(),
        "exit status 0 after a drain, got {status:?}"
    );
    assert!(
        exited <= drain_timeout + Duration::from_millis(1000),
        "exited {exited:?} after SIGTERM"
    );

    let mut ends = Vec::new();
    for reader in readers {
        let (target, frames, end, at) = reader.await.expect("stream reader");
        assert_eq!(end, End::Clean, "{target}: a drained stream ends cleanly");
        let last = frames
            .last()
            .unwrap_or_else(|| panic!("{target}: no final retry line before the end"));
        let retry = last
            .retry
            .unwrap_or_else(|| panic!("{target}: last frame is not a retry line: {:?}", last.raw));
        assert_eq!(
            last.raw,
            format!("retry: {retry}\n\n"),
            "{target}: the final retry frame"
        );
        ends.push(at);
    }
    ends.sort();
    let (first, last) = (ends[0], *ends.last().unwrap());
    assert!(
        last <= drain_timeout / 2 + Duration::from_millis(500),
        "streams are ended within half the drain timeout (last at {last:?})"
    );
    assert!(
        last - first >= Duration::from_millis(100),
        "stream ends are spread out, not all at once (from {first:?} to {last:?})"
    );
    eprintln!("drain: draining seen at {observed_draining:?}, ends {first:?}..{last:?}, exit at {exited:?}");
}
