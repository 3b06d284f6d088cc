//! Keys from identity providers: for each `--jwt-jwks-url`, the last good key set and the
//! one task that keeps it fresh.
//!
//! - At start the task fetches at once, and again after a failure with a backoff (0.5 s,
//!   doubling, at most `min_refresh`) until a fetch succeeds.
//! - After a success it fetches again when the answer's `Cache-Control: max-age` runs out
//!   (zero without one, or with `no-cache`/`no-store`), clamped to
//!   `[min_refresh, max_refresh]`.
//! - A token naming a `kid` no key has asks for a fetch of its issuer's JWKS — at most one
//!   such fetch per `refetch_interval` for each URL, so a flood of forged `kid`s costs the
//!   identity provider one request per interval. A request that may fetch waits for that
//!   fetch at most [`UNKNOWN_KID_WAIT`]; one that comes within the interval is refused at
//!   once, and the fetch it asked for runs when the interval ends.
//! - A failed fetch (unreachable, not `200`, not a JWKS, no usable key) keeps the last good
//!   set, is logged with its reason and counted; a token is never logged.
//!
//! Reading keys is a read lock held for an `Arc` clone: refreshes are rare and checking a
//! signature costs far more than the lock, so nothing lock-free is needed here.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use http::Uri;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fetch::{FetchError, Fetcher};
use super::jwks::{self, FetchedKey};
use super::{AuthError, JwksSettings};
use crate::metrics::Metrics;

/// Longest a request naming an unknown `kid` waits for the fetch it triggered.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(2);
/// First retry after a failed fetch; doubles up to `min_refresh`.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Labels of `sse_gateway_jwks_fetches_total{result}`.
pub const FETCH_RESULTS: [&str; 4] = ["ok", "unreachable", "bad_status", "bad_document"];

/// How often each JWKS is fetched.
#[derive(Clone, Copy, Debug)]
struct Timing {
    min_refresh: Duration,
    max_refresh: Duration,
    refetch_interval: Duration,
}

/// Every JWKS the gateway reads, each with its key set.
pub(super) struct Jwks {
    sources: Vec<Arc<Source>>,
    fetcher: Fetcher,
    timing: Timing,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sources.iter().map(|s| (&s.issuer, &s.shown)))
            .finish()
    }
}

/// One `--jwt-jwks-url`.
struct Source {
    /// The only `iss` its keys validate, when bound.
    issuer: Option<String>,
    url: Uri,
    /// The URL as logged: without its query, which may carry a credential.
    shown: String,
    /// The last good set; `None` until the first fetch succeeds.
    keys: RwLock<Option<Arc<[FetchedKey]>>>,
    refetch: Mutex<Refetch>,
    /// Wakes the task: a fetch was asked for.
    wake: Notify,
    /// Fetches finished (good or not); requests wait on it.
    finished: watch::Sender<u64>,
}

/// Fetches asked for by unknown `kid`s, shared by the requests and the task.
#[derive(Default)]
struct Refetch {
    /// When the last such fetch was granted (they are at least `refetch_interval` apart).
    last_granted: Option<Instant>,
    /// A fetch is granted and has not started.
    granted: bool,
    /// A fetch was asked for within the interval: it runs when the interval ends.
    deferred: bool,
    /// A fetch is running, and whether it is a granted one.
    running: bool,
    running_granted: bool,
}

/// A key found for a token (holds the set it belongs to).
pub(super) struct FoundKey {
    keys: Arc<[FetchedKey]>,
    index: usize,
}

impl FoundKey {
    pub(super) fn key(&self) -> &DecodingKey {
        &self.keys[self.index].key
    }

    /// The key set the key was found in, for as long as it is the current one.
    pub(super) fn key_set(&self) -> Weak<[FetchedKey]> {
        Arc::downgrade(&self.keys)
    }
}

/// The refresh tasks; dropping this stops them.
#[must_use = "the JWKS are refreshed only while this lives"]
pub struct JwksTasks(Vec<JoinHandle<()>>);

impl JwksTasks {
    /// No JWKS configured: nothing to refresh.
    pub fn none() -> JwksTasks {
        JwksTasks(Vec::new())
    }
}

