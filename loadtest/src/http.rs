//! Just enough HTTP/1.1 for a streaming response: the request line and headers a
//! browser's `EventSource` sends, the response head, and a body that is either chunked
//! (the gateway, nginx) or delimited by the connection's end (the floor server).

/// The parsed response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub event_stream: bool,
    /// `content-length`, when given.
    pub content_length: Option<u64>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// Parses a response head if `buf` holds all of it (`Ok(None)`: read more).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err("head_too_large");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "bad_head")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or("bad_head")?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or("").starts_with("HTTP/1.") {
        return Err("bad_head");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad_head")?;
    let mut chunked = false;
    let mut event_stream = false;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-type") {
            event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse().map_err(|_| "bad_head")?);
        }
    }
    Ok(Some(Head {
        status,
        chunked,
        event_stream,
        content_length,
        len: end + 4,
    }))
}

/// Decodes a chunked body incrementally, handing out data slices.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// Hex digits of a size line split over reads.
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// Skipping a chunk extension up to LF.
    Extension,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers, then the end.
    Trailer,
    Done,
}

impl Chunked {
    /// Feeds bytes; calls `on` with each piece of body data. Returns whether the body
    /// ended (last chunk seen).
    pub fn feed(
        &mut self,
        mut buf: &[u8],
        on: &mut impl FnMut(&[u8]),
    ) -> Result<bool, &'static str> {
        while !buf.is_empty() {
            match self.state {
                State::Size => {
                    let b = buf[0];
                    buf = &buf[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                            self.size = self.size.checked_mul(16).ok_or("chunk_size")? + digit;
                        }
                        b';' | b'\r' => self.state = State::Extension,
                        b'\n' => self.end_size(),
                        _ => return Err("chunk_size"),
                    }
                }
                State::Extension => match buf.iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        buf = &buf[at + 1..];
                        self.end_size();
                    }
                    None => buf = &[],
                },
                State::Data(left) => {
                    let take = (left as usize).min(buf.len());
                    on(&buf[..take]);
                    buf = &buf[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    let b = buf[0];
                    buf = &buf[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = State::Size,
                        _ => return Err("chunk_end"),
                    }
                }
                State::Trailer => {
                    // Trailers are not expected on SSE; the body is over either way.
                    self.state = State::Done;
                    return Ok(true);
                }
                State::Done => return Ok(true),
            }
        }
        Ok(matches!(self.state, State::Trailer | State::Done))
    }

    fn end_size(&mut self) {
        self.state = if self.size == 0 {
            State::Trailer
        } else {
            State::Data(self.size)
        };
        self.size = 0;
    }
}

/// A plain `GET` of `path` (a page, a probe): what goes first on a kept-alive connection.
pub fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sse-load\r\n\r\n").into_bytes()
}

/// The request a browser's `EventSource` sends (plus the cookie or query token).
pub fn sse_request(
    host: &str,
    path: &str,
    cookie: Option<&str>,
    last_event_id: Option<&str>,
) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: sse-load\r\n"
    );
    if let Some(cookie) = cookie {
        req.push_str("Cookie: ");
        req.push_str(cookie);
        req.push_str("\r\n");
    }
    if let Some(id) = last_event_id {
        req.push_str("Last-Event-ID: ");
        req.push_str(id);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nabc";
        let head = parse_head(buf).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                chunked: true,
                event_stream: true,
                content_length: None,
                len: buf.len() - 3
            }
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(
            parse_head(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
                .unwrap()
                .unwrap()
                .status,
            401
        );
    }

    #[test]
    fn chunked_any_split() {
        let body = b"5\r\nhello\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut dec = Chunked::default();
            let mut out = Vec::new();
            let a = dec
                .feed(&body[..split], &mut |d| out.extend_from_slice(d))
                .unwrap();
            let b = dec
                .feed(&body[split..], &mut |d| out.extend_from_slice(d))
                .unwrap();
            assert_eq!(out, b"hello0123456789", "{split}");
            assert!(b || a);
        }
    }
}
