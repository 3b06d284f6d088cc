//! A client that behaves like EventSource: it reconnects by itself after the last `retry:`
//! with `Last-Event-ID` whenever its stream ends or breaks.

use std::net::SocketAddr;
use std::time::Duration;

use super::http::Request;
use super::sse::{Event, SseStream};

/// What one EventSource-like client saw.
#[derive(Debug, Default)]
pub struct Followed {
    /// The snapshot the first connection opened with.
    pub opening: String,
    pub events: Vec<Event>,
    pub reconnects: usize,
    /// Statuses other than 200 it was answered with (a browser would stop on them).
    pub refusals: Vec<u16>,
}

/// Follows `target` through the load balancer like EventSource does: reconnects after the
/// last `retry:` with `Last-Event-ID` whenever the stream ends or breaks, until `is_last`.
pub async fn follow(
    lb: SocketAddr,
    token: String,
    target: String,
    is_last: fn(&Event) -> bool,
) -> Followed {
    follow_with(lb, Some(token), target, is_last, Opening::Snapshot).await
}

/// Follows a topic stream (`/v1/topics/…`) like EventSource: it opens at the live edge with
/// an id-only block (recorded as [`Followed::opening`]), and every `id:` field — of an
/// event or of an id-only block — is what a reconnect sends. `token: None` watches
/// without one (an `--anonymous-topic`).
pub async fn follow_feed(
    lb: SocketAddr,
    token: Option<String>,
    target: String,
    is_last: impl FnMut(&Event) -> bool,
) -> Followed {
    follow_with(lb, token, target, is_last, Opening::Position).await
}

/// What a stream's first frame is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// An event carrying the state (job and user streams).
    Snapshot,
    /// An id-only block at the live edge (topic streams).
    Position,
}

async fn follow_with(
    lb: SocketAddr,
    token: Option<String>,
    target: String,
    mut is_last: impl FnMut(&Event) -> bool,
    opening: Opening,
) -> Followed {
    let mut followed = Followed::default();
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_millis(300);
    loop {
        let mut request = Request::get(&target);
        if let Some(token) = &token {
            request = request.bearer(token);
        }
        if let Some(id) = &last_id {
            request = request.last_event_id(id);
        }
        let mut stream: SseStream = match SseStream::open(lb, &request).await {
            Ok(stream) => stream,
            Err(response) => {
                // Said where it happens: the assertion on refusals only has the status.
                eprintln!("{target}: refused {} {}", response.status, response.text());
                followed.refusals.push(response.status);
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        loop {
            match stream.try_next_frame(Duration::from_secs(30)).await {
                Ok(Some(frame)) => {
                    if let Some(ms) = frame.retry {
                        retry = Duration::from_millis(ms);
                    }
                    if opening == Opening::Position {
                        if let Some(id) = &frame.id_field {
                            if last_id.is_none() {
                                followed.opening = id.clone();
                            }
                            last_id = Some(id.clone());
                        }
                    }
                    let Some(event) = frame.event else { continue };
                    if opening == Opening::Snapshot && last_id.is_none() {
                        followed.opening = event.id.clone();
                        last_id = Some(event.id);
                        continue;
                    }
                    last_id = Some(event.id.clone());
                    let last = is_last(&event);
                    followed.events.push(event);
                    if last {
                        return followed;
                    }
                }
                Ok(None) => break,
                Err(()) => panic!("{target}: no frame for 30 s (heartbeats stopped?)"),
            }
        }
        followed.reconnects += 1;
        tokio::time::sleep(retry).await;
    }
}
