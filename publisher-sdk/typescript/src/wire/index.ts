// The wire contract in TypeScript: ids, keys, the event envelope and frame, how events
// change a job's state, and the scripts' keys and arguments — what the `sse-wire` crate
// is to the Rust SDK. Exported as `wire` for programs that speak to Redis themselves.

export * from './ids.js';
export * from './keys.js';
export * from './envelope.js';
export * from './state.js';
export * from './scripts.js';
