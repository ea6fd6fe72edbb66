//! The client against the Bitrix24 simulator, started by each test on a free loopback
//! port: paging correctness, limits, fault recovery, the create-retry rule, batch
//! partial failures and secret redaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use b24_client::{B24Error, Client, ClientOptions, Command, InProcessLimiter, ListQuery, Row};
use b24_domain::limits::LimitSettings;
use b24_domain::webhook::WebhookUrl;
use b24_sim::{Entity, LimitConfig, MutateRequest, RunningSim, SimConfig};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

async fn sim_with(deals: usize, user_fields: usize, limits: LimitConfig) -> RunningSim {
    b24_sim::start(SimConfig {
        deals,
        user_fields,
        limits,
        seed: 7,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn sim(deals: usize) -> RunningSim {
    sim_with(deals, 3, LimitConfig::default()).await
}

fn client_with(sim: &RunningSim, limiter: Arc<InProcessLimiter>) -> Client {
    let options = ClientOptions {
        limiter,
        timeout: Duration::from_secs(2),
        max_retries: 12,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        api: Default::default(),
    };
    Client::new(WebhookUrl::parse(&sim.webhook_url()).unwrap(), options).unwrap()
}

fn client(sim: &RunningSim) -> Client {
    client_with(
        sim,
        Arc::new(InProcessLimiter::new(LimitSettings::standard())),
    )
}

fn deals() -> ListQuery {
    ListQuery {
        select: vec!["*".into(), "UF_*".into()],
        ..ListQuery::new("crm.deal.list")
    }
}

fn id(row: &Row) -> u64 {
    match &row["ID"] {
        Value::String(s) => s.parse().unwrap(),
        other => other.as_u64().unwrap(),
    }
}

async fn list_ids(client: &Client, query: ListQuery) -> Vec<u64> {
    client
        .list_stream(query)
        .map_ok(|row| id(&row))
        .try_collect()
        .await
        .unwrap()
}

async fn live_ids(sim: &RunningSim) -> Vec<u64> {
    let mut ids: Vec<u64> = sim
        .dump(Entity::Deal)
        .await
        .unwrap()
        .iter()
        .map(id)
        .collect();
    ids.sort_unstable();
    ids
}

fn assert_strictly_ascending(ids: &[u64]) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "IDs not strictly ascending (a duplicate or a reorder)"
    );
}

/// Operating seconds the simulator charged, over all methods.
async fn charged(sim: &RunningSim) -> f64 {
    sim.stats()
        .await
        .unwrap()
        .operating_seconds_by_method
        .values()
        .sum()
}

#[tokio::test]
async fn a_full_listing_returns_every_row_once_in_id_order_without_counting() {
    // (rows, HTTP requests): 2,500 rows per request; without a count the listing ends
    // on a short page, so rows ending exactly on a full request take one more request.
    for (rows, expected_requests) in [(0, 1), (1, 1), (2_500, 2), (5_000, 3), (5_123, 3)] {
        let sim = sim(rows).await;
        let client = client(&sim);
        let rows_seen: Vec<Row> = client.list_stream(deals()).try_collect().await.unwrap();
        let ids: Vec<u64> = rows_seen.iter().map(id).collect();
        assert_eq!(ids, live_ids(&sim).await, "{rows} rows");
        if let Some(first) = rows_seen.first() {
            assert!(
                first.keys().any(|k| k.starts_with("UF_CRM_")),
                "UF_* fields selected"
            );
            assert!(first.contains_key("TITLE"));
        }
        let stats = client.stats();
        assert_eq!(stats.http_requests, expected_requests, "{rows} rows");
        assert_eq!(
            (stats.retries, stats.throttled_503, stats.throttled_429),
            (0, 0, 0)
        );
        // The answers carry running totals: what they grew by is what the portal
        // charged (summing them would count the first pages fifty times over).
        let charged = charged(&sim).await;
        assert!(
            (stats.operating_seconds - charged).abs() < 1e-6 && charged > 0.0,
            "client {} vs portal {charged}",
            stats.operating_seconds
        );
        assert_eq!(sim.stats().await.unwrap().status_503, 0);
    }
}

#[tokio::test]
async fn rows_added_and_deleted_during_the_listing_are_handled() {
    let sim = sim(7_000).await;
    let before: BTreeSet<u64> = live_ids(&sim).await.into_iter().collect();
    let client = client(&sim);
    let stream = client.list_stream(deals());
    futures::pin_mut!(stream);

    // Read the first request's rows, then change the portal under the listing.
    let mut ids = Vec::new();
    for _ in 0..2_500 {
        ids.push(id(&stream.next().await.unwrap().unwrap()));
    }
    let cursor = *ids.last().unwrap();
    let change = MutateRequest {
        entity: Entity::Deal,
        seed: 11,
        adds: 120,
        updates: 200,
        deletes: 400,
    };
    let outcome = sim.mutate(&change).await.unwrap();
    assert!(
        outcome.deleted.iter().any(|d| *d > cursor) && outcome.deleted.iter().any(|d| *d <= cursor)
    );
    while let Some(row) = stream.next().await {
        ids.push(id(&row.unwrap()));
    }

    assert_strictly_ascending(&ids);
    let seen: BTreeSet<u64> = ids.iter().copied().collect();
    let deleted: BTreeSet<u64> = outcome.deleted.iter().copied().collect();
    // Every row that lived throughout appears; so does every added one.
    for id in before.difference(&deleted) {
        assert!(seen.contains(id), "row {id} was skipped");
    }
    for id in &outcome.added {
        assert!(seen.contains(id), "added row {id} was skipped");
    }
    // A row deleted before the listing reached it does not appear.
    for id in deleted.iter().filter(|d| **d > cursor) {
        assert!(!seen.contains(id), "deleted row {id} appeared");
    }
}

#[tokio::test]
async fn filters_bounds_and_checkpoints_combine_with_the_window() {
    let sim = sim(3_000).await;
    let client = client(&sim);
    let all = live_ids(&sim).await;
    let filter = |v: Value| v.as_object().cloned().unwrap();

    let bounded = ListQuery {
        filter: filter(json!({">ID": 100, "<=ID": 2900})),
        ..deals()
    };
    let expected: Vec<u64> = all
        .iter()
        .copied()
        .filter(|i| *i > 100 && *i <= 2900)
        .collect();
    assert_eq!(list_ids(&client, bounded).await, expected);

    let resumed = ListQuery {
        filter: filter(json!({">=ID": "1500"})),
        after_id: Some(2000),
        ..deals()
    };
    let expected: Vec<u64> = all.iter().copied().filter(|i| *i > 2000).collect();
    assert_eq!(list_ids(&client, resumed).await, expected);

    // An incremental pass: everything modified at or after a point in time.
    let dump = sim.dump(Entity::Deal).await.unwrap();
    let mut stamps: Vec<String> = dump
        .iter()
        .map(|r| r["DATE_MODIFY"].as_str().unwrap().to_string())
        .collect();
    stamps.sort();
    let since = stamps[stamps.len() - 40].clone();
    let mut expected: Vec<u64> = dump
        .iter()
        .filter(|r| r["DATE_MODIFY"].as_str().unwrap() >= since.as_str())
        .map(id)
        .collect();
    expected.sort_unstable();
    let before = client.stats().http_requests;
    let incremental = ListQuery {
        filter: filter(json!({">=DATE_MODIFY": since})),
        ..deals()
    };
    assert_eq!(list_ids(&client, incremental).await, expected);
    assert_eq!(
        client.stats().http_requests - before,
        1,
        "a few changed rows take one small request"
    );

    let bad = ListQuery {
        filter: filter(json!({">ID": "abc"})),
        ..deals()
    };
    let err = client
        .list_stream(bad)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, B24Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn fetch_by_ids_returns_the_rows_that_exist() {
    let sim = sim(300).await;
    let outcome = sim
        .mutate(&MutateRequest {
            entity: Entity::Deal,
            seed: 3,
            adds: 0,
            updates: 0,
            deletes: 30,
        })
        .await
        .unwrap();
    let client = client(&sim);
    let mut wanted: Vec<u64> = (1..=160).rev().collect();
    wanted.extend([5, 5, 999_999]);
    let rows = client
        .fetch_by_ids("crm.deal.list", &wanted, &["ID".into(), "TITLE".into()])
        .await
        .unwrap();
    let got: Vec<u64> = rows.iter().map(id).collect();
    let live: BTreeSet<u64> = live_ids(&sim).await.into_iter().collect();
    let expected: Vec<u64> = (1..=160).filter(|i| live.contains(i)).collect();
    assert_eq!(got, expected);
    assert!(
        outcome.deleted.iter().any(|d| *d <= 160),
        "the seed must delete some requested rows"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains_key("TITLE") && !r.contains_key("STAGE_ID"))
    );
    assert_eq!(
        client.stats().http_requests,
        1,
        "4 commands of 50 IDs in one batch"
    );
}

#[tokio::test]
async fn offset_paging_fallback_returns_every_row() {
    let sim = sim(180).await;
    let client = client(&sim);
    let params = json!({"order": {"TITLE": "ASC"}, "select": ["ID", "TITLE"]})
        .as_object()
        .cloned()
        .unwrap();
    let rows: Vec<Row> = client
        .list_paged("crm.deal.list", params)
        .try_collect()
        .await
        .unwrap();
    let titles: Vec<&str> = rows.iter().map(|r| r["TITLE"].as_str().unwrap()).collect();
    assert!(
        titles.windows(2).all(|w| w[0] <= w[1]),
        "rows follow the requested order"
    );
    let mut ids: Vec<u64> = rows.iter().map(id).collect();
    ids.sort_unstable();
    assert_eq!(ids, live_ids(&sim).await);
    assert_eq!(
        client.stats().http_requests,
        2,
        "first page, then one batch of the other 3 pages"
    );
}

/// Fires `calls_per_client` concurrent calls through each client; returns how many failed.
async fn burst_of_parallel_calls(clients: &[Client], calls_per_client: usize) -> usize {
    let mut tasks = Vec::new();
    for client in clients {
        for i in 0..calls_per_client {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .call("crm.deal.get", &json!({"id": 1 + i % 50}))
                    .await
            }));
        }
    }
    let mut failed = 0;
    for task in tasks {
        failed += usize::from(task.await.unwrap().is_err());
    }
    failed
}

