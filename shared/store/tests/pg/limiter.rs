//! The Postgres-backed rate limiter keeps several processes inside one portal budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use b24_client::{Observed, RateLimiter};
use b24_domain::limits::LimitSettings;
use b24_store::{PgRateLimiter, Store};

use crate::common::*;

fn settings() -> LimitSettings {
    LimitSettings {
        burst: 5.0,
        drain_per_sec: 10.0,
        operating_budget_secs: 10.0,
        operating_window_secs: 600.0,
    }
}

/// Sends `count` requests through `limiter`, returning when each was let through.
async fn send(limiter: Arc<PgRateLimiter>, count: usize, start: Instant) -> Vec<f64> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        limiter.acquire(&["crm.deal.list"]).await;
        times.push(start.elapsed().as_secs_f64());
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_stay_inside_one_budget() {
    let db = TestDb::create().await;
    store(&db).await;
    // Two stores = two connections, as two Lambda functions would have.
    let a = Store::connect(&db.url, SCHEMA).await.unwrap();
    let b = Store::connect(&db.url, SCHEMA).await.unwrap();
    let s = settings();
    let la = Arc::new(PgRateLimiter::new(&a, "shared.bitrix24.com", s));
    let lb = Arc::new(PgRateLimiter::new(&b, "shared.bitrix24.com", s));
    let start = Instant::now();
    let (ta, tb) = tokio::join!(send(la, 15, start), send(lb, 15, start));
    let mut times: Vec<f64> = ta.into_iter().chain(tb).collect();
    times.sort_by(f64::total_cmp);

    // The portal's bucket: at any moment, requests so far <= burst + drained.
    // One request of slack for the gap between reserving and our clock reading.
    for (i, t) in times.iter().enumerate() {
        let allowed = s.burst + s.drain_per_sec * t + 1.0;
        assert!(
            (i + 1) as f64 <= allowed,
            "request {} at {t:.3}s exceeds the shared budget",
            i + 1
        );
    }
    // And the budget is used, not wasted: 25 requests beyond the burst at 10/s.
    let last = times.last().copied().unwrap();
    assert!(last > 2.0 && last < 4.0, "30 requests took {last:.3}s");
}

#[tokio::test]
async fn separate_portals_have_separate_budgets() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let s = settings();
    let start = Instant::now();
    let a = Arc::new(PgRateLimiter::new(&store, "a.bitrix24.com", s));
    let b = Arc::new(PgRateLimiter::new(&store, "b.bitrix24.com", s));
    send(a, 5, start).await;
    send(b, 5, start).await;
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "each portal's burst is its own"
    );
}

#[tokio::test]
async fn a_503_fills_the_bucket() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let limiter = PgRateLimiter::new(&store, "p", settings());
    limiter.on_query_limit().await;
    let start = Instant::now();
    limiter.acquire(&["crm.deal.get"]).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(80),
        "waited only {waited:?} after a 503"
    );
}

#[tokio::test]
async fn operating_time_blocks_only_the_spent_method() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let limiter = PgRateLimiter::new(
        &store,
        "p",
        LimitSettings {
            burst: 100.0,
            ..settings()
        },
    );
    // crm.deal.list used 10.5 s of its 10 s budget; the window is ten minutes long.
    limiter
        .observe(&Observed {
            operating: vec![("crm.deal.list".into(), 10.5)],
            operating_reset_at: None,
        })
        .await;
    let start = Instant::now();
    limiter.acquire(&["crm.contact.list"]).await;
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "other methods are not blocked"
    );
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        limiter.acquire(&["crm.deal.list"]),
    )
    .await;
    assert!(
        blocked.is_err(),
        "an over-budget method must wait for its window"
    );

    // A 429 with a reset time blocks the method until then, and no longer.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    limiter
        .on_operation_limit("crm.company.list", Some(now + 0.6))
        .await;
    let start = Instant::now();
    limiter.acquire(&["crm.company.list"]).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(2_000),
        "waited {waited:?}"
    );
}
