// Job owners a publisher registered or confirmed, so that a job's later events skip the
// registration script: an owner never changes while the job's keys live. Each entry is
// trusted for a while only (a job id may be reused after its keys expired), and the cache
// is bounded; the same policy as the `sse-wire` crate's `OwnerCache`.

/** How long a remembered owner is trusted. */
export const OWNER_CACHE_TTL_MS = 5 * 60 * 1000;
/** Most owners remembered; past it the oldest entry goes. */
export const OWNER_CACHE_LIMIT = 100_000;

export class OwnerCache {
  // A Map iterates in insertion order, and `put` re-inserts, so the first key is the
  // least recently registered: the one to drop when full.
  private readonly entries = new Map<string, { owner: string; at: number }>();

  constructor(
    private readonly ttlMs: number = OWNER_CACHE_TTL_MS,
    private readonly limit: number = OWNER_CACHE_LIMIT,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The job's owner, if registered here within the TTL. */
  get(job: string): string | undefined {
    const entry = this.entries.get(job);
    if (entry === undefined) {
      return undefined;
    }
    if (this.now() - entry.at >= this.ttlMs) {
      this.entries.delete(job);
      return undefined;
    }
    return entry.owner;
  }

  put(job: string, owner: string): void {
    this.entries.delete(job);
    while (this.entries.size >= this.limit) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(job, { owner, at: this.now() });
  }

  get size(): number {
    return this.entries.size;
  }
}
