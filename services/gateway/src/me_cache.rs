//! `/v1/me` answers kept per session token for at most a second.
//!
//! `/v1/me` is the portal's most frequent read and asks three services (identity, then billing and
//! crm-sync in parallel). A page load or a polling tab asks it again and again with the same
//! token, so the gateway keeps each complete answer — the JSON it sent — for `ttl`
//! (`GATEWAY_ME_CACHE_TTL`, default and maximum 1 s), keyed by the SHA-256 of the token: an answer
//! can only ever be served to the token it was made for, never to another session or account.
//!
//! Why a short-lived cache and not a read model fed by events: what keeps it correct is time
//! alone, not the bus. An answer is served only while less than `ttl` has passed since identity
//! checked the session for it, so a session revoked anywhere (an admin, another gateway, a
//! password change) is refused here within `ttl`, and a changed access or CRM status shows within
//! `ttl` after it is stored — also when RabbitMQ is down and no event could tell the gateway.
//!
//! A token asked for often never waits for the services: once its answer is three quarters of
//! `ttl` old, the next request is still served from it and one refresh is started in the
//! background (refresh-ahead); a refresh that finds the session ended drops the answer at once.
//! A change made through this gateway with the token (see `auth::fresh_me_after_changes`) drops
//! its answer, and no answer made before that moment is kept afterwards, so the caller's next
//! `/v1/me` shows what they did. Degraded answers (billing or crm-sync unavailable) are not kept.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::body::Bytes;
use sha2::{Digest, Sha256};

/// Most answers kept at once (about 1 KB each); beyond it the least used go first.
const CAPACITY: u64 = 10_000;

type Key = [u8; 32];

/// The turn of each token whose answer is being made.
type Turns = std::sync::Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>;

#[derive(Clone)]
struct Entry {
    /// When identity was asked for the session this answer was made from.
    checked: Instant,
    body: Bytes,
    /// One background refresh per answer.
    refreshing: Arc<AtomicBool>,
}

/// Removes a token's turn from the map when dropped.
struct Leave<'a>(&'a Turns, Key);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.1);
    }
}

/// What the cache holds for a token.
#[derive(Debug, PartialEq)]
pub enum Cached {
    /// Serve it.
    Fresh(Bytes),
    /// Serve it, and refresh it in the background (this caller is the one to start that).
    Aging(Bytes),
    /// Ask the services.
    Missing,
}

#[derive(Clone)]
pub struct MeCache {
    ttl: Duration,
    refresh_after: Duration,
    /// `None` when the cache is off (`ttl` zero).
    answers: Option<moka::sync::Cache<Key, Entry>>,
    /// When each recently changed token's answer was dropped: answers made from an earlier
    /// identity check are not kept (a refresh or a `/v1/me` that ran across the change).
    dropped: Option<moka::sync::Cache<Key, Instant>>,
    /// One turn per token whose answer is being made: requests for it that find none wait for
    /// that one instead of asking the services too (a page firing several at once).
    making: Arc<Turns>,
}

impl MeCache {
    pub fn new(ttl: Duration) -> Self {
        fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::sync::Cache<Key, V> {
            moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build()
        }
        let on = !ttl.is_zero();
        Self { ttl, refresh_after: ttl * 3 / 4, answers: on.then(|| cache(ttl)), dropped: on.then(|| cache(ttl)), making: Arc::default() }
    }

    /// The token's answer made by `make` — or, when a request for the same token is making one
    /// already, the answer that request keeps (if it keeps none, `make` runs after it).
    pub async fn answer<E, F: Future<Output = Result<Bytes, E>>>(&self, token: &str, make: impl FnOnce() -> F) -> Result<Bytes, E> {
        let Some(answers) = &self.answers else { return make().await };
        let key = Self::key(token);
        let turn = self.making.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default().clone();
        let _turn = turn.lock().await;
        // However this ends — answered, failed, or dropped because the client went away — the
        // token's turn goes from the map (requests still waiting on it hold their own handle).
        let _leave = Leave(&self.making, key);
        if let Some(e) = answers.get(&key).filter(|e| e.checked.elapsed() < self.ttl) {
            return Ok(e.body);
        }
        make().await
    }

    fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The answer for this token, if identity checked its session less than `ttl` ago.
    pub fn get(&self, token: &str) -> Cached {
        let Some(answers) = &self.answers else { return Cached::Missing };
        let found = answers.get(&Self::key(token)).filter(|e| e.checked.elapsed() < self.ttl);
        metrics::counter!("gateway_me_cache_total", "result" => if found.is_some() { "hit" } else { "miss" }).increment(1);
        match found {
            None => Cached::Missing,
            Some(e) if e.checked.elapsed() >= self.refresh_after && !e.refreshing.swap(true, Ordering::AcqRel) => Cached::Aging(e.body),
            Some(e) => Cached::Fresh(e.body),
        }
    }

