// Builds the package:
//   lua/*.lua    a copy of the Lua scripts (publisher-sdk/wire/lua/, the one source of
//                truth); the package ships it and reads it at run time, and a test holds it
//                equal to the source byte for byte
//   dist/*.js    ES modules, and dist/*.d.ts their declarations (tsc, which type-checks too)
//
//   npm ci && node scripts/build.mjs

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(here, '..', 'wire', 'lua');
const copy = join(here, 'lua');

rmSync(copy, { recursive: true, force: true });
mkdirSync(copy);
const scripts = readdirSync(source).filter((name) => name.endsWith('.lua'));
for (const name of scripts) {
  copyFileSync(join(source, name), join(copy, name));
}
console.log(`lua/: ${scripts.length} scripts copied from publisher-sdk/wire/lua`);

rmSync(join(here, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(here, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', here], { stdio: 'inherit' });
console.log('dist/: built with tsc');
