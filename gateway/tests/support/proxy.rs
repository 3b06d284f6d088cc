//! Fault injection between a gateway and Redis: a loopback TCP proxy that forwards every
//! connection both ways and can, on command, hold one connection's traffic, watch for a
//! command, or cut a connection.
//!
//! What it matches is the Redis protocol as sent: a [`Match`] names a command
//! (`\r\nSUBSCRIBE\r\n`, exactly that word, so not `SSUBSCRIBE` or `UNSUBSCRIBE`) and
//! markers (a job id, a key) that must all appear in what one connection sent in one read
//! (with the tail of the read before it, so a command split across reads still matches).
//!
//! - [`FaultProxy::hold`]: the first read that matches, on any connection, and everything
//!   after it on that connection in that direction, is kept back until the hold is
//!   released (or its time runs out). The bytes are then forwarded in order: a held
//!   `SUBSCRIBE` reaches Redis late, exactly as if the network had been slow.
//! - [`FaultProxy::watch`]: says when a matching read went through, holding nothing.
//! - [`FaultProxy::cut`]: closes every connection that ever sent a match (e.g. the
//!   pub/sub connection, the one that sent `SUBSCRIBE`), both ways, at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Gateway → Redis (commands).
    ToServer,
    /// Redis → gateway (replies, pub/sub messages).
    ToClient,
}

/// What a read must contain: every needle, compared ignoring ASCII case.
#[derive(Clone, Debug)]
pub struct Match {
    needles: Vec<Vec<u8>>,
}

impl Match {
    /// A command by name, e.g. `SUBSCRIBE`, `XRANGE`, `HGETALL`, `SSUBSCRIBE`.
    pub fn command(name: &str) -> Match {
        Match {
            needles: vec![format!("\r\n{name}\r\n").into_bytes()],
        }
    }

    /// A bulk string sent either way, e.g. a script's reply word (`published`): RESP
    /// frames a word the same whether it is a command or a reply.
    pub fn word(word: &str) -> Match {
        Match::command(word)
    }

    /// …whose arguments also contain `marker` (a job id, a key).
    pub fn with(mut self, marker: &str) -> Match {
        self.needles.push(marker.as_bytes().to_vec());
        self
    }

    fn found_in(&self, haystack: &[u8]) -> bool {
        self.needles.iter().all(|needle| contains(haystack, needle))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Bytes of the previous read kept to match a command split across two reads.
const CARRY: usize = 512;
/// Bytes of each connection's opening kept for [`FaultProxy::cut`] matches.
const OPENING: usize = 16 * 1024;

/// A rule that fires on the first matching read.
struct Rule {
    direction: Direction,
    pattern: Match,
    /// Whether matching bytes are kept back until release.
    holds: bool,
    state: Mutex<RuleState>,
    fired: Notify,
    released: watch::Sender<bool>,
}

#[derive(Default)]
struct RuleState {
    fired: bool,
}

impl Rule {
    /// Fires the rule if `haystack` matches and it has not fired yet.
    fn try_fire(&self, direction: Direction, haystack: &[u8]) -> bool {
        if direction != self.direction || !self.pattern.found_in(haystack) {
            return false;
        }
        let mut state = self.state.lock().expect("rule lock");
        if state.fired {
            return false;
        }
        state.fired = true;
        drop(state);
        self.fired.notify_waiters();
        true
    }

    fn has_fired(&self) -> bool {
        self.state.lock().expect("rule lock").fired
    }
}

/// A hold or a watch on the proxy (see the module doc).
#[derive(Clone)]
pub struct Trigger {
    rule: Arc<Rule>,
}

impl Trigger {
    /// Waits until a matching read went through the proxy (and, for a hold, is held).
    pub async fn fired(&self, within: Duration) {
        let wait = async {
            loop {
                let notified = self.rule.fired.notified();
                if self.rule.has_fired() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the proxy saw no {:?} matching {:?} within {within:?}",
                    self.rule.direction, self.rule.pattern
                )
            })
    }

    /// Whether a matching read went through.
    pub fn has_fired(&self) -> bool {
        self.rule.has_fired()
    }

    /// Waits up to `within` for a matching read; `false` when none came in that time.
    pub async fn fires_within(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.rule.fired.notified();
                if self.rule.has_fired() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Lets held bytes go (a no-op for a watch, or when nothing was held).
    pub fn release(&self) {
        self.rule.released.send_replace(true);
    }
}

struct Connection {
    /// What the gateway sent first (up to [`OPENING`] bytes), for [`FaultProxy::cut`].
    opening: Mutex<Vec<u8>>,
    /// Set to close the connection both ways.
    cut: watch::Sender<bool>,
    /// The gateway's latest reads (with their carry), for [`FaultProxy::cut`] matches.
    sent: Mutex<Vec<Vec<u8>>>,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Arc<Rule>>>,
    connections: Mutex<Vec<Arc<Connection>>>,
}

/// A proxy in front of one upstream address (see the module doc).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        FaultProxy::serve(listener, upstream)
    }

