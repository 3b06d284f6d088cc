// The event framing of xk6-sse, byte for byte (sse.go, `(*Client).readEvents`): it is not
// the WHATWG EventSource algorithm, and the scripts depend on the differences.
//
// - The body is read line by line up to `\n` (`bufio.Reader.ReadBytes('\n')`).
// - `id:`/`event:`/`:` (comment) lines set a field to the rest of the line minus its last
//   byte (`stripPrefix`), so a `\r` of a CRLF line end stays in the value; one space after
//   the colon is dropped.
// - `data:` lines append the rest *with* its line end to a buffer; at dispatch the buffer
//   loses its trailing `\r`/`\n` characters (`strings.TrimRightFunc`), so several data lines
//   are joined by `\n`.
// - `retry:` lines are ignored.
// - Every blank line (`\n`, or `\r\n` since the isLineEnd change) dispatches an event, even
//   an empty one: the gateway's `retry: 3000\n\n` opening and each `: hb\n\n` heartbeat reach
//   the script as events with an empty name (the heartbeat with `comment` "hb"), and an
//   id-only block (`id: 7-0\n\n`, a topic stream's opening) as one with only its id. The
//   fields start empty for each event (`ev = Event{}` after a dispatch): no id carries over
//   to the next event.
// - Any other line is reported as an error `unknown event: <line with its \n>` and reading
//   goes on.
// - At EOF a partial last line is dropped (`ReadBytes` returns it together with io.EOF, and
//   the EOF branch runs first), and the stream closes without an error event: a 401 JSON
//   body without a trailing newline closes silently.

const NL = 0x0a;

export class SseLineReader {
  constructor() {
    this.partial = [];
    this.resetEvent();
  }

  resetEvent() {
    this.ev = { id: "", comment: "", name: "", data: "" };
    this.dataBuf = "";
  }

  // Feeds a chunk of the body; returns the items it completes, in order:
  // { event: {id, comment, name, data} } or { error: "unknown event: …" }.
  push(chunk) {
    const out = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NL, start);
      if (nl < 0) {
        if (start < chunk.length) {
          this.partial.push(chunk.subarray(start));
        }
        return out;
      }
      let lineBytes = chunk.subarray(start, nl + 1);
      if (this.partial.length) {
        this.partial.push(lineBytes);
        lineBytes = Buffer.concat(this.partial);
        this.partial = [];
      }
      start = nl + 1;
      this.line(lineBytes.toString("utf8"), out);
    }
  }

  line(line, out) {
    const strip = (n) => line.slice(n, line.length - 1);
    if (line.startsWith("id: ")) {
      this.ev.id = strip(4);
    } else if (line.startsWith("id:")) {
      this.ev.id = strip(3);
    } else if (line.startsWith(": ")) {
      this.ev.comment = strip(2);
    } else if (line.startsWith(":")) {
      this.ev.comment = strip(1);
    } else if (line.startsWith("event: ")) {
      this.ev.name = strip(7);
    } else if (line.startsWith("event:")) {
      this.ev.name = strip(6);
    } else if (line.startsWith("data: ")) {
      this.dataBuf += line.slice(6);
    } else if (line.startsWith("data:")) {
      this.dataBuf += line.slice(5);
    } else if (line.startsWith("retry:")) {
      // ignored, as in sse.go
    } else if (line === "\n" || line === "\r\n") {
      this.ev.data = this.dataBuf.replace(/[\r\n]+$/, "");
      out.push({ event: this.ev });
      this.resetEvent();
    } else {
      out.push({ error: `unknown event: ${line}` });
    }
  }
}
