// `k6/crypto` (grafana/k6 `js/modules/k6/crypto/crypto.go`): hmac(algorithm, secret, data,
// outputEncoding), the hash helpers and createHash/createHMAC, with k6's algorithm names and
// output encodings: `hex`, `base64` (padded), `base64url` (URL alphabet, padded),
// `base64rawurl` (URL alphabet, unpadded) and `binary` (an array of byte values).
import nodeCrypto from "node:crypto";

const ALGORITHMS = {
  md4: "md4", md5: "md5", sha1: "sha1", sha256: "sha256", sha384: "sha384", sha512: "sha512",
  sha512_224: "sha512-224", sha512_256: "sha512-256", ripemd160: "ripemd160",
};

function algorithm(name) {
  const a = ALGORITHMS[name];
  if (!a) throw new Error(`invalid algorithm: ${name}`);
  return a;
}

function input(x) {
  if (typeof x === "string") return Buffer.from(x, "utf8");
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new TypeError("crypto: input must be a string or an ArrayBuffer");
}

function encode(digest, encoding) {
  switch (encoding) {
    case "hex": return digest.toString("hex");
    case "base64": return digest.toString("base64");
    case "base64url": return digest.toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
    case "base64rawurl": return digest.toString("base64url");
    case "binary": return Array.from(digest);
    default: throw new Error(`invalid output encoding: ${encoding}`);
  }
}

class Hasher {
  constructor(inner) { this.inner = inner; }
  update(data) { this.inner.update(input(data)); }
  digest(encoding) { return encode(this.inner.digest(), encoding); }
}

export function createHash(alg) { return new Hasher(nodeCrypto.createHash(algorithm(alg))); }
export function createHMAC(alg, secret) { return new Hasher(nodeCrypto.createHmac(algorithm(alg), input(secret))); }
export function hmac(alg, secret, data, outputEncoding) {
  const h = createHMAC(alg, secret);
  h.update(data);
  return h.digest(outputEncoding);
}
const hashWith = (alg) => (data, outputEncoding) => {
  const h = createHash(alg);
  h.update(data);
  return h.digest(outputEncoding);
};
export const md4 = hashWith("md4");
export const md5 = hashWith("md5");
export const sha1 = hashWith("sha1");
export const sha256 = hashWith("sha256");
export const sha384 = hashWith("sha384");
export const sha512 = hashWith("sha512");
export const sha512_224 = hashWith("sha512_224");
export const sha512_256 = hashWith("sha512_256");
export const ripemd160 = hashWith("ripemd160");
export function randomBytes(n) {
  const b = nodeCrypto.randomBytes(n);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

export default {
  createHash, createHMAC, hmac, md4, md5, sha1, sha256, sha384, sha512, sha512_224,
  sha512_256, ripemd160, randomBytes,
};
