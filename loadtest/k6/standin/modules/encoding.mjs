// `k6/encoding` (grafana/k6 `js/modules/k6/encoding/encoding.go`): b64encode(input,
// encoding) and b64decode(input, encoding, format) with Go's base64 variants: `std`
// (default, padded), `rawstd` (unpadded), `url` (URL alphabet, padded), `rawurl` (URL
// alphabet, unpadded — what JWT segments use). Strings are taken as UTF-8.

function bytes(input) {
  if (typeof input === "string") return Buffer.from(input, "utf8");
  if (input instanceof ArrayBuffer) return Buffer.from(input);
  if (ArrayBuffer.isView(input)) return Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  throw new TypeError("b64encode: input must be a string or an ArrayBuffer");
}

export function b64encode(input, encoding = "std") {
  const b = bytes(input);
  switch (encoding || "std") {
    case "std": return b.toString("base64");
    case "rawstd": return b.toString("base64").replace(/=+$/, "");
    case "url": return b.toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
    case "rawurl": return b.toString("base64url");
    default: throw new Error(`unknown base64 encoding "${encoding}"`);
  }
}

export function b64decode(input, encoding = "std", format) {
  let text = String(input);
  if (encoding === "url" || encoding === "rawurl") text = text.replace(/-/g, "+").replace(/_/g, "/");
  const b = Buffer.from(text, "base64");
  if (format === "s") return b.toString("utf8");
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

export default { b64encode, b64decode };