#[tokio::test]
async fn parallel_callers_sharing_one_limiter_never_get_a_503() {
    let portal = LimitConfig {
        burst: 10.0,
        drain_per_sec: 20.0,
        ..LimitConfig::default()
    };
    let sim = sim_with(50, 0, portal).await;
    let settings = LimitSettings {
        burst: 10.0,
        drain_per_sec: 20.0,
        ..LimitSettings::standard()
    };

    let shared = Arc::new(InProcessLimiter::new(settings));
    let clients: Vec<Client> = (0..3).map(|_| client_with(&sim, shared.clone())).collect();
    assert_eq!(burst_of_parallel_calls(&clients, 25).await, 0);
    assert_eq!(sim.stats().await.unwrap().status_503, 0);
    assert!(
        clients
            .iter()
            .all(|c| c.stats().throttled_503 == 0 && c.stats().retries == 0)
    );

    // Control: the same burst through limiters that do not know the portal's bucket
    // does draw 503s, so the check above can fail.
    sim.set_limits(&Default::default()).await.unwrap();
    sim.reset_stats().await.unwrap();
    let unaware: Vec<Client> = (0..3)
        .map(|_| {
            client_with(
                &sim,
                Arc::new(InProcessLimiter::new(LimitSettings {
                    burst: 1000.0,
                    drain_per_sec: 1000.0,
                    ..settings
                })),
            )
        })
        .collect();
    burst_of_parallel_calls(&unaware, 25).await;
    assert!(sim.stats().await.unwrap().status_503 > 0);
    assert!(unaware.iter().map(|c| c.stats().throttled_503).sum::<u64>() > 0);
}

