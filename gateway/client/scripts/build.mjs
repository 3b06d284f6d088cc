// Builds the client package, and the browser bundle the gateway serves:
//   dist/*.d.ts             type declarations (tsc, which also type-checks the sources)
//   dist/index.js           one ES module for bundlers and apps (eventsource-parser stays a dependency)
//   dist/sse-client.min.js  one minified ES module with everything in it, for pages without a bundler
// and copies the last to gateway/assets/sse-client.js, which the gateway embeds (so that
// `cargo build` never needs npm). With --check it copies nothing: it fails unless the
// committed gateway/assets/sse-client.js is byte for byte what this build produces.
//
//   npm ci && node scripts/build.mjs [--check]

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');
const asset = join(here, '..', 'assets', 'sse-client.js');
const check = process.argv.includes('--check');

const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
const parserVersion = JSON.parse(readFileSync(join(here, 'node_modules', 'eventsource-parser', 'package.json'), 'utf8')).version;

rmSync(join(here, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(here, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', here], { stdio: 'inherit' });

const common = {
  entryPoints: [join(here, 'src', 'index.ts')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
};
await esbuild.build({
  ...common,
  outfile: join(here, 'dist', 'index.js'),
  external: ['eventsource-parser'],
  banner: { js: `// ${pkg.name} ${pkg.version} (${pkg.license}). Built from src/ by scripts/build.mjs.` },
});
await esbuild.build({
  ...common,
  outfile: join(here, 'dist', 'sse-client.min.js'),
  minify: true,
  banner: {
    js: `/*! ${pkg.name} ${pkg.version} (${pkg.license}), with eventsource-parser ${parserVersion} (MIT, Espen Hovlandsdal). `
      + 'Built from gateway/client by `npm run build`: do not edit. */',
  },
});

const bundle = readFileSync(join(here, 'dist', 'sse-client.min.js'));
const gzipped = gzipSync(bundle, { level: 9 }).length;
console.log(`dist/sse-client.min.js: ${bundle.length} bytes, ${gzipped} bytes gzipped (-9)`);

const name = relative(join(here, '..', '..'), asset);
if (check) {
  let committed = null;
  try { committed = readFileSync(asset); } catch { /* missing */ }
  if (!committed || !committed.equals(bundle)) {
    console.error(`${name} is not what the client's sources build: run \`npm run build\` in gateway/client and commit it`);
    process.exit(1);
  }
  console.log(`${name}: identical to the build`);
} else {
  writeFileSync(asset, bundle);
  console.log(`wrote ${name}`);
}
