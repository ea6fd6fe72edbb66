//! Forwarding deals between two simulated portals: what arrives, updates instead of
//! duplicates, replies, request counts and the errors that name the problem.

mod common;

use b24_client::Client;
use b24_domain::forward::job::ForwardJob;
use b24_forward::{Attempt, ForwardError, Requests};
use b24_sim::{AppRobotCall, Entity};
use b24_store::{ForwardKey, ForwardState};
use serde_json::json;

use common::*;

/// The ID of the enumeration item labelled `label` in `field` of the client's portal.
async fn item_id(client: &Client, field: &str, label: &str) -> String {
    let fields = client
        .call("crm.deal.fields", &json!({}))
        .await
        .unwrap()
        .result;
    fields[field]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["VALUE"] == label)
        .unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn download(sim_base: &str, url: &str) -> Vec<u8> {
    reqwest::get(format!("{sim_base}{url}"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_deal_arrives_mapped_with_rows_and_file_then_a_second_run_updates_it() {
    let portals = Portals::start(0).await;
    let source = portals.source_client();
    let target_client = Client::new(
        b24_domain::webhook::WebhookUrl::parse(&portals.target.webhook_url()).unwrap(),
        Default::default(),
    )
    .unwrap();
    let source_item = item_id(&source, &portals.source_colour, "List item #2").await;
    let target_item = item_id(&target_client, &portals.target_colour, "List item #2").await;
    assert_ne!(
        source_item, target_item,
        "the test needs different item IDs"
    );
    let contract = b"%PDF-1.4 the signed contract".to_vec();
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&contract)
    };
    let deal_id = add_source_deal(
        &source,
        json!({
            "TITLE": "Wind farm", "OPPORTUNITY": 125000, "STAGE_ID": "PREPARATION",
            (portals.source_colour.as_str()): source_item,
            (portals.source_file.as_str()): {"fileData": ["contract.pdf", encoded]},
            "ASSIGNED_BY_ID": 1,
        }),
    )
    .await;
    set_rows(
        &source,
        deal_id,
        json!([
            {"PRODUCT_NAME": "Turbine", "PRICE": 1000, "QUANTITY": 10},
            {"PRODUCT_NAME": "Tower", "PRICE": 500, "QUANTITY": 2},
        ]),
    )
    .await
    .unwrap();

    let robot = portals
        .source
        .fire_app_robot(&AppRobotCall {
            url: Some(format!("{}/robot", portals.source.base_url())),
            deal_id,
            code: "full".into(),
            properties: Default::default(),
            use_subscription: Some(true),
        })
        .await
        .unwrap();
    let token = robot
        .event_token
        .expect("an application robot gets an event token");
    let robot_job = ForwardJob {
        event_token: Some(token.clone()),
        waits_for_reply: true,
        ..job("full", deal_id)
    };
    let service = portals.service(quick_client()).await;
    let first = service
        .forward(&robot_job, Attempt::ONLY, None)
        .await
        .unwrap();
    assert!(first.created && first.replied, "{first:?}");
    assert_eq!(first.product_rows, 2);
    assert_eq!(first.files, 1);
    // Metadata not cached yet: still one reading and one writing request per portal.
    assert_eq!(
        first.requests,
        Requests {
            source: 2,
            target: 2
        }
    );

    let copies = portals.copies_of(deal_id).await;
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    let target_id = first.target_deal_id;
    assert_eq!(copy["ID"], json!(target_id.to_string()));
    assert_eq!(copy["TITLE"], "Wind farm");
    assert_eq!(copy["OPPORTUNITY"], "125000.00");
    assert_eq!(copy["STAGE_ID"], "EXECUTING", "stage mapped by ID");
    assert_eq!(
        copy[&portals.target_colour],
        json!(target_item),
        "enumeration mapped by label"
    );
    assert_eq!(copy["SOURCE_ID"], "PARTNER");
    assert_eq!(copy["COMMENTS"], "from a partner");
    assert_eq!(copy[&portals.from_portal], "partner");
    assert_eq!(copy[&portals.from_deal], json!(deal_id.to_string()));
    assert!(
        copy[&portals.forwarded_at]
            .as_str()
            .is_some_and(|at| !at.is_empty())
    );
    let file_url = copy[&portals.target_file]["downloadUrl"].as_str().unwrap();
    assert_eq!(
        download(&portals.target.base_url(), file_url).await,
        contract
    );

    let rows = target_client
        .call("crm.deal.productrows.get", &json!({ "id": target_id }))
        .await
        .unwrap()
        .result;
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["PRODUCT_NAME"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Turbine", "Tower"]);

    let comments = portals.source.timeline_comments().await.unwrap();
    let comment = comments.last().unwrap().to_string();
    assert!(
        comment.contains(&format!("deal {target_id}"))
            && comment.contains(&format!(
                "https://{TARGET_DOMAIN}/crm/deal/details/{target_id}/"
            )),
        "{comment}"
    );
    let replies = portals.source.workflow_replies().await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["EVENT_TOKEN"], json!(token));
    let returned = replies[0]["RETURN_VALUES"].to_string();
    assert!(
        returned.contains(&format!("\"{target_id}\"")) && returned.contains("crm/deal/details"),
        "{returned}"
    );

    // The robot runs again after the deal changed: the copy is updated, not duplicated.
    source
        .call(
            "crm.deal.update",
            &json!({"id": deal_id, "fields": {"TITLE": "Wind farm II", "STAGE_ID": "NEW"}}),
        )
        .await
        .unwrap();
    let second = service
        .forward(&job("full", deal_id), Attempt::ONLY, None)
        .await
        .unwrap();
    assert!(!second.created && !second.replied);
    assert_eq!(second.target_deal_id, target_id);
    // The ledger knows the deal and the metadata is cached: no look-up needed.
    assert_eq!(
        second.requests,
        Requests {
            source: 2,
            target: 1
        }
    );
    let copies = portals.copies_of(deal_id).await;
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["TITLE"], "Wind farm II");
    assert_eq!(copies[0]["STAGE_ID"], "NEW");
    let entry = service
        .store()
        .ledger_entry(&ForwardKey::new("full", "partner", deal_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.forwards, 2);
    assert_eq!(entry.state, ForwardState::Done);
    assert_eq!(entry.target_deal_id, Some(target_id));
}

#[tokio::test]
async fn a_deal_with_product_rows_costs_two_requests_per_portal_with_metadata_cached() {
    let portals = Portals::start(3).await;
    let source = portals.source_client();
    for deal_id in 1..=3 {
        set_rows(
            &source,
            deal_id,
            json!([{"PRODUCT_NAME": "Part", "PRICE": 10, "QUANTITY": 1}]),
        )
        .await
        .unwrap();
    }
    let service = portals.service(quick_client()).await;
    service
        .forward(&job("plain", 1), Attempt::ONLY, None)
        .await
        .unwrap();
    for deal_id in 2..=3 {
        portals.source.reset_stats().await.unwrap();
        portals.target.reset_stats().await.unwrap();
        let outcome = service
            .forward(&job("plain", deal_id), Attempt::ONLY, None)
            .await
            .unwrap();
        assert!(outcome.created && outcome.product_rows == 1);
        assert_eq!(
            outcome.requests,
            Requests {
                source: 2,
                target: 2
            }
        );
        // What the portals saw agrees.
        assert_eq!(portals.source.stats().await.unwrap().http_requests, 2);
        assert_eq!(portals.target.stats().await.unwrap().http_requests, 2);
    }
}

#[tokio::test]
async fn a_missing_deal_is_permanent_recorded_and_notified() {
    let portals = Portals::start(1).await;
    let service = portals.service(quick_client()).await;
    let error = service
        .forward(
            &job("plain", 4242),
            Attempt {
                receive_count: 1,
                max_receives: 5,
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ForwardError::DealNotFound { .. }),
        "{error}"
    );
    assert!(error.is_permanent());
    let text = error.to_string();
    assert!(
        text.contains("deal 4242") && text.contains("partner"),
        "{text}"
    );
    assert!(!text.contains("simsecret"), "{text}");
    let entry = service
        .store()
        .ledger_entry(&ForwardKey::new("plain", "partner", 4242))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.state, ForwardState::Failed);
    assert!(entry.last_error.unwrap().contains("4242"));
    let notifications = portals.source.notifications().await.unwrap();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert!(notifications[0].to_string().contains("4242"));
    assert!(portals.copies_of(4242).await.is_empty());
}

