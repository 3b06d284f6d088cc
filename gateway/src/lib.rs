//! A horizontally scaled Server-Sent Events gateway.
//!
//! Browsers open `text/event-stream` connections to any node; workers publish job
//! progress; every event reaches every subscribed client in order, once, and a client that
//! reconnects anywhere resumes with `Last-Event-ID`. The contract is DESIGN.md; the
//! bird's-eye view is `docs/ARCHITECTURE.md`.
//!
//! The parts, in the order a request meets them:
//! - [`config`]: flags with environment fallbacks, parsed and validated once.
//! - [`server`]: accept loop, per-connection serving, metrics listener, drain.
//! - [`h1`]: HTTP/1.1 event streams written straight to the socket (hyper serves the rest).
//! - [`routes`]: the HTTP API; [`auth`]: tokens; [`error`]: the JSON error answers.
//! - [`stream`]: opening a stream in the race-free order, and its response body.
//! - [`hub`]: this node's fan-out to connections, with bounded per-connection queues.
//! - [`broker`]: publishing, history and subscriptions (`memory` embedded; Redis).
//! - [`sse`]: the `text/event-stream` encoding; [`metrics`]; [`shutdown`]; [`demo`].
//!
//! The wire contract shared with publishers (ids, keys, envelope, job state) lives in
//! `sse_wire`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod config;
pub mod demo;
pub mod error;
pub mod h1;
pub mod hub;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod stream;

pub use config::Config;
pub use server::run;
pub use shutdown::Shutdown;
