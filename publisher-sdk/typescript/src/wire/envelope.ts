// The JSON envelope of a published event: the `data:` line every client receives
// (docs/protocol.md, "A published event"). Rendered byte for byte as the `sse-wire` crate's
// `envelope.rs` renders it with serde_json: the envelope first — `jobId`, `userId` or
// `topic`; `type`; `ts`; `correlationId` and `traceparent` when given — then the
// publisher's fields in their order, minus any whose name the envelope uses.
//
// The text is assembled key by key rather than by `JSON.stringify` of one object: a
// JavaScript object lists integer-like keys ("7") before all others whatever the insertion
// order, so a field named "7" would otherwise land before `jobId`.

/** A JSON value, as `JSON.parse` returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object: an event's fields. */
export type JsonObject = { [key: string]: JsonValue };

/** Whom an event is about: one job (and so its owner's user stream too), a user, a topic. */
export type Subject =
  | { readonly kind: 'job'; readonly job: string }
  | { readonly kind: 'user'; readonly user: string }
  | { readonly kind: 'topic'; readonly topic: string };

/** What a publisher tells about an event besides its fields, carried in its envelope. */
export interface Meta {
  /** `correlationId`: logged by gateways, to follow an event from worker to browser. */
  readonly correlationId?: string | undefined;
  /** `traceparent` (W3C trace context): the trace the event continues. */
  readonly traceparent?: string | undefined;
}

/** Field names the envelope may use; a publisher's field of the same name is dropped. */
export const ENVELOPE_KEYS: readonly string[] = [
  'jobId',
  'userId',
  'topic',
  'type',
  'ts',
  'correlationId',
  'traceparent',
];

/** Renders the `data:` JSON of a published event: one line (JSON escapes line breaks). */
export function renderEventData(
  subject: Subject,
  eventType: string,
  ts: number,
  meta: Meta,
  fields: JsonObject,
): string {
  const [subjectKey, subjectId] =
    subject.kind === 'job'
      ? ['jobId', subject.job]
      : subject.kind === 'user'
        ? ['userId', subject.user]
        : ['topic', subject.topic];
  const parts = [
    `"${subjectKey}":${JSON.stringify(subjectId)}`,
    `"type":${JSON.stringify(eventType)}`,
    `"ts":${JSON.stringify(ts)}`,
  ];
  if (meta.correlationId !== undefined) {
    parts.push(`"correlationId":${JSON.stringify(meta.correlationId)}`);
  }
  if (meta.traceparent !== undefined) {
    parts.push(`"traceparent":${JSON.stringify(meta.traceparent)}`);
  }
  for (const [key, value] of Object.entries(fields)) {
    if (!ENVELOPE_KEYS.includes(key)) {
      parts.push(`${JSON.stringify(key)}:${JSON.stringify(value)}`);
    }
  }
  return `{${parts.join(',')}}`;
}

/**
 * The SSE frame of a published event, exactly as a gateway writes it to a client (and as
 * the publish scripts put it on the channels): `id: <id>\nevent: <type>\ndata: <json>\n\n`.
 */
export function renderEventFrame(id: string, eventType: string, dataJson: string): string {
  return `id: ${id}\nevent: ${eventType}\ndata: ${dataJson}\n\n`;
}
