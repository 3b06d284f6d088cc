//! A horizontally scaled Server-Sent Events gateway.
//!
//! Browsers open `text/event-stream` connections to any node; workers publish job
//! progress; every event reaches every subscribed client in order, once, and a client that
//! reconnects anywhere resumes with `Last-Event-ID`. The contract is DESIGN.md; the
//! bird's-eye view is `docs/ARCHITECTURE.md`; the wire contract shared with publishers
//! (ids, keys, envelope, frames, job state, scripts) is the `sse-wire` crate.
//!
//! The parts, in layers; imports point downwards only, and no two modules import each
//! other (a test in `tests/layers.rs` holds this):
//!
//! | layer | modules | what |
//! | --- | --- | --- |
//! | 4 entry | `main`, [`config`] | the command line, the environment, start-up |
//! | 3 server | [`server`] | composition root, accept loop, connections, HTTP/1.1 streams, drain |
//! | 2 http | [`routes`], [`stream`], [`error`], [`demo`] | the HTTP API, opening and writing streams, error answers |
//! | 1 core | [`auth`], [`hub`], [`broker`] | tokens, this node's fan-out, publishing and subscriptions |
//! | 0 vocabulary | [`vocab`], [`metrics`], [`shutdown`], [`telemetry`] | events and topics, chunks, the connection flag, queries, bodies; metrics and traces |

#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod config;
pub mod demo;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod vocab;

pub use config::Config;
pub use server::{run, Settings};
pub use shutdown::Shutdown;