/// A portal whose methods may spend `budget` operating seconds per `window`, and
/// limiter settings that know it.
fn operating_budget(budget: f64, window: f64) -> (LimitConfig, LimitSettings) {
    let portal = LimitConfig {
        operating_budget_secs: budget,
        operating_window_secs: window,
        ..LimitConfig::default()
    };
    let settings = LimitSettings {
        operating_budget_secs: budget,
        operating_window_secs: window,
        ..LimitSettings::standard()
    };
    (portal, settings)
}

#[tokio::test]
async fn the_operating_budget_is_kept_without_429s() {
    let (portal, settings) = operating_budget(1.0, 3.0);
    let sim = sim_with(6_000, 20, portal).await;
    let client = client_with(&sim, Arc::new(InProcessLimiter::new(settings)));
    // A request of 50 wide pages costs more than half the budget, so the listing must
    // wait for the window between its requests.
    let started = std::time::Instant::now();
    assert_eq!(list_ids(&client, deals()).await, live_ids(&sim).await);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().throttled_429, 0);
    assert_eq!(sim.stats().await.unwrap().status_429, 0);

    // Control: a limiter that believes in a larger budget runs into the portal's 429
    // and recovers by waiting for operating_reset_at.
    sim.set_limits(&Default::default()).await.unwrap();
    let unaware_settings = LimitSettings {
        operating_budget_secs: 480.0,
        ..settings
    };
    let unaware = client_with(&sim, Arc::new(InProcessLimiter::new(unaware_settings)));
    assert_eq!(list_ids(&unaware, deals()).await, live_ids(&sim).await);
    assert!(unaware.stats().throttled_429 > 0);
}

