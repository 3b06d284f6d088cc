//! The gateway's vocabulary: the small types every other part speaks, and nothing else.
//!
//! - [`event`]: an event as a node delivers it (id, rendered frame and chunk) and the
//!   [`Topic`](event::Topic) a stream follows;
//! - [`chunk`]: the HTTP/1.1 chunk encoding the stream path writes;
//! - [`control`]: the flag that lets anyone cut a connection, even one blocked writing;
//! - [`query`]: query-string parameters;
//! - [`body`]: a response body, whole or streamed.
//!
//! Architecture invariant: this layer imports nothing of the gateway above it (no auth,
//! hub, broker, stream, routes or server); it may use `sse-wire`.

pub mod body;
pub mod chunk;
pub mod control;
pub mod event;
pub mod query;
