//! `sse-floor`: the practical limit of any SSE gateway on this kernel. It accepts
//! connections, answers `GET /sub/{topic}` with SSE headers and `retry:`, keeps the
//! socket in a per-topic list, and on `POST /pub/{topic}` renders the body once into a
//! frame (`id`, `event`, `data`) and writes that same buffer to every socket of the
//! topic with one non-blocking `write` each. No auth, no history, no heartbeat, no
//! per-connection queue: a socket that cannot take the whole frame at once is dropped
//! and counted (`short_writes` in the publish answer). One thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

#[derive(Default)]
struct Floor {
    topics: RefCell<HashMap<String, Vec<TcpStream>>>,
    seq: std::cell::Cell<u64>,
    short_writes: std::cell::Cell<u64>,
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\nX-Accel-Buffering: no\r\n\r\nretry: 3000\n\n";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() {
        anyhow::bail!("sse-floor listens on loopback only");
    }
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(cli.listen).await.context("bind")?;
        println!("listening on {}", listener.local_addr()?);
        let floor = Rc::new(Floor::default());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let floor = floor.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(stream, floor).await;
            });
        }
    })
}

/// Reads one request: (method, path, body).
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String, Vec<u8>)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut parts = head.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Ok(Some((method, path, body)));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut stream: TcpStream, floor: Rc<Floor>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some((method, path, body)) = read_request(&mut stream, &mut buf).await? {
        let path = path.split('?').next().unwrap_or("").to_string();
        if let (true, Some(topic)) = (method == "GET", path.strip_prefix("/sub/")) {
            stream.write_all(SSE_HEAD).await?;
            floor
                .topics
                .borrow_mut()
                .entry(topic.to_string())
                .or_default()
                .push(stream);
            return Ok(());
        }
        let answer = if let (true, Some(topic)) = (method == "POST", path.strip_prefix("/pub/")) {
            let seq = floor.seq.get() + 1;
            floor.seq.set(seq);
            // Rendered once; the same bytes go to every socket.
            let mut frame = format!("id: {seq}\nevent: progress\ndata: ").into_bytes();
            frame.extend_from_slice(&body);
            frame.extend_from_slice(b"\n\n");
            let mut delivered = 0u64;
            let mut short = 0u64;
            if let Some(list) = floor.topics.borrow_mut().get_mut(topic) {
                list.retain(|s| match s.try_write(&frame) {
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
            floor.short_writes.set(floor.short_writes.get() + short);
            format!(
                "{{\"id\":\"{seq}\",\"delivered\":{delivered},\"short_writes\":{}}}",
                floor.short_writes.get()
            )
        } else if path == "/healthz" {
            "{\"status\":\"ok\"}".to_string()
        } else {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?;
            continue;
        };
        let status = if method == "POST" {
            "201 Created"
        } else {
            "200 OK"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
    Ok(())
}
