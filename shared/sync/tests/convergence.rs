//! Convergence: the simulated portal sends its outgoing events to a local intake (the
//! product's own event parsing, `b24_domain::event::accept`, into an in-memory change
//! queue) while random adds, updates and deletes run. A consumer standing in for SQS
//! drops, duplicates and reorders a share of the messages and hands them to the change
//! worker in batches of random size, delivering failed messages again. After the queue
//! drains, every record whose last event survived is already right in the mirror; one
//! incremental and one reconcile pass then make the whole mirror equal the portal.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use b24_domain::change::ChangeMessage;
use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_sim::{MutateRequest, RunningSim, SimConfig};
use b24_sync::{SyncOptions, SyncService};
use common::intake::*;
use common::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde_json::json;

const ENTITIES: [Entity; 2] = [Entity::Deal, Entity::Contact];
/// Shares of the messages the consumer loses and delivers twice.
const DROP_SHARE: f64 = 0.15;
const DUPLICATE_SHARE: f64 = 0.15;
/// Deliveries of a message before it goes to the dead-letter queue (SQS `maxReceiveCount`).
const MAX_RECEIVES: u32 = 5;

/// What the consumer saw of the messages.
#[derive(Default)]
struct Consumed {
    /// Per record, whether its last message (in arrival order) was lost.
    last_lost: HashMap<(Entity, u64), bool>,
    arrived: usize,
    lost: usize,
    failed_deliveries: usize,
    dead_letters: Vec<ChangeMessage>,
}

/// An SQS stand-in between the intake and the worker: takes what arrived, loses and
/// doubles a seeded share, shuffles, and delivers in batches of 1 to 120 messages,
/// putting failed ones back until their last receive.
struct Consumer {
    rng: Xoshiro256PlusPlus,
    pending: Vec<(usize, ChangeMessage)>,
    receives: HashMap<usize, u32>,
    next_key: usize,
    seen: Consumed,
}

impl Consumer {
    fn new(seed: u64) -> Consumer {
        Consumer {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            pending: Vec::new(),
            receives: HashMap::new(),
            next_key: 0,
            seen: Consumed::default(),
        }
    }

    fn take(&mut self, arrived: Vec<ChangeMessage>) {
        for message in arrived {
            self.seen.arrived += 1;
            let draw: f64 = self.rng.random();
            let lost = draw < DROP_SHARE;
            self.seen
                .last_lost
                .insert((message.entity, message.id), lost);
            if lost {
                self.seen.lost += 1;
                continue;
            }
            let copies = if draw < DROP_SHARE + DUPLICATE_SHARE {
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.pending.push((self.next_key, message.clone()));
                self.next_key += 1;
            }
        }
        self.pending.shuffle(&mut self.rng);
    }

    /// Delivers everything pending once, in random batches.
    async fn deliver(&mut self, service: &SyncService) {
        let mut pending = std::mem::take(&mut self.pending);
        while !pending.is_empty() {
            let size = self.rng.random_range(1..=120).min(pending.len());
            let batch: Vec<_> = pending.drain(..size).collect();
            let failed = service.apply_changes(batch.clone(), None).await.failed;
            self.seen.failed_deliveries += failed.len();
            for (key, message) in batch.into_iter().filter(|(k, _)| failed.contains(k)) {
                let receives = self.receives.entry(key).or_insert(0);
                *receives += 1;
                if *receives >= MAX_RECEIVES {
                    self.seen.dead_letters.push(message);
                } else {
                    self.pending.push((key, message));
                }
            }
        }
    }
}

/// The events the portal raised for a mutation.
fn events_of(outcome: &b24_sim::MutateOutcome) -> u64 {
    (outcome.added.len() + outcome.updated.len() + outcome.repeated.len() + outcome.deleted.len())
        as u64
}

