//! Load generator for SSE servers: the gateway, Nginx + Nchan, and the raw-write floor.
//!
//! - [`sse`]: the WHATWG event-stream parser every simulated browser runs.
//! - [`http`]: the request an `EventSource` sends; response head and chunked body.
//! - [`conn`]: one connection and what it measures.
//! - [`publish`]: paced publishing over HTTP or the SDK, with `seq` and `t_us` fields.
//! - [`procstat`]: CPU and RSS of the servers under test, from `/proc`.
//! - [`run`]: a whole bounded run (set-up, connect ramp, publish, drain, report).
//! - [`report`]: percentiles and the text and JSON reports.
//!
//! Architecture invariant: every run is bounded in connections and time, targets
//! loopback only, and never signals a process; it only reads `/proc` of the pids it is
//! told to watch, and its own.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod conn;
pub mod http;
pub mod procstat;
pub mod publish;
pub mod report;
pub mod run;
pub mod sse;
pub mod token;

/// The kind of server under test, which decides URL shapes and publish bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `/v1/jobs/{job}/events`, `/v1/users/me/events`, `/v1/topics/{topic}/events`,
    /// JWT auth.
    Gateway,
    /// `/sub/{channel}` (eventsource), `/pub/{channel}`.
    Nchan,
    /// `sse-floor`: `/sub/{topic}`, `/pub/{topic}`.
    Floor,
}

/// Which stream a gateway client opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamKind {
    Job,
    User,
    /// A topic (broadcast feed): opens at the live edge with an id-only block; clients
    /// carry plain tokens, so the gateway must make the topics public
    /// (`--public-topic`), or anonymous with `--auth none`.
    Topic,
}

/// The topics of a run: names, owners, and which user each connection is.
#[derive(Debug, Clone)]
pub struct Topics {
    pub count: usize,
    pub prefix: String,
    pub stream: StreamKind,
}

impl Topics {
    /// Job id (`{prefix}j{t}`), user id (`{prefix}u{t}`) or topic name (`{prefix}t{t}`)
    /// of topic `t`.
    pub fn name(&self, t: usize) -> String {
        match self.stream {
            StreamKind::Job => format!("{}j{t}", self.prefix),
            StreamKind::User => format!("{}u{t}", self.prefix),
            StreamKind::Topic => format!("{}t{t}", self.prefix),
        }
    }

    /// The user owning job `t` (and the user of user-topic `t`).
    pub fn owner(&self, t: usize) -> String {
        format!("{}u{t}", self.prefix)
    }

    /// The topic connection `c` watches.
    pub fn of_connection(&self, c: usize) -> usize {
        c % self.count.max(1)
    }
}
