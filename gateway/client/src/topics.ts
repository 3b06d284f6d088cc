// Topic streams: broadcast feeds (docs/protocol.md, "Topics"). One topic
// (`/v1/topics/{topic}/events`, ids `<ms>-<seq>`), or several in one stream
// (`/v1/topics/events?topic=a&topic=b`, whose composite ids `t1.…` the client keeps and
// sends back verbatim, never compares). Reading, resuming and the retry policy are
// openStream's; a topic stream has no terminal event and never ends by itself.

import { openStream, pathSegment, type SseStream, type StreamOptions } from './stream.js';
import type { Envelope } from './state.js';

/** Every topic event's data: `topic`, `type`, `ts` (`correlationId`), then the publisher's fields. */
export interface TopicEnvelope extends Envelope { topic: string }

/**
 * The data of a `resync` marker: the events of `topic` after the client's position are no
 * longer kept (or the position is unknown to the gateway). The stream goes on from that
 * topic's live edge; the other topics of the stream lost nothing.
 */
export interface ResyncData { topic: string; resync: true }

/**
 * The data of event type `K` on a topic stream. `M` maps your event types to their
 * publisher fields (`{ announcement: { title: string } }`); other types carry the envelope
 * and unknown fields.
 */
export type TopicEventData<K extends string, M extends object = Record<never, never>> =
  string extends K ? TopicEnvelope | ResyncData
    : K extends 'resync' ? ResyncData
      : TopicEnvelope & (K extends keyof M ? M[K] : Record<string, unknown>);

/** One event of a topic stream. */
export interface TopicEvent<K extends string = string, M extends object = Record<never, never>> {
  type: K;
  /** `<ms>-<seq>` on one topic's stream; on a stream of several topics an opaque composite id. */
  id: string | null;
  data: TopicEventData<K, M>;
}

export interface TopicStreamOptions extends Omit<StreamOptions, 'job' | 'url'> {
  /** Follow this topic (`/v1/topics/{topic}/events`). */
  topic?: string;
  /** Follow these topics in one stream (`/v1/topics/events?topic=a&topic=b`), with composite ids. */
  topics?: readonly string[];
  /** A full stream URL instead of `gateway`, `topic`/`topics` and `since`. */
  url?: string;
  /**
   * Start after this id when the client has no position yet: `?since=<id>` in the URL (`0-0`
   * for everything the topic keeps; on several topics only a composite id of exactly those
   * topics is accepted). Unlike
   * `lastEventId`, the first request carries no `Last-Event-ID` header (no CORS preflight);
   * reconnections send the position as the header, which the gateway prefers.
   */
  since?: string;
  /**
   * Watch without any credential (an `--anonymous-topic`): no token, and no cookie either
   * (`credentials: 'omit'`) — a stale session cookie of the gateway's host would otherwise
   * be sent and refused with `401`, anonymous topic or not.
   */
  anonymous?: boolean;
}

/** A topic stream: an `SseStream` whose events are typed as topic events. */
export interface TopicStream<M extends object = Record<never, never>> extends Omit<SseStream, 'on' | 'onEvent'> {
  /** Listens to events of one type (`'announcement'`, `'resync'`, …). Returns an unsubscribe function. */
  on<K extends string>(type: K, listener: (event: TopicEvent<K, M>) => void): () => void;
  /** Listens to every event, `resync` markers included. */
  onEvent(listener: (event: TopicEvent<string, M>) => void): () => void;
}

/** The stream URL for `options`. */
export function topicsUrl(options: Pick<TopicStreamOptions, 'gateway' | 'topic' | 'topics' | 'url' | 'since'>): string {
  if (options.url) { return options.url; }
  const base = (options.gateway || '').replace(/\/+$/, '');
  const query = (options.topics || []).map((t) => `topic=${encodeURIComponent(t)}`);
  if (options.since !== undefined) { query.push(`since=${encodeURIComponent(options.since)}`); }
  const q = query.length ? `?${query.join('&')}` : '';
  if (options.topics) { return `${base}/v1/topics/events${q}`; }
  if (options.topic === undefined) { throw new TypeError('openTopicStream: give `topic` or `topics`'); }
  return `${base}/v1/topics/${pathSegment(options.topic)}/events${q}`;
}

/**
 * Opens a topic stream (one topic, or several in one stream) and keeps it open, as
 * `openStream` does: a fresh stream starts at the live edge (its id-only opening block is
 * the position a reconnection resumes from), `lastEventId: '0-0'` starts from the oldest
 * event the topic keeps, a too-old position gets a `resync` marker for that topic.
 */
export function openTopicStream<M extends object = Record<never, never>>(options: TopicStreamOptions): TopicStream<M> {
  const { topic: _topic, topics: _topics, since: _since, anonymous, ...rest } = options;
  return openStream({
    ...rest,
    url: topicsUrl(options),
    ...(anonymous ? { token: undefined, refreshToken: undefined, credentials: 'omit' as const } : {}),
  }) as unknown as TopicStream<M>;
}
