//! HTTP/1.1 chunked transfer coding, as the stream path writes it: every event is rendered
//! once per node as one chunk ([`crate::vocab::event::Event::chunk`]), so a delivery is one
//! `write` of shared bytes with no framing work per connection.

use bytes::{BufMut, Bytes, BytesMut};

/// `: hb\n\n` as one chunk.
pub const HEARTBEAT_CHUNK: &[u8] = b"6\r\n: hb\n\n\r\n";
/// The chunk that ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// `data` as one HTTP/1.1 chunk: `{len:x}\r\n{data}\r\n`; nothing for no data (a chunk
/// of size 0 would end the body).
pub fn chunk(data: &[u8]) -> Bytes {
    if data.is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(data.len() + 20);
    out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_framed_in_hex() {
        assert_eq!(&chunk(b"hello")[..], b"5\r\nhello\r\n");
        assert_eq!(&chunk(&[b'x'; 26])[..4], b"1a\r\n");
        assert_eq!(&chunk(sse_wire::frame::HEARTBEAT)[..], HEARTBEAT_CHUNK);
        assert!(chunk(b"").is_empty(), "an empty chunk would end the body");
    }
}