#[tokio::test]
async fn a_tight_budget_listing_finishes_without_429s_near_the_theoretical_minimum() {
    // The portal's budget is a few requests' worth per window, so the listing spends
    // most of its time waiting for the window; a scaled-down version of 5 operating
    // seconds per 30 s window.
    let (budget, window) = (2.2, 4.0);
    let (portal, settings) = operating_budget(budget, window);
    let sim = sim_with(30_000, 20, portal).await;
    let client = client_with(&sim, Arc::new(InProcessLimiter::new(settings)));
    let started = std::time::Instant::now();
    let listed = list_ids(&client, deals()).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(listed, live_ids(&sim).await);

    let portal_stats = sim.stats().await.unwrap();
    assert_eq!(portal_stats.status_429, 0, "the hard requirement: no 429");
    assert_eq!(client.stats().throttled_429, 0);
    // The portal admits calls while a method's total is within the budget, so at best
    // the listing spends a budget per window: its cost C needs ceil(C / B) windows, the
    // first of which starts at once.
    let cost = portal_stats.operating_seconds_by_method["crm.deal.list"];
    let minimum = ((cost / budget).ceil() - 1.0) * window;
    eprintln!("cost {cost:.2} s, minimum {minimum:.1} s, elapsed {elapsed:.1} s");
    assert!(cost > 2.0 * budget, "the budget must bind: {cost}");
    assert!(
        elapsed >= minimum - window,
        "{elapsed} s < {minimum} s - one window"
    );
    // About one window over the minimum, with room for a debug build's own work on a
    // busy machine.
    assert!(
        elapsed <= minimum + 2.0 * window + 20.0,
        "{elapsed} s vs {minimum} s"
    );
}

#[tokio::test]
async fn a_portal_without_the_operating_limiter_lists_unpaced() {
    // On-premise: answers carry no `operating` / `operating_reset_at`.
    let portal = LimitConfig {
        operating_limiter: false,
        ..LimitConfig::default()
    };
    let sim = sim_with(6_000, 3, portal).await;
    // A budget so small that any reported usage would hold the listing back.
    let settings = LimitSettings {
        operating_budget_secs: 0.001,
        operating_window_secs: 60.0,
        ..LimitSettings::standard()
    };
    let client = client_with(&sim, Arc::new(InProcessLimiter::new(settings)));
    let started = std::time::Instant::now();
    assert_eq!(list_ids(&client, deals()).await, live_ids(&sim).await);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().operating_seconds, 0.0);
    let answer = client
        .call("crm.deal.get", &json!({"id": 1}))
        .await
        .unwrap();
    assert_eq!((answer.operating, answer.operating_reset_at), (None, None));
}

