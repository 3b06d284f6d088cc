// Durations as k6 and xk6-sse read them, in milliseconds.
//
// - `parseGoDuration`: Go's `time.ParseDuration` grammar (`300ms`, `1m30s`, `1.5h`; units ns,
//   us/µs, ms, s, m, h; a bare number only as `0`). xk6-sse parses the `timeout` param of
//   `sse.open` with it (sse.go, parseConnectOptionalArgs: `time.ParseDuration`), so `"30"`
//   is an error there, not 30 s.
// - `parseK6Duration`: k6's option durations (`types.NullDuration`): a string in Go's
//   grammar plus a `d` (day) unit, or a number taken as milliseconds.

const UNITS = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };

export function parseGoDuration(text, { days = false } = {}) {
  const s = String(text);
  if (s === "0" || s === "+0" || s === "-0") {
    return 0;
  }
  let rest = s;
  let sign = 1;
  if (rest[0] === "-" || rest[0] === "+") {
    sign = rest[0] === "-" ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === "") {
    throw new Error(`time: invalid duration "${s}"`);
  }
  const units = days ? { ...UNITS, d: 86400000 } : UNITS;
  let total = 0;
  const part = /^(\d*(?:\.\d*)?)([a-zµμ]+)/;
  while (rest !== "") {
    const m = part.exec(rest);
    if (!m || m[1] === "" || m[1] === ".") {
      throw new Error(`time: invalid duration "${s}"`);
    }
    const factor = units[m[2]];
    if (factor === undefined) {
      throw new Error(`time: unknown unit "${m[2]}" in duration "${s}"`);
    }
    total += parseFloat(m[1]) * factor;
    rest = rest.slice(m[0].length);
  }
  return sign * total;
}

export function parseK6Duration(value, fallbackMs) {
  if (value === undefined || value === null || value === "") {
    return fallbackMs;
  }
  if (typeof value === "number") {
    return value;
  }
  return parseGoDuration(value, { days: true });
}

// Go's Duration.String() for the summary (`1m30s`, `250ms`).
export function formatDuration(ms) {
  if (ms < 1) {
    return `${Math.round(ms * 1000)}µs`;
  }
  if (ms < 1000) {
    return `${+ms.toFixed(2)}ms`;
  }
  let s = ms / 1000;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? `${h}h` : ""}${h || m ? `${m}m` : ""}${+s.toFixed(1)}s`;
}