    /// Forwards what `listener` accepts to `upstream` (a listener bound beforehand, e.g.
    /// so that a Redis Cluster node can announce its port before it starts).
    pub fn serve(listener: TcpListener, upstream: SocketAddr) -> FaultProxy {
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds the first read matching `pattern` in `direction`, and everything after it
    /// on that connection that way, until released or `limit` has passed.
    pub fn hold(&self, direction: Direction, pattern: Match, limit: Duration) -> Trigger {
        let trigger = self.rule(direction, pattern, true);
        let released = trigger.rule.released.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            released.send_replace(true);
        });
        trigger
    }

    /// Says when a read matching `pattern` went through in `direction` (holds nothing).
    pub fn watch(&self, direction: Direction, pattern: Match) -> Trigger {
        self.rule(direction, pattern, false)
    }

    fn rule(&self, direction: Direction, pattern: Match, holds: bool) -> Trigger {
        let rule = Arc::new(Rule {
            direction,
            pattern,
            holds,
            state: Mutex::new(RuleState::default()),
            fired: Notify::new(),
            released: watch::channel(false).0,
        });
        self.shared
            .rules
            .lock()
            .expect("rules lock")
            .push(rule.clone());
        Trigger { rule }
    }

    /// Closes every open connection on which the gateway ever sent something matching
    /// `pattern`; returns how many.
    pub fn cut(&self, pattern: &Match) -> usize {
        let connections = self.shared.connections.lock().expect("connections lock");
        let mut cut = 0;
        for connection in connections.iter() {
            let sent_match = connection
                .sent
                .lock()
                .expect("sent lock")
                .iter()
                .any(|read| pattern.found_in(read))
                || pattern.found_in(&connection.opening.lock().expect("opening lock"));
            if sent_match && !*connection.cut.borrow() {
                connection.cut.send_replace(true);
                cut += 1;
            }
        }
        cut
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.shared.connections.lock().expect("lock").iter() {
            connection.cut.send_replace(true);
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(upstream).await else {
            // Upstream down: the client sees its connection closed, as with a dead Redis.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let connection = Arc::new(Connection {
            opening: Mutex::new(Vec::new()),
            cut: watch::channel(false).0,
            sent: Mutex::new(Vec::new()),
        });
        {
            let mut connections = shared.connections.lock().expect("connections lock");
            connections.retain(|c| !*c.cut.borrow() && Arc::strong_count(c) > 1);
            connections.push(connection.clone());
        }
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(
            client_read,
            server_write,
            Direction::ToServer,
            shared.clone(),
            connection.clone(),
        ));
        tokio::spawn(pump(
            server_read,
            client_write,
            Direction::ToClient,
            shared.clone(),
            connection,
        ));
    }
}

/// Copies one direction of one connection, applying the rules; ends when either side
/// closes or the connection is cut.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    shared: Arc<Shared>,
    connection: Arc<Connection>,
) {
    let mut cut = connection.cut.subscribe();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = cut.wait_for(|cut| *cut) => break,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buffer[..n];
        let mut haystack = std::mem::take(&mut carry);
        haystack.extend_from_slice(data);
        if direction == Direction::ToServer {
            let mut opening = connection.opening.lock().expect("opening lock");
            if opening.len() < OPENING {
                let room = OPENING - opening.len();
                opening.extend_from_slice(&data[..data.len().min(room)]);
            }
            let mut sent = connection.sent.lock().expect("sent lock");
            sent.push(haystack.clone());
            if sent.len() > 64 {
                sent.remove(0);
            }
        }
        let rules: Vec<Arc<Rule>> = shared.rules.lock().expect("rules lock").clone();
        for rule in rules {
            if rule.try_fire(direction, &haystack) && rule.holds {
                let mut released = rule.released.subscribe();
                tokio::select! {
                    _ = released.wait_for(|released| *released) => {}
                    _ = cut.wait_for(|cut| *cut) => return,
                }
            }
        }
        let keep = haystack.len().min(CARRY);
        carry = haystack[haystack.len() - keep..].to_vec();
        if to.write_all(data).await.is_err() {
            break;
        }
    }
    // Close both ways: a cut connection looks to both ends like a dropped link.
    connection.cut.send_replace(true);
    let _ = to.shutdown().await;
}
