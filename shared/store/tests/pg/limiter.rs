//! The Postgres-backed rate limiter keeps several processes inside one portal budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use b24_domain::limits::{LimitSettings, OperatingReport};
use b24_domain::ports::{RateLimiter, unix_now};
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
    // 3 requests pass at once (burst 5 less the 2 kept free for jitter); one bucket for
    // both portals would hold the other 3 back for 1.5 s at 2 per second.
    let s = LimitSettings {
        drain_per_sec: 2.0,
        ..settings()
    };
    let start = Instant::now();
    let a = Arc::new(PgRateLimiter::new(&store, "a.bitrix24.com", s));
    let b = Arc::new(PgRateLimiter::new(&store, "b.bitrix24.com", s));
    send(a, 3, start).await;
    send(b, 3, start).await;
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
        .observe(&[OperatingReport::new("crm.deal.list", 10.5, None)])
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
    let now = unix_now();
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

#[tokio::test]
async fn processes_share_the_latest_running_total_never_a_sum() {
    let db = TestDb::create().await;
    let a = Store::connect(&db.url, SCHEMA).await.unwrap();
    a.migrate().await.unwrap();
    let b = Store::connect(&db.url, SCHEMA).await.unwrap();
    let s = LimitSettings {
        burst: 100.0,
        ..settings()
    };
    let la = PgRateLimiter::new(&a, "p", s);
    let lb = PgRateLimiter::new(&b, "p", s);
    // Each process reports the portal's running total after its own call: 4, then 6.
    assert_eq!(
        la.observe(&[OperatingReport::new("crm.deal.list", 4.0, None)])
            .await,
        4.0
    );
    assert_eq!(
        lb.observe(&[OperatingReport::new("crm.deal.list", 6.0, None)])
            .await,
        2.0
    );
    // 6 used (not 10) + 2 for the next call <= 10: no wait for either process.
    let start = Instant::now();
    la.acquire(&["crm.deal.list"]).await;
    lb.acquire(&["crm.deal.list"]).await;
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // 9 + 3 > 10: now both wait.
    lb.observe(&[OperatingReport::new("crm.deal.list", 9.0, None)])
        .await;
    let blocked =
        tokio::time::timeout(Duration::from_millis(400), la.acquire(&["crm.deal.list"])).await;
    assert!(
        blocked.is_err(),
        "near the budget the other process must wait too"
    );
}

#[tokio::test]
async fn a_garbled_row_delays_one_window_at_most_and_is_written_back_bounded() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let s = LimitSettings {
        burst: 100.0,
        operating_window_secs: 1.0,
        ..settings()
    };
    let limiter = PgRateLimiter::new(&store, "p", s);
    limiter.on_query_limit().await;
    let client = db.client().await;
    client
        .execute(
            r#"UPDATE b24._rate_limit SET bucket_level = 'NaN', bucket_updated_at = 1e20,
               operating = '{"crm.deal.list": {"reported_total": 1e20, "reported_at": 1e20, "reset_at": 1e20,
                             "parts": [[1e20, 50.0]], "next_cost": 1e20, "blocked_until": 1e20}}'"#,
            &[],
        )
        .await
        .unwrap();
    let start = Instant::now();
    limiter.acquire(&["crm.deal.list"]).await;
    let waited = start.elapsed();
    assert!(waited < Duration::from_millis(2_500), "waited {waited:?}");
    let row = client
        .query_one(
            "SELECT bucket_level, bucket_updated_at, extract(epoch FROM clock_timestamp())::float8 FROM b24._rate_limit",
            &[],
        )
        .await
        .unwrap();
    let (level, updated_at, now): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
    assert!(
        level.is_finite() && level <= s.burst + s.drain_per_sec * 1.0,
        "{level}"
    );
    assert!(updated_at <= now, "{updated_at} > {now}");

    // 429s with garbled reset times: neither panic nor a block beyond the window.
    for garbled in [1e20, f64::INFINITY, f64::NAN, -5.0, unix_now() * 1000.0] {
        limiter
            .on_operation_limit("crm.deal.list", Some(garbled))
            .await;
        let start = Instant::now();
        limiter.acquire(&["crm.deal.list"]).await;
        let waited = start.elapsed();
        assert!(
            waited < Duration::from_millis(1_500),
            "{garbled}: waited {waited:?}"
        );
    }
}
