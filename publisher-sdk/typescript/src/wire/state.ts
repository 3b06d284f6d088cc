// How one event changes its job's state (docs/protocol.md, "Job state"), as the
// `sse-wire` crate's `state.rs` computes it: the state fields the publish script sets,
// each as the JSON text the state hash stores.

import type { JsonObject } from './envelope.js';

/** Why an event's fields cannot apply to a job's state. */
export type InvalidEvent = 'missing_progress' | 'progress_out_of_range';

/**
 * The state fields an event sets, in the order the script receives them (`status`,
 * `progress`, `stage`, `message`, `result`, `error`), as name / JSON text pairs; or why
 * the fields do not fit the type:
 * - `progress` sets status `active`; `complete` sets `completed` and progress 100;
 *   `failed` sets `failed` and `error`; `cancelled` sets `cancelled`;
 * - a numeric `progress` field (0–100) sets the progress, a string `stage` the stage;
 * - a string `message` sets the message, except on `log` events;
 * - `complete` takes its `result` field as the result, `failed` its `error` field (or
 *   its `message` when it has no `error`) as the error.
 */
export function statePatch(eventType: string, fields: JsonObject): Array<[string, string]> | InvalidEvent {
  const has = (key: string) => Object.prototype.hasOwnProperty.call(fields, key);
  let status: string | undefined;
  let progress: string | undefined;
  let stage: string | undefined;
  let message: string | undefined;
  let result: string | undefined;
  let error: string | undefined;
  if (has('progress')) {
    const value = fields['progress'];
    if (typeof value !== 'number' || !(value >= 0 && value <= 100)) {
      return 'progress_out_of_range';
    }
    progress = JSON.stringify(value);
  } else if (eventType === 'progress') {
    return 'missing_progress';
  }
  const stageValue = fields['stage'];
  if (has('stage') && typeof stageValue === 'string') {
    stage = JSON.stringify(stageValue);
  }
  const messageValue = fields['message'];
  if (eventType !== 'log' && has('message') && typeof messageValue === 'string') {
    message = JSON.stringify(messageValue);
  }
  switch (eventType) {
    case 'progress':
      status = 'active';
      break;
    case 'complete':
      status = 'completed';
      progress = '100';
      result = JSON.stringify(has('result') ? fields['result'] : null);
      break;
    case 'failed':
      status = 'failed';
      error = JSON.stringify(has('error') ? fields['error'] : has('message') ? fields['message'] : null);
      break;
    case 'cancelled':
      status = 'cancelled';
      break;
    default:
      break;
  }
  const out: Array<[string, string]> = [];
  if (status !== undefined) out.push(['status', JSON.stringify(status)]);
  if (progress !== undefined) out.push(['progress', progress]);
  if (stage !== undefined) out.push(['stage', stage]);
  if (message !== undefined) out.push(['message', message]);
  if (result !== undefined) out.push(['result', result]);
  if (error !== undefined) out.push(['error', error]);
  return out;
}
