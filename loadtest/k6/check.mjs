// Syntax and link check of the k6 scripts without k6 (not installable here): each
// script is copied as an ES module with the k6 imports resolved to local stubs that
// export the same names, then imported by Node, so it is parsed as a module, every
// import must name an existing export, and the top level (options, thresholds) runs.
// The scenarios' functions are not executed: that needs k6 with xk6-sse.
//
//   node loadtest/k6/check.mjs
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const stubs = {
  "k6": "export function check() { return true; }\nexport function sleep() {}\nexport function group(n, f) { return f(); }\n",
  "k6/http": "export default { get() {}, post() {} };\n",
  "k6/crypto": "export default { hmac() { return ''; } };\nexport function hmac() { return ''; }\n",
  "k6/encoding": "export default { b64encode() { return ''; } };\nexport function b64encode() { return ''; }\n",
  "k6/metrics": "export class Rate { add() {} }\nexport class Trend { add() {} }\nexport class Counter { add() {} }\nexport class Gauge { add() {} }\n",
  "k6/x/sse": "export default { open() { return { status: 200 }; } };\n",
};
const work = mkdtempSync(join(tmpdir(), "k6check-"));
const stubFile = (name) => `./__stub_${name.replace(/\W/g, "_")}.mjs`;
for (const [name, body] of Object.entries(stubs)) {
  writeFileSync(join(work, stubFile(name)), body);
}
globalThis.__ENV = {};
globalThis.__VU = 1;
globalThis.__ITER = 0;
const scripts = readdirSync(here).filter((f) => f.endsWith(".js"));
for (const file of scripts) {
  let source = readFileSync(join(here, file), "utf8");
  source = source.replace(/from\s+"(k6(?:\/[\w/]+)?)"/g, (m, name) => {
    if (!(name in stubs)) {
      throw new Error(`${file}: unknown k6 module ${name}`);
    }
    return `from "${stubFile(name)}"`;
  });
  source = source.replace(/from\s+"\.\/([\w-]+)\.js"/g, 'from "./$1.mjs"');
  writeFileSync(join(work, file.replace(/\.js$/, ".mjs")), source);
}
let failed = 0;
for (const file of scripts) {
  const path = join(work, file.replace(/\.js$/, ".mjs"));
  try {
    const mod = await import(pathToFileURL(path).href);
    if (file !== "lib.js" && (typeof mod.options !== "object" || !mod.options.thresholds)) {
      throw new Error("no exported options with thresholds");
    }
    console.log(`ok   ${file}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${file}: ${e.message}`);
  }
}
rmSync(work, { recursive: true, force: true });
process.exit(failed ? 1 : 0);
