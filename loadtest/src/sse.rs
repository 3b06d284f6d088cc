//! An incremental `text/event-stream` parser following the WHATWG HTML rules
//! ("Interpreting an event stream"): lines end with CRLF, LF or CR (a CR at the end of
//! one read and the LF at the start of the next are one line end); a leading BOM is
//! skipped; `:` lines are comments; a field without a colon has an empty value; one
//! space after the colon is dropped; `data` lines are joined with LF; `id` containing
//! NUL is ignored and otherwise persists across events; `retry` is used only when all
//! ASCII digits; an empty line dispatches, unless no `data` was seen (then the buffers
//! are reset and nothing is dispatched).
//!
//! One addition for the caller's accounting, outside the algorithm: a block that set the
//! id but dispatched nothing (`id: 5-0\n\n`, the gateway's opening of a topic stream at
//! its live edge) is reported as [`Item::IdOnly`]. An `EventSource` fires nothing for it
//! and only updates its `lastEventId`, which is what the parser's state does too.
//!
//! Buffers start empty and grow to the largest line seen, so an idle connection costs
//! nothing here.

/// What the parser reports to its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A dispatched event: its type (`message` when none was given), data, and the
    /// last event id in force when it was dispatched.
    Event {
        event_type: &'a [u8],
        data: &'a [u8],
        last_event_id: &'a [u8],
        /// Whether this event's own block had an `id` field (else `last_event_id` is
        /// an earlier block's, persisted).
        own_id: bool,
    },
    /// A block that had an `id` field and no `data`: no event is dispatched, the last
    /// event id is now this.
    IdOnly(&'a [u8]),
    /// A comment line (without the leading `:`), e.g. a heartbeat.
    Comment(&'a [u8]),
    /// A valid `retry:` field, in milliseconds.
    Retry(u64),
}

#[derive(Debug, Default)]
pub struct Parser {
    /// The current, unterminated line.
    line: Vec<u8>,
    data: Vec<u8>,
    event_type: Vec<u8>,
    last_event_id: Vec<u8>,
    /// Whether any `data` field was seen since the last dispatch (data can be empty).
    has_data: bool,
    /// Whether an `id` field was seen since the last empty line.
    has_id: bool,
    /// The previous chunk ended with CR: an LF at the start of this one is part of it.
    after_cr: bool,
    /// The stream's first bytes were checked for a BOM.
    bom_checked: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The last event id seen (what a reconnecting client sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_event_id
    }

    /// Feeds the next bytes of the body; calls `on` for every complete item.
    pub fn feed(&mut self, mut chunk: &[u8], on: &mut impl FnMut(Item<'_>)) {
        if !self.bom_checked {
            // The BOM may arrive split over reads: wait until 3 bytes are known.
            if self.line.is_empty() && chunk.len() < BOM.len() && BOM.starts_with(chunk) {
                self.line.extend_from_slice(chunk);
                return;
            }
            if !self.line.is_empty() {
                let mut joined = std::mem::take(&mut self.line);
                joined.extend_from_slice(chunk);
                self.bom_checked = joined.len() >= BOM.len() || !BOM.starts_with(&joined);
                if !self.bom_checked {
                    self.line = joined;
                    return;
                }
                let rest = joined.strip_prefix(BOM).unwrap_or(&joined).to_vec();
                self.feed(&rest, on);
                return;
            }
            self.bom_checked = true;
            chunk = chunk.strip_prefix(BOM).unwrap_or(chunk);
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let crlf = chunk[end] == b'\r';
            if self.line.is_empty() {
                self.process_line(&chunk[..end], on);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[..end]);
                self.process_line(&line, on);
                line.clear();
                self.line = line;
            }
            chunk = &chunk[end + 1..];
            if crlf {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(chunk);
    }

    fn process_line(&mut self, line: &[u8], on: &mut impl FnMut(Item<'_>)) {
        if line.is_empty() {
            if self.has_data {
                if self.data.last() == Some(&b'\n') {
                    self.data.pop();
                }
                let event_type: &[u8] = if self.event_type.is_empty() {
                    b"message"
                } else {
                    &self.event_type
                };
                on(Item::Event {
                    event_type,
                    data: &self.data,
                    last_event_id: &self.last_event_id,
                    own_id: self.has_id,
                });
            } else if self.has_id {
                on(Item::IdOnly(&self.last_event_id));
            }
            self.data.clear();
            self.event_type.clear();
            self.has_data = false;
            self.has_id = false;
            return;
        }
        if line[0] == b':' {
            on(Item::Comment(&line[1..]));
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.last_event_id.clear();
                self.last_event_id.extend_from_slice(value);
                self.has_id = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("x").parse() {
                    on(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }
}

/// Finds an unsigned integer field `"name":123` in one line of JSON without parsing the
/// rest (the load generator reads its own `seq` and `t_us` this way on every event).
pub fn json_u64(data: &[u8], name: &str) -> Option<u64> {
    let key_len = name.len() + 3;
    let mut from = 0;
    while from + key_len <= data.len() {
        let at = from + data[from..].iter().position(|&b| b == b'"')?;
        let rest = &data[at + 1..];
        if rest.len() > name.len() + 1
            && rest.starts_with(name.as_bytes())
            && rest[name.len()] == b'"'
        {
            let mut value = &rest[name.len() + 1..];
            while let Some((&b, tail)) = value.split_first() {
                if b == b':' || b == b' ' {
                    value = tail;
                } else {
                    break;
                }
            }
            let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                return std::str::from_utf8(&value[..digits]).ok()?.parse().ok();
            }
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |item| {
                out.push(match item {
                    Item::Event {
                        event_type,
                        data,
                        last_event_id,
                        own_id,
                    } => format!(
                        "event {} [{}] id={}{}",
                        String::from_utf8_lossy(event_type),
                        String::from_utf8_lossy(data),
                        String::from_utf8_lossy(last_event_id),
                        if own_id { "" } else { " (persisted)" }
                    ),
                    Item::IdOnly(id) => format!("id-only {}", String::from_utf8_lossy(id)),
                    Item::Comment(c) => format!("comment {}", String::from_utf8_lossy(c)),
                    Item::Retry(ms) => format!("retry {ms}"),
                })
            });
        }
        out
    }

    #[test]
    fn gateway_frames() {
        let body = b"retry: 3000\n\nid: 1-0\nevent: progress\ndata: {\"a\":1}\n\n: hb\n\n";
        assert_eq!(
            parse_all(&[body]),
            vec![
                "retry 3000",
                "event progress [{\"a\":1}] id=1-0",
                "comment  hb"
            ]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_items() {
        let body: &[u8] =
            b"\xEF\xBB\xBFdata: a\r\ndata:b\r\rid: 7\revent:x\ndata\n\n:c\r\nretry: 1x\n\n";
        let whole = parse_all(&[body]);
        assert_eq!(
            whole,
            vec![
                "event message [a\nb] id= (persisted)",
                "event x [] id=7",
                "comment c"
            ]
        );
        for split in 0..body.len() {
            assert_eq!(
                parse_all(&[&body[..split], &body[split..]]),
                whole,
                "{split}"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn no_data_no_dispatch_and_id_persists() {
        assert_eq!(
            parse_all(&[b"id: 5\nevent: x\n\ndata: y\n\nid\ndata: z\n\n"]),
            vec![
                "id-only 5",
                "event message [y] id=5 (persisted)",
                "event message [z] id="
            ]
        );
        assert_eq!(
            parse_all(&[b"id: a\0b\ndata: y\n\n"]),
            vec!["event message [y] id= (persisted)"]
        );
    }

    #[test]
    fn topic_opening_is_an_id_only_block() {
        // A fresh topic stream: retry, the live edge as an id-only block, then events.
        let body = b"retry: 3000\n\nid: 1732245600123-0\n\n: hb\n\nid: 1732245600124-0\nevent: update\ndata: {}\n\n";
        assert_eq!(
            parse_all(&[body]),
            vec![
                "retry 3000",
                "id-only 1732245600123-0",
                "comment  hb",
                "event update [{}] id=1732245600124-0"
            ]
        );
    }

    #[test]
    fn json_fields() {
        let data = br#"{"jobId":"j","seq":12,"t_us":1700000000123456,"x":"\"seq\":9"}"#;
        assert_eq!(json_u64(data, "seq"), Some(12));
        assert_eq!(json_u64(data, "t_us"), Some(1_700_000_000_123_456));
        assert_eq!(json_u64(data, "missing"), None);
        assert_eq!(json_u64(br#"{"seqx":1,"seq": 3}"#, "seq"), Some(3));
    }
}