    /// Keeps `body`, made from an identity answer asked for at `checked` (not later: the time
    /// bound counts from the moment the session was known valid) — unless the token's answer was
    /// dropped after that moment.
    pub fn put(&self, token: &str, checked: Instant, body: Bytes) {
        let (Some(answers), Some(dropped)) = (&self.answers, &self.dropped) else { return };
        let key = Self::key(token);
        if dropped.get(&key).is_some_and(|at| checked <= at) {
            return;
        }
        answers.insert(key, Entry { checked, body, refreshing: Arc::new(AtomicBool::new(false)) });
    }

    /// Drops the token's answer (its session ended, or what `/v1/me` says changed here).
    pub fn forget(&self, token: &str) {
        let (Some(answers), Some(dropped)) = (&self.answers, &self.dropped) else { return };
        let key = Self::key(token);
        dropped.insert(key, Instant::now());
        answers.invalidate(&key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    fn body(b: &'static str) -> Bytes {
        Bytes::from_static(b.as_bytes())
    }

    #[test]
    fn an_answer_is_served_to_its_own_token_only_and_not_after_the_ttl() {
        let cache = MeCache::new(Duration::from_secs(1));
        let now = Instant::now();
        cache.put("sbs_a", now, body("a"));
        cache.put("sbs_b", now, body("b"));
        assert_eq!(cache.get("sbs_a"), Cached::Fresh(body("a")));
        assert_eq!(cache.get("sbs_b"), Cached::Fresh(body("b")));
        assert_eq!(cache.get("sbs_c"), Cached::Missing);
        // Checked longer ago than the ttl: never served, even before the cache sweeps it.
        cache.put("sbs_old", now - Duration::from_secs(1), body("old"));
        assert_eq!(cache.get("sbs_old"), Cached::Missing);
    }

    #[test]
    fn an_aging_answer_is_refreshed_once_in_the_background() {
        let cache = MeCache::new(Duration::from_secs(1));
        cache.put("sbs_a", Instant::now() - Duration::from_millis(800), body("a"));
        assert_eq!(cache.get("sbs_a"), Cached::Aging(body("a")));
        // The refresh is under way: others are served without starting another.
        assert_eq!(cache.get("sbs_a"), Cached::Fresh(body("a")));
        cache.put("sbs_a", Instant::now(), body("a2"));
        assert_eq!(cache.get("sbs_a"), Cached::Fresh(body("a2")));
    }

    #[test]
    fn after_a_change_no_answer_made_before_it_is_kept() {
        let cache = MeCache::new(Duration::from_secs(1));
        let before = Instant::now();
        cache.put("sbs_a", before, body("old"));
        cache.forget("sbs_a");
        assert_eq!(cache.get("sbs_a"), Cached::Missing);
        // A refresh that asked identity before the change finishes after it: not kept.
        cache.put("sbs_a", before, body("stale"));
        assert_eq!(cache.get("sbs_a"), Cached::Missing);
        cache.put("sbs_a", Instant::now(), body("new"));
        assert_eq!(cache.get("sbs_a"), Cached::Fresh(body("new")));
    }

    #[tokio::test]
    async fn requests_for_one_token_wait_for_the_answer_being_made() {
        let cache = MeCache::new(Duration::from_secs(1));
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = || async {
            made.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let body = body("a");
            cache.put("sbs_a", Instant::now(), body.clone());
            Ok::<_, ()>(body)
        };
        let answers = futures::future::join_all((0..8).map(|_| cache.answer("sbs_a", make))).await;
        assert!(answers.iter().all(|a| *a == Ok(body("a"))), "{answers:?}");
        assert_eq!(made.load(Ordering::SeqCst), 1, "one request asked the services, the others waited for it");
    }

    #[tokio::test]
    async fn a_fetch_dropped_half_way_leaves_no_turn_behind() {
        let cache = MeCache::new(Duration::from_secs(1));
        let never = cache.answer("sbs_a", std::future::pending::<Result<Bytes, ()>>);
        assert!(tokio::time::timeout(Duration::from_millis(10), never).await.is_err());
        assert!(cache.making.lock().unwrap().is_empty());
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = MeCache::new(Duration::ZERO);
        cache.put("sbs_a", Instant::now(), body("a"));
        assert_eq!(cache.get("sbs_a"), Cached::Missing);
    }
}