#[tokio::test]
async fn injected_faults_lose_and_duplicate_nothing() {
    let sim = sim(12_000).await;
    let expected = live_ids(&sim).await;
    sim.set_faults(
        "503=0.15,500=0.15,timeout=0.05,drop_before=0.1,drop_after=0.1,truncate=0.1,seed=5",
    )
    .await
    .unwrap();
    let client = client(&sim);
    let ids = list_ids(&client, deals()).await;
    assert_eq!(ids, expected);
    let stats = client.stats();
    assert!(stats.retries > 0, "the fault seed must hit some requests");
    assert!(stats.http_requests > 5);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_repeated() {
    let sim = sim(10).await;
    let client = client(&sim);
    let fields = json!({"fields": {"TITLE": "Forwarded deal", "ORIGIN_ID": "src-42"}});

    // The portal executes the add, then the connection drops: exactly one new deal.
    sim.set_faults("drop_after=1").await.unwrap();
    let err = client.call("crm.deal.add", &fields).await.unwrap_err();
    assert!(
        matches!(&err, B24Error::AmbiguousCreate { method, .. } if method == "crm.deal.add"),
        "{err:?}"
    );
    sim.set_faults("").await.unwrap();
    assert_eq!(live_ids(&sim).await.len(), 11);

    // Truncated answers and 500s are just as ambiguous; a batch holding an add too.
    for faults in ["truncate=1", "500=1"] {
        sim.set_faults(faults).await.unwrap();
        let batch = vec![Command::new("add", "crm.deal.add", fields.clone())];
        assert!(
            matches!(
                client.batch(batch, false).await,
                Err(B24Error::AmbiguousCreate { .. })
            ),
            "{faults}"
        );
    }
    sim.set_faults("").await.unwrap();
    assert_eq!(
        live_ids(&sim).await.len(),
        12,
        "truncate ran the add once, 500 refused it"
    );

    // A refusal before execution is retried, and the add then happens once.
    sim.set_faults("503=0.5,seed=2").await.unwrap();
    let before = client.stats().retries;
    for _ in 0..4 {
        client.call("crm.deal.add", &fields).await.unwrap();
    }
    sim.set_faults("").await.unwrap();
    assert_eq!(live_ids(&sim).await.len(), 16);
    assert!(
        client.stats().retries > before,
        "the seed must refuse some adds"
    );
}

#[tokio::test]
async fn batch_answers_partial_failures_per_command() {
    let sim = sim(5).await;
    let client = client(&sim);
    let commands = vec![
        Command::new("found", "crm.deal.get", json!({"id": 2})),
        Command::new("missing", "crm.deal.get", json!({"id": 999})),
        Command::new("unknown", "crm.nothing.list", json!({})),
        Command::new(
            "chained",
            "crm.deal.get",
            json!({"id": "$result[found][ID]"}),
        ),
    ];
    let results = client.batch(commands, false).await.unwrap();
    assert_eq!(
        id(results[0]
            .outcome
            .as_ref()
            .unwrap()
            .result
            .as_object()
            .unwrap()),
        2
    );
    assert!(
        matches!(results[1].outcome, Err(B24Error::NotFound { .. })),
        "{:?}",
        results[1].outcome
    );
    assert!(
        matches!(results[2].outcome, Err(B24Error::MethodNotFound { .. })),
        "{:?}",
        results[2].outcome
    );
    assert_eq!(
        id(results[3]
            .outcome
            .as_ref()
            .unwrap()
            .result
            .as_object()
            .unwrap()),
        2
    );
    assert_eq!(client.stats().http_requests, 1);

    // More than 50 commands are split over requests.
    let many: Vec<Command> = (1..=120)
        .map(|i| Command::new(format!("g{i}"), "crm.deal.get", json!({"id": 1 + i % 5})))
        .collect();
    let results = client.batch(many, false).await.unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()));
    assert_eq!(client.stats().http_requests, 4);
}

#[tokio::test]
async fn a_wrong_webhook_fails_with_a_typed_error_that_hides_the_secret() {
    let sim = sim(5).await;
    let wrong = sim
        .webhook_url()
        .replace("simsecret0123456", "wrongsecret987654");
    let client = Client::new(WebhookUrl::parse(&wrong).unwrap(), ClientOptions::default()).unwrap();
    let err = client
        .list_stream(deals())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    // A real portal answers a wrong webhook code 401 INVALID_CREDENTIALS.
    assert!(
        matches!(err, B24Error::InvalidCredentials { .. }),
        "{err:?}"
    );
    assert!(err.is_auth());
    assert!(err.to_string().contains("check the webhook URL"), "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains("wrongsecret987654"), "{text}");
    }
    assert_eq!(
        client.stats().http_requests,
        1,
        "auth errors are not retried"
    );
}
