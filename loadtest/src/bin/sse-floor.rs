//! `sse-floor`: the practical limit of any SSE gateway on this kernel, and nothing more.
//!
//! One thread, one `epoll` loop, no async runtime. It accepts connections and reads their
//! requests; `GET /sub/{topic}` gets SSE headers and `retry:`, and from then on the socket
//! is only a descriptor in the topic's list: it leaves the `epoll` set, so nothing the
//! subscriber's kernel does (ACKs freeing send-buffer space, its reads) ever wakes the
//! floor. `POST /pub/{topic}` renders the body once into a frame (`id`, `event`, `data`)
//! and sends that same buffer to every socket of the topic with one non-blocking `send`
//! each. No auth, no history, no heartbeat, no per-connection queue, no timers, no
//! wake-ups: a socket that cannot take the whole frame at once is dropped and counted
//! (`short_writes` in the publish answer).
//!
//! `loadtest/bench/floor.c` is the same program in C; `make bench` measures both side
//! by side and holds the gateway to the cheaper one.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sse-floor",
    about = "Minimal SSE writer: the floor for gateway benchmarks"
)]
struct Cli {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\nX-Accel-Buffering: no\r\n\r\nretry: 3000\n\n";
/// Longest request (head and body) a connection may send.
const MAX_REQUEST: usize = 1 << 20;
/// The listener's `epoll` token (connections use their descriptor).
const LISTENER: u64 = u64::MAX;

/// A connection still sending requests (a subscriber before its `GET`, or a publisher).
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Default)]
struct Floor {
    topics: HashMap<String, Vec<TcpStream>>,
    seq: u64,
    short_writes: u64,
}

/// The minimal `epoll` wrapper this program needs.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the descriptor is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` outlives the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut event) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> std::io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as libc::c_int, -1)
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() {
        anyhow::bail!("sse-floor listens on loopback only");
    }
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let listener = TcpListener::bind(cli.listen).context("bind")?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    let epoll = Epoll::new()?;
    epoll.ctl(libc::EPOLL_CTL_ADD, listener.as_raw_fd(), LISTENER)?;
    let mut pending: HashMap<RawFd, Pending> = HashMap::new();
    let mut floor = Floor::default();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let n = match epoll.wait(&mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        for event in &events[..n] {
            let token = event.u64;
            if token == LISTENER {
                accept_all(&listener, &epoll, &mut pending);
                continue;
            }
            let fd = token as RawFd;
            let Some(conn) = pending.get_mut(&fd) else {
                continue;
            };
            match serve(conn, &mut floor) {
                Next::Keep => {}
                Next::Close => {
                    pending.remove(&fd);
                }
                Next::Subscribe(topic) => {
                    let _ = epoll.ctl(libc::EPOLL_CTL_DEL, fd, 0);
                    if let Some(conn) = pending.remove(&fd) {
                        floor.topics.entry(topic).or_default().push(conn.stream);
                    }
                }
            }
        }
    }
}

fn accept_all(listener: &TcpListener, epoll: &Epoll, pending: &mut HashMap<RawFd, Pending>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let fd = stream.as_raw_fd();
                if epoll.ctl(libc::EPOLL_CTL_ADD, fd, fd as u64).is_ok() {
                    pending.insert(
                        fd,
                        Pending {
                            stream,
                            buf: Vec::new(),
                        },
                    );
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: the next readiness retries.
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}

enum Next {
    Keep,
    Close,
    /// The connection asked for a topic's stream: headers written, it joins the topic.
    Subscribe(String),
}

/// Reads what a connection sent and answers every complete request in it.
fn serve(conn: &mut Pending, floor: &mut Floor) -> Next {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                conn.buf.extend_from_slice(&chunk[..n]);
                if conn.buf.len() > MAX_REQUEST {
                    return Next::Close;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
    while let Some((method, path, body, used)) = parse(&conn.buf) {
        conn.buf.drain(..used);
        let path = path.split('?').next().unwrap_or("");
        if let (true, Some(topic)) = (method == "GET", path.strip_prefix("/sub/")) {
            if conn.stream.write_all(SSE_HEAD).is_err() {
                return Next::Close;
            }
            return Next::Subscribe(topic.to_owned());
        }
        let (status, answer) =
            if let (true, Some(topic)) = (method == "POST", path.strip_prefix("/pub/")) {
                ("201 Created", publish(floor, topic, &body))
            } else if path == "/healthz" {
                ("200 OK", "{\"status\":\"ok\"}".to_owned())
            } else {
                ("404 Not Found", String::new())
            };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        // A publisher's answer is small; a socket that cannot take it is given up.
        if conn.stream.write_all(response.as_bytes()).is_err() {
            return Next::Close;
        }
    }
    Next::Keep
}

/// Renders the event once and sends the same bytes to every socket of the topic.
fn publish(floor: &mut Floor, topic: &str, body: &[u8]) -> String {
    floor.seq += 1;
    let seq = floor.seq;
    let mut frame = format!("id: {seq}\nevent: progress\ndata: ").into_bytes();
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\n\n");
    let mut delivered = 0u64;
    let mut short = 0u64;
    if let Some(list) = floor.topics.get_mut(topic) {
        // One `send` per socket (std's `write` on a socket is `send(…, MSG_NOSIGNAL)`).
        list.retain(|mut socket| match socket.write(&frame) {
            Ok(n) if n == frame.len() => {
                delivered += 1;
                true
            }
            Ok(_) | Err(_) => {
                short += 1;
                false
            }
        });
    }
    floor.short_writes += short;
    format!(
        "{{\"id\":\"{seq}\",\"delivered\":{delivered},\"short_writes\":{}}}",
        floor.short_writes
    )
}

/// One complete request at the start of `buf`: (method, path, body, bytes used).
fn parse(buf: &[u8]) -> Option<(String, String, Vec<u8>, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let used = end + 4 + length;
    if buf.len() < used {
        return None;
    }
    Some((method, path, buf[end + 4..used].to_vec(), used))
}
