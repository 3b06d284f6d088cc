//! Checks of the test harness itself (no gateway): the SSE parser on exact bytes, split at
//! every possible point, so a failure elsewhere is the server's, not the parser's.

mod support;

use std::collections::VecDeque;

use support::sse::{Frame, SseParser};

fn parse_in_pieces(input: &[u8], split: usize) -> Vec<Frame> {
    let mut parser = SseParser::default();
    let mut out = VecDeque::new();
    for piece in input.chunks(split.max(1)) {
        parser.push(piece, &mut out);
    }
    out.into_iter().collect()
}

#[test]
fn parser_follows_whatwg_rules_at_any_split() {
    let input = b"\xEF\xBB\xBFretry: 3000\n\nid: 1-0\nevent: progress\ndata: {\"a\":1}\n\n: hb\n\ndata: line1\r\ndata:line2\rdata\n\nid\nretry: x\nfoo: bar\n: c\n\n";
    for split in 1..input.len() {
        let frames = parse_in_pieces(input, split);
        assert_eq!(frames.len(), 5, "split {split}: {frames:?}");
        assert_eq!(frames[0].raw, "retry: 3000\n\n");
        assert_eq!(frames[0].retry, Some(3000));
        assert!(frames[0].event.is_none());
        let event = frames[1].event.as_ref().unwrap();
        assert_eq!(
            (event.id.as_str(), event.event.as_str(), event.data.as_str()),
            ("1-0", "progress", "{\"a\":1}")
        );
        assert_eq!(
            frames[1].raw,
            "id: 1-0\nevent: progress\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(frames[2].raw, ": hb\n\n");
        assert_eq!(frames[2].comments, ["hb"]);
        let event = frames[3].event.as_ref().unwrap();
        assert_eq!(
            event.data, "line1\nline2\n",
            "multi-line data joined by \\n, empty data line kept"
        );
        assert_eq!(event.event, "message");
        assert_eq!(event.id, "1-0", "the last event id persists");
        assert!(frames[4].event.is_none(), "no data: nothing dispatched");
        assert_eq!(frames[4].id_field.as_deref(), Some(""));
        assert_eq!(frames[4].retry, None, "retry must be digits");
    }
}

#[test]
fn base64url_matches_rfc_4648_vectors() {
    use support::tokens::b64url;
    for (input, expected) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64url(input.as_bytes()), expected);
    }
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

#[test]
fn metric_parsing() {
    let text = "# HELP x\nsse_gateway_a 2\nsse_gateway_a_total 5\nsse_gateway_b{reason=\"x\"} 1\nsse_gateway_b{reason=\"y\"} 2.5\n";
    assert_eq!(support::metric_sum(text, "sse_gateway_a"), Some(2.0));
    assert_eq!(support::metric_sum(text, "sse_gateway_b"), Some(3.5));
    assert_eq!(support::metric_sum(text, "sse_gateway_c"), None);
}
