//! Faults on the target portal (answers lost after `crm.deal.add` was applied, 503s,
//! 500s, timeouts) and on the source (answers lost after the comment was added, 503s)
//! across 200 forwards of distinct deals, each delivered again until it succeeds as
//! SQS would: still exactly one target deal per source deal.

mod common;

use std::collections::BTreeMap;

use b24_sim::Entity;
use b24_store::{ForwardFilter, ForwardState};
use futures::StreamExt;

use common::*;

const DEALS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_on_the_target_leave_exactly_one_target_deal_per_source_deal() {
    let portals = Portals::start(DEALS as usize).await;
    portals
        .target
        .set_faults("drop_after=0.08,503=0.05,500=0.02,timeout=0.01,seed=11")
        .await
        .unwrap();
    // On the source, answers lost after the timeline comment was added: the retry
    // finds the deal in the ledger and updates it.
    portals
        .source
        .set_faults("drop_after=0.05,503=0.05,seed=5")
        .await
        .unwrap();
    let service = portals.service(quick_client()).await;
    let deliveries: Vec<u32> = futures::stream::iter(1..=DEALS)
        .map(|deal_id| {
            let service = &service;
            async move {
                forward_until_done(service, &job("plain", deal_id), 50)
                    .await
                    .1
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let redelivered = deliveries.iter().filter(|&&n| n > 1).count();
    assert!(
        redelivered > 0,
        "the faults should have failed some deliveries"
    );

    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for deal in portals.target.dump(Entity::Deal).await.unwrap() {
        let origin = deal["ORIGIN_ID"].as_str().unwrap_or_default().to_string();
        *copies.entry(origin).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "source deals with more than one copy: {twice:?}"
    );
    assert_eq!(copies.len() as u64, DEALS);
    for deal_id in 1..=DEALS {
        assert_eq!(copies.get(&deal_id.to_string()), Some(&1), "deal {deal_id}");
    }
    let ledger = service
        .store()
        .list_forwards(
            &ForwardFilter {
                route: Some("plain".into()),
                open_only: false,
            },
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(ledger.len() as u64, DEALS);
    for entry in &ledger {
        assert_eq!(entry.state, ForwardState::Done, "{entry:?}");
        assert!(
            !entry.ambiguous && entry.target_deal_id.is_some(),
            "{entry:?}"
        );
    }
    // Each forward here is the deal's first: an update means the look-up found a deal
    // whose add had been applied without its answer arriving.
    let stats = portals.target.stats().await.unwrap();
    let recovered = stats
        .requests_by_method
        .get("crm.deal.update")
        .copied()
        .unwrap_or(0);
    assert!(recovered > 0, "no lost add answer was recovered: {stats:?}");
    eprintln!("{redelivered} of {DEALS} deals needed more than one delivery");
}