impl Drop for JwksTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Why the JWKS settings cannot be used (a start-up error).
pub(super) enum JwksError {
    Url { url: String, reason: String },
    CaFile(String),
}

impl Jwks {
    /// Checks the URLs and reads the CA file; fetches nothing (see [`Jwks::start`]).
    pub(super) fn new(settings: &JwksSettings) -> Result<Option<Jwks>, JwksError> {
        if settings.urls.is_empty() {
            return Ok(None);
        }
        let mut sources = Vec::with_capacity(settings.urls.len());
        for spec in &settings.urls {
            let url = parse_url(&spec.url).map_err(|reason| JwksError::Url {
                url: spec.url.clone(),
                reason,
            })?;
            sources.push(Arc::new(Source {
                issuer: spec.issuer.clone(),
                shown: shown(&url),
                url,
                keys: RwLock::new(None),
                refetch: Mutex::new(Refetch::default()),
                wake: Notify::new(),
                finished: watch::Sender::new(0),
            }));
        }
        let any_https = sources.iter().any(|s| s.url.scheme_str() == Some("https"));
        let tls =
            super::fetch::tls_config(settings.ca_file.as_deref(), any_https).map_err(|reason| {
                JwksError::CaFile(match &settings.ca_file {
                    Some(path) => format!("{}: {reason}", path.display()),
                    None => reason,
                })
            })?;
        Ok(Some(Jwks {
            sources,
            fetcher: Fetcher::new(tls),
            timing: Timing {
                min_refresh: settings.min_refresh,
                max_refresh: settings.max_refresh.max(settings.min_refresh),
                refetch_interval: settings.refetch_interval,
            },
        }))
    }

    /// Starts one refresh task per URL (each fetches at once).
    pub(super) fn start(&self, metrics: Arc<Metrics>) -> JwksTasks {
        JwksTasks(
            self.sources
                .iter()
                .map(|source| {
                    if source.url.scheme_str() == Some("http") {
                        tracing::warn!(
                            url = %source.shown,
                            "jwks: fetched over plain http: anyone on the path could swap the keys; use https"
                        );
                    }
                    tokio::spawn(keep_fresh(
                        source.clone(),
                        self.fetcher.clone(),
                        self.timing,
                        metrics.clone(),
                    ))
                })
                .collect(),
        )
    }

    /// Whether some URL is bound to this issuer.
    pub(super) fn binds(&self, issuer: &str) -> bool {
        self.sources
            .iter()
            .any(|s| s.issuer.as_deref() == Some(issuer))
    }

    /// Whether any issuer is bound at all.
    pub(super) fn binds_any(&self) -> bool {
        self.sources.iter().any(|s| s.issuer.is_some())
    }

    /// Whether some URL is bound to no issuer.
    pub(super) fn has_unbound(&self) -> bool {
        self.sources.iter().any(|s| s.issuer.is_none())
    }

    /// Whether every JWKS has been fetched once.
    pub(super) fn all_loaded(&self) -> bool {
        self.sources.iter().all(|s| s.snapshot().is_some())
    }

    /// The URLs whose keys may check a token of `issuer` (`None`: the unbound ones).
    fn group<'a>(&'a self, issuer: Option<&'a str>) -> impl Iterator<Item = &'a Arc<Source>> {
        self.sources
            .iter()
            .filter(move |s| s.issuer.as_deref() == issuer)
    }