#[tokio::test]
async fn an_unmapped_value_is_permanent_and_names_field_and_value() {
    let portals = Portals::start(0).await;
    let source = portals.source_client();
    let deal_id = add_source_deal(&source, json!({"TITLE": "Lost", "STAGE_ID": "LOSE"})).await;
    let service = portals.service(quick_client()).await;
    let error = service
        .forward(
            &job("strict", deal_id),
            Attempt {
                receive_count: 1,
                max_receives: 3,
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ForwardError::Mapping { .. }), "{error}");
    assert!(error.is_permanent());
    let text = error.to_string();
    assert!(
        text.contains("STAGE_ID") && text.contains("\"LOSE\"") && text.contains("strict"),
        "{text}"
    );
    assert!(portals.copies_of(deal_id).await.is_empty());
    let entry = service
        .store()
        .ledger_entry(&ForwardKey::new("strict", "partner", deal_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.state, ForwardState::Failed);
    assert_eq!(portals.source.notifications().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_job_for_another_portal_or_route_is_refused() {
    let portals = Portals::start(1).await;
    let service = portals.service(quick_client()).await;
    let foreign = ForwardJob {
        source: "central".into(),
        ..job("plain", 1)
    };
    let error = service
        .forward(&foreign, Attempt::ONLY, None)
        .await
        .unwrap_err();
    assert!(
        error.is_permanent() && error.to_string().contains("portal partner"),
        "{error}"
    );
    let error = service
        .forward(&job("nope", 1), Attempt::ONLY, None)
        .await
        .unwrap_err();
    assert!(
        error.is_permanent() && error.to_string().contains("\"nope\""),
        "{error}"
    );
}

#[tokio::test]
async fn concurrent_forwards_of_one_deal_make_one_target_deal() {
    let portals = Portals::start(1).await;
    let service = portals.service(quick_client()).await;
    let job = job("plain", 1);
    let runs = (0..5).map(|_| forward_until_done(&service, &job, 200));
    let outcomes = futures::future::join_all(runs).await;
    // One add at most: none when its answer was lost (a slow machine can time it
    // out) and the retry found the deal by its origin and updated it.
    let created = outcomes.iter().filter(|(o, _)| o.created).count();
    assert!(created <= 1, "{created} forwards added a deal");
    let ids: std::collections::BTreeSet<u64> =
        outcomes.iter().map(|(o, _)| o.target_deal_id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(portals.copies_of(1).await.len(), 1);
    let entry = service
        .store()
        .ledger_entry(&ForwardKey::new("plain", "partner", 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.forwards, 5);
}

#[tokio::test]
async fn a_refused_event_token_does_not_fail_a_forward_that_went_through() {
    let portals = Portals::start(0).await;
    let deal_id = add_source_deal(
        &portals.source_client(),
        json!({"TITLE": "T", "STAGE_ID": "NEW"}),
    )
    .await;
    let service = portals.service(quick_client()).await;
    // A token the portal never issued, as a spent one looks after an unseen reply.
    let job = ForwardJob {
        event_token: Some("55c1dc1c3f0d75.78875596|A51601_82584|forged".into()),
        waits_for_reply: true,
        ..job("full", deal_id)
    };
    let outcome = service.forward(&job, Attempt::ONLY, None).await.unwrap();
    assert!(outcome.created && !outcome.replied);
    assert_eq!(portals.copies_of(deal_id).await.len(), 1);
    assert_eq!(
        json!(portals.source.workflow_replies().await.unwrap()),
        json!([])
    );
}

#[tokio::test]
async fn contact_and_company_are_copied_once_and_bound_to_the_target_deal() {
    let portals = Portals::start(0).await;
    let source = portals.source_client();
    let contact = add_source_record(
        &source,
        "contact",
        json!({"NAME": "Anna", "LAST_NAME": "Berg", "PHONE": [{"VALUE": "+4930123456", "VALUE_TYPE": "WORK"}]}),
    )
    .await;
    let company = add_source_record(&source, "company", json!({"TITLE": "Acme"})).await;
    let first = add_source_deal(
        &source,
        json!({"TITLE": "First", "CONTACT_ID": contact, "COMPANY_ID": company}),
    )
    .await;
    let second = add_source_deal(&source, json!({"TITLE": "Second", "CONTACT_ID": contact})).await;
    let service = portals.service(quick_client()).await;
    let one = service
        .forward(&job("parties", first), Attempt::ONLY, None)
        .await
        .unwrap();
    // The parties ride in the same batches: still two requests per portal.
    assert_eq!(
        one.requests,
        Requests {
            source: 2,
            target: 2
        }
    );
    let two = service
        .forward(&job("parties", second), Attempt::ONLY, None)
        .await
        .unwrap();

    let contacts = portals.target.dump(Entity::Contact).await.unwrap();
    assert_eq!(
        contacts.len(),
        1,
        "the second deal finds the contact copied for the first"
    );
    let copy = &contacts[0];
    assert_eq!(copy["NAME"], "Anna");
    assert_eq!(copy["LAST_NAME"], "Berg");
    assert_eq!(copy["PHONE"][0]["VALUE"], "+4930123456");
    assert_eq!(
        copy["ORIGINATOR_ID"],
        json!(format!("b24sync:{SOURCE_DOMAIN}"))
    );
    assert_eq!(copy["ORIGIN_ID"], json!(contact.to_string()));
    let companies = portals.target.dump(Entity::Company).await.unwrap();
    assert_eq!(companies.len(), 1);
    assert_eq!(companies[0]["TITLE"], "Acme");

    let deals = portals.target.dump(Entity::Deal).await.unwrap();
    let deal = |id: u64| {
        deals
            .iter()
            .find(|d| d["ID"] == json!(id.to_string()))
            .unwrap()
            .clone()
    };
    assert_eq!(deal(one.target_deal_id)["CONTACT_ID"], copy["ID"]);
    assert_eq!(deal(one.target_deal_id)["COMPANY_ID"], companies[0]["ID"]);
    assert_eq!(deal(two.target_deal_id)["CONTACT_ID"], copy["ID"]);
    assert!(deal(two.target_deal_id)["COMPANY_ID"].is_null());
}

#[tokio::test]
async fn a_failure_is_pending_until_the_last_attempt_which_is_final_and_notified() {
    let portals = Portals::start(0).await;
    let source = portals.source_client();
    let deal_id = add_source_deal(&source, json!({"TITLE": "T", "ASSIGNED_BY_ID": 7})).await;
    portals.target.set_faults("500=1.0").await.unwrap();
    let service = portals.service(quick_client()).await;
    let key = ForwardKey::new("plain", "partner", deal_id);
    for receive_count in 1..=3 {
        let attempt = Attempt {
            receive_count,
            max_receives: 3,
        };
        let error = service
            .forward(&job("plain", deal_id), attempt, None)
            .await
            .unwrap_err();
        assert!(!error.is_permanent(), "{error}");
        assert!(error.to_string().contains("portal central"), "{error}");
        let entry = service.store().ledger_entry(&key).await.unwrap().unwrap();
        assert_eq!(entry.attempts, receive_count);
        assert!(entry.last_error.unwrap().contains("HTTP 500"));
        let notifications = portals.source.notifications().await.unwrap();
        if receive_count < 3 {
            assert_eq!(entry.state, ForwardState::Pending);
            assert!(notifications.is_empty());
        } else {
            assert_eq!(entry.state, ForwardState::Failed);
            assert_eq!(notifications.len(), 1);
            let note = notifications[0].to_string();
            assert!(
                note.contains(&format!("Deal {deal_id}")) && note.contains("HTTP 500"),
                "{note}"
            );
            assert_eq!(notifications[0]["USER_ID"], json!(7), "{note}");
        }
    }
    // The portal recovers: the next robot run forwards the deal.
    portals.target.set_faults("").await.unwrap();
    let outcome = service
        .forward(&job("plain", deal_id), Attempt::ONLY, None)
        .await
        .unwrap();
    assert!(outcome.created);
    let entry = service.store().ledger_entry(&key).await.unwrap().unwrap();
    assert_eq!(
        (entry.state, entry.attempts, entry.last_error),
        (ForwardState::Done, 0, None)
    );
}

#[tokio::test]
async fn a_passed_deadline_stops_the_forward_retryably() {
    let portals = Portals::start(1).await;
    let service = portals.service(quick_client()).await;
    let deadline = std::time::Instant::now();
    let error = service
        .forward(
            &job("plain", 1),
            Attempt {
                receive_count: 1,
                max_receives: 3,
            },
            Some(deadline),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ForwardError::OutOfTime(_)) && !error.is_permanent(),
        "{error}"
    );
    assert!(portals.copies_of(1).await.is_empty());
    let entry = service
        .store()
        .ledger_entry(&ForwardKey::new("plain", "partner", 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.state, ForwardState::Pending);
}

#[tokio::test]
async fn a_deal_hidden_from_the_webhook_is_permanent_and_says_so() {
    let portals = Portals::start(2).await;
    assert_eq!(
        portals
            .source
            .hide_records(Entity::Deal, 1.0, 1)
            .await
            .unwrap(),
        2
    );
    let service = portals.service(quick_client()).await;
    let error = service
        .forward(&job("plain", 2), Attempt::ONLY, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ForwardError::DealNotFound { deal_id: 2, .. }),
        "{error}"
    );
    assert!(error.is_permanent());
    let text = error.to_string();
    assert!(
        text.contains("hidden from the webhook's user") && text.contains("Access denied"),
        "{text}"
    );
    assert!(portals.target.dump(Entity::Deal).await.unwrap().is_empty());
}
