// The Lua scripts, read from the copy this package ships in lua/ (made from
// publisher-sdk/wire/lua/ by scripts/build.mjs; a test holds the copy equal to the source).

import { readFileSync } from 'node:fs';

import { publishBatchSource, type ScriptName } from './wire/scripts.js';

const LUA_DIR = new URL('../lua/', import.meta.url);

let loaded: Readonly<Record<ScriptName, string>> | undefined;

/** The source of every script a publisher runs, read once. */
export function luaScripts(): Readonly<Record<ScriptName, string>> {
  if (loaded === undefined) {
    const read = (name: Exclude<ScriptName, 'publish_batch'>) => readFileSync(new URL(`${name}.lua`, LUA_DIR), 'utf8');
    loaded = Object.freeze({
      register_owner: read('register_owner'),
      publish_job: read('publish_job'),
      publish_user: read('publish_user'),
      publish_topic: read('publish_topic'),
      publish_batch: publishBatchSource({
        publish_job: read('publish_job'),
        publish_user: read('publish_user'),
        publish_topic: read('publish_topic'),
        driver: readFileSync(new URL('publish_batch.lua', LUA_DIR), 'utf8'),
      }),
    });
  }
  return loaded;
}