    /// The key for a token of `issuer` (`None`: the unbound URLs) with this algorithm and
    /// `kid`. Without a `kid`, the first key that takes the algorithm.
    pub(super) fn find(
        &self,
        issuer: Option<&str>,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<FoundKey, AuthError> {
        let mut not_loaded = false;
        let mut wrong_algorithm = false;
        for source in self.group(issuer) {
            let Some(keys) = source.snapshot() else {
                not_loaded = true;
                continue;
            };
            let position = keys.iter().position(|key| match kid {
                Some(kid) if key.kid.as_deref() == Some(kid) => {
                    let fits = key.algorithms.contains(&alg);
                    wrong_algorithm |= !fits;
                    fits
                }
                Some(_) => false,
                None => key.algorithms.contains(&alg),
            });
            if let Some(index) = position {
                return Ok(FoundKey { keys, index });
            }
        }
        Err(if wrong_algorithm {
            AuthError::AlgorithmNotAllowed
        } else if not_loaded {
            AuthError::KeysUnavailable
        } else {
            AuthError::UnknownKey
        })
    }

    /// A token of `issuer` named a `kid` no key has: asks each of its URLs for a fetch
    /// (each at most once per refetch interval) and waits for those it was granted, at most
    /// [`UNKNOWN_KID_WAIT`]. `true` when a fetch finished meanwhile, so the token is worth
    /// checking again.
    pub(super) async fn refetch(&self, issuer: Option<&str>) -> bool {
        let waits: Vec<_> = self
            .group(issuer)
            .filter_map(|source| {
                let target = source.ask_refetch(self.timing.refetch_interval)?;
                let mut finished = source.finished.subscribe();
                Some(async move {
                    let _ = finished.wait_for(|count| *count >= target).await;
                })
            })
            .collect();
        if waits.is_empty() {
            return false;
        }
        tokio::time::timeout(UNKNOWN_KID_WAIT, futures_util::future::join_all(waits))
            .await
            .is_ok()
    }
}

impl Source {
    fn snapshot(&self) -> Option<Arc<[FetchedKey]>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_refetch(&self) -> std::sync::MutexGuard<'_, Refetch> {
        self.refetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a fetch for an unknown `kid`. `Some(n)`: a fetch is granted (or one already
    /// granted is pending or running), and it has finished once the finished count reaches
    /// `n`. `None`: within the interval of the last granted fetch; one more runs when it
    /// ends.
    fn ask_refetch(&self, interval: Duration) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.lock_refetch();
        // Read under the refetch lock, which the task also holds when it counts a
        // finished fetch: the target below cannot be met by a fetch that already ended.
        let finished = *self.finished.borrow();
        let running = u64::from(state.running);
        if state.granted {
            return Some(finished + 1 + running);
        }
        if state.running_granted {
            return Some(finished + 1);
        }
        let interval_over = state
            .last_granted
            .is_none_or(|at| now.duration_since(at) >= interval);
        if interval_over {
            state.granted = true;
            state.last_granted = Some(now);
            drop(state);
            self.wake.notify_one();
            Some(finished + 1 + running)
        } else {
            state.deferred = true;
            drop(state);
            self.wake.notify_one();
            None
        }
    }
}

/// One JWKS's task: fetch at start, then on schedule and when asked, for ever.
async fn keep_fresh(source: Arc<Source>, fetcher: Fetcher, timing: Timing, metrics: Arc<Metrics>) {
    let mut next = Instant::now();
    let mut failures: u32 = 0;
    let mut held: i64 = 0;
    let mut last_summary = String::new();
    loop {
        let wake_at = {
            let state = source.lock_refetch();
            match (state.deferred, state.last_granted) {
                (true, Some(at)) => next.min(at + timing.refetch_interval),
                _ => next,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = source.wake.notified() => {}
        }
        let now = Instant::now();
        {
            let mut state = source.lock_refetch();
            let interval_over = state
                .last_granted
                .is_none_or(|at| now.duration_since(at) >= timing.refetch_interval);
            if state.deferred && interval_over {
                state.deferred = false;
                state.granted = true;
                state.last_granted = Some(now);
            }
            if !state.granted && now < next {
                continue;
            }
            state.running_granted = state.granted;
            state.granted = false;
            state.running = true;
        }
        let outcome = fetch_once(&source, &fetcher, &mut last_summary).await;
        metrics
            .jwks_fetches
            .with_label_values(&[match &outcome {
                Ok(_) => "ok",
                Err(error) => error.label(),
            }])
            .inc();
        match outcome {
            Ok((count, max_age)) => {
                failures = 0;
                let count = count as i64;
                metrics.jwks_keys.add(count - held);
                held = count;
                let age = max_age
                    .unwrap_or(Duration::ZERO)
                    .clamp(timing.min_refresh, timing.max_refresh);
                next = Instant::now() + age;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let backoff = FIRST_RETRY
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(timing.min_refresh.max(Duration::from_millis(1)));
                tracing::warn!(
                    url = %source.shown,
                    error = %error,
                    kept_keys = held,
                    retry_in_ms = backoff.as_millis() as u64,
                    "jwks: fetch failed; keeping the last good keys"
                );
                next = Instant::now() + backoff;
            }
        }
        let mut state = source.lock_refetch();
        state.running = false;
        state.running_granted = false;
        source.finished.send_modify(|count| *count += 1);
    }
}

/// Why one fetch failed.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Document(#[from] jwks::DocumentError),
}

impl RefreshError {
    fn label(&self) -> &'static str {
        match self {
            RefreshError::Fetch(error) => error.label(),
            RefreshError::Document(_) => "bad_document",
        }
    }
}