/// Runs the whole scenario; `faults` is the simulator's fault spec while events flow.
async fn converges(faults: Option<&str>, seed: u64) {
    let (intake, addr) = start_intake().await;
    let config = SimConfig {
        seed,
        deals: 1_200,
        contacts: 600,
        user_fields: 6,
        limits: no_limits(),
        member_id: Some(MEMBER_ID.to_string()),
        events: Some(event_target(addr)),
        ..SimConfig::default()
    };
    let sim = Arc::new(sim(config).await);
    let db = TestDb::create().await;
    // The simulator's limits are off; so are the client's, for a test about something else.
    let portal = json!({
        "webhook_url": sim.webhook_url(),
        "entities": ["deal", "contact"],
        "limits": {"burst": 10000, "drain": 1000},
    });
    let service = service_of(&db, json!({ PORTAL: portal })).await;
    let client = service.client(PORTAL).await.unwrap();
    for entity in ENTITIES {
        syncer(&client, service.store())
            .run(entity, Mode::Full, &SyncOptions::default())
            .await
            .unwrap();
    }
    if let Some(spec) = faults {
        sim.set_faults(spec).await.unwrap();
    }

    let mut mutations = Some(tokio::spawn(mutate_rounds(sim.clone(), seed)));
    let mut consumer = Consumer::new(seed);
    let started = Instant::now();
    let mut raised = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no convergence"
        );
        if let Some(task) = mutations.take_if(|task| task.is_finished()) {
            raised = Some(task.await.unwrap());
        }
        consumer.take(intake.queue.drain());
        consumer.deliver(&service).await;
        let stats = sim.stats().await.unwrap();
        let all_sent = raised.is_some_and(|n| stats.events_sent + stats.events_failed == n);
        if all_sent {
            // Whatever arrived before the last event was counted is taken now.
            consumer.take(intake.queue.drain());
            if consumer.pending.is_empty() {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stats = sim.stats().await.unwrap();
    let seen = consumer.seen;
    assert_eq!(stats.events_failed, 0, "the intake refused deliveries");
    assert_eq!(intake.refused.load(Ordering::SeqCst), 0);
    assert_eq!(seen.arrived as u64, stats.events_sent);
    assert!(
        seen.lost > 0 && seen.lost < seen.arrived,
        "{} lost",
        seen.lost
    );
    assert!(seen.dead_letters.is_empty(), "{:?}", seen.dead_letters);
    match faults {
        None => assert_eq!(seen.failed_deliveries, 0),
        // The worker's requests met the faults (its retries and redeliveries got through).
        Some(_) => assert!(stats.status_503 > 0, "{stats:?}"),
    }

    // Every record whose last event survived is right already.
    for entity in ENTITIES {
        let portal = portal_records(&sim, entity).await;
        let mirror = mirror_records(&db, entity).await;
        let mut settled = 0;
        for (&(e, id), &lost) in &seen.last_lost {
            if e != entity || lost {
                continue;
            }
            settled += 1;
            match (portal.get(&id), mirror.get(&id)) {
                (Some(record), Some(raw)) => assert_record_equals(entity, id, record, raw),
                (None, None) => {}
                (on_portal, in_mirror) => panic!(
                    "{entity} {id}: on the portal {}, in the mirror {}",
                    on_portal.is_some(),
                    in_mirror.is_some()
                ),
            }
        }
        assert!(settled > 50, "{entity}: only {settled} settled records");
    }

    // One incremental and one reconcile pass pick up what the lost events left.
    for entity in ENTITIES {
        for mode in [Mode::Incremental, Mode::Reconcile] {
            let summary = syncer(&client, service.store())
                .run(entity, mode, &SyncOptions::default())
                .await
                .unwrap();
            assert!(summary.completed, "{entity} {mode}: {summary:?}");
        }
        assert_mirror_equals_portal(&sim, &db, entity).await;
    }
}

/// Rounds of random adds, updates (some twice in one second) and deletes of both
/// entities. Returns how many events they raised.
async fn mutate_rounds(sim: Arc<RunningSim>, seed: u64) -> u64 {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
    let mut raised = 0;
    for round in 0..8 {
        for entity in ENTITIES {
            let request = MutateRequest {
                entity: sim_entity(entity),
                seed: seed * 100 + round,
                adds: rng.random_range(0..12),
                updates: rng.random_range(10..60),
                deletes: rng.random_range(0..8),
            };
            raised += events_of(&sim.mutate_with_repeats(&request, 0.2).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
    }
    raised
}

#[tokio::test]
async fn the_mirror_converges_on_the_portal_through_lost_doubled_and_reordered_events() {
    converges(None, 21).await;
}

#[tokio::test]
async fn the_mirror_converges_with_simulator_faults_on() {
    converges(
        Some("503=0.1,500=0.05,latency=50@0.2,drop_before=0.02,truncate=0.02,seed=5"),
        22,
    )
    .await;
}