/// Fetches and reads the document; on success installs its keys and returns how many,
/// and the answer's max-age. Logs the keys (and those skipped) when they change.
async fn fetch_once(
    source: &Source,
    fetcher: &Fetcher,
    last_summary: &mut String,
) -> Result<(usize, Option<Duration>), RefreshError> {
    let fetched = fetcher.fetch(&source.url).await?;
    let document = jwks::parse_document(&fetched.body)?;
    let kids: Vec<&str> = document
        .keys
        .iter()
        .map(|k| k.kid.as_deref().unwrap_or("(none)"))
        .collect();
    let summary = format!("{kids:?} {:?}", document.skipped);
    if summary != *last_summary {
        for skipped in &document.skipped {
            tracing::warn!(url = %source.shown, key = %skipped, "jwks: key skipped");
        }
        tracing::info!(
            url = %source.shown,
            issuer = source.issuer.as_deref().unwrap_or("(any)"),
            kids = ?kids,
            "jwks: keys loaded"
        );
        *last_summary = summary;
    }
    let count = document.keys.len();
    let keys: Arc<[FetchedKey]> = document.keys.into();
    *source.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(keys);
    let max_age = fetched.cache_control.as_deref().and_then(jwks::max_age);
    Ok((count, max_age))
}

/// `url` for the log: scheme, host, port and path; a query is shown as `?…`.
fn shown(url: &Uri) -> String {
    let mut text = format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or(""),
        url.authority().map_or("", |a| a.as_str()),
        url.path()
    );
    if url.query().is_some() {
        text.push_str("?…");
    }
    text
}

/// An absolute `http://` or `https://` URL with a host and no credentials.
fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with https:// (or http://)".into()),
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    if authority.host().is_empty() {
        return Err("has no host".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            issuer: None,
            url: "http://127.0.0.1:1/jwks".parse().unwrap(),
            shown: "http://127.0.0.1:1/jwks".into(),
            keys: RwLock::new(None),
            refetch: Mutex::new(Refetch::default()),
            wake: Notify::new(),
            finished: watch::Sender::new(0),
        }
    }

    #[test]
    fn urls_are_absolute_http_or_https() {
        assert!(parse_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(parse_url("http://127.0.0.1:8081/keys?tenant=a").is_ok());
        for bad in [
            "idp.example.com/jwks",
            "ftp://idp.example.com/jwks",
            "https://",
            "https://user:pw@idp.example.com/jwks",
            "not a url",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
        let with_query = parse_url("https://idp.example.com:8443/keys?api_key=s3cret").unwrap();
        assert_eq!(shown(&with_query), "https://idp.example.com:8443/keys?…");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_get_one_fetch_per_interval() {
        let source = source();
        let interval = Duration::from_secs(30);
        assert_eq!(
            source.ask_refetch(interval),
            Some(1),
            "the first is granted"
        );
        assert_eq!(
            source.ask_refetch(interval),
            Some(1),
            "one granted and not started: wait for it"
        );
        {
            // The task starts it.
            let mut state = source.lock_refetch();
            state.running_granted = true;
            state.running = true;
            state.granted = false;
        }
        assert_eq!(
            source.ask_refetch(interval),
            Some(1),
            "running: wait for it"
        );
        {
            let mut state = source.lock_refetch();
            state.running = false;
            state.running_granted = false;
            source.finished.send_modify(|n| *n += 1);
        }
        for _ in 0..100 {
            assert_eq!(source.ask_refetch(interval), None, "within the interval");
        }
        assert!(source.lock_refetch().deferred, "one fetch is deferred");
        tokio::time::advance(interval).await;
        assert_eq!(source.ask_refetch(interval), Some(2), "the next interval");
    }
}
