//! The Lambda adapter of the scheduled sync: an EventBridge Scheduler `Input` in, the per-entity summaries out.
//! A run refused by the deletion guard fails the invocation (its message says how to
//! confirm); a run that found another one under way is a summary with outcome
//! `already_running`.

use std::time::Instant;

use b24_lambda::{FunctionError, invocation_deadline};
use b24_sync::{SyncError, SyncRequest, SyncService};
use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// Parses the schedule's input, naming what is wrong when it is not a sync request.
pub fn parse_request(payload: Value) -> Result<SyncRequest, FunctionError> {
    if payload.get("detail-type").is_some() {
        return Err(FunctionError::BadInput("got an EventBridge envelope instead of a sync request: set the schedule's Input to \
                    {\"portal\":\"...\",\"entities\":[...],\"mode\":\"incremental|full|resume|reconcile\"} \
                    (optionally \"confirm_deletes\":true)"
            .into()));
    }
    serde_json::from_value(payload)
        .map_err(|e| FunctionError::BadInput(format!("invalid sync request: {e}")))
}

pub async fn handle(
    service: &SyncService,
    event: LambdaEvent<Value>,
) -> Result<Value, FunctionError> {
    let request = parse_request(event.payload)?;
    let deadline = invocation_deadline(&event.context);
    let remaining_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    tracing::info!(portal = %request.portal, mode = %request.mode, remaining_ms, "sync request");
    match service.handle(&request, Some(deadline)).await {
        Ok(outcomes) => Ok(serde_json::json!({ "runs": outcomes })),
        // Failing the invocation makes the failure visible (Errors metric, retry policy,
        // the schedule's dead-letter queue); the log line above it carries the details.
        Err((_, error)) => Err(classify(error)),
    }
}

/// A configuration problem needs an operator; a refused mass deletion needs the same
/// input with `confirm_deletes`; anything else (portal, database) may pass on a retry.
fn classify(error: SyncError) -> FunctionError {
    match error {
        SyncError::Config(_) => FunctionError::Configuration(error.to_string()),
        SyncError::Refused(_) => FunctionError::BadInput(error.to_string()),
        _ => FunctionError::Transient(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_domain::entity::Entity;
    use b24_domain::sync::Mode;
    use b24_lambda::deadline::unix_now_ms;
    use b24_sim::{RunningSim, SimConfig};
    use b24_testkit::TestDb;
    use lambda_runtime::Context;
    use serde_json::json;

    #[test]
    fn parses_a_schedule_input() {
        let request = parse_request(
            json!({"portal": "acme", "entities": ["deal", "contact"], "mode": "incremental"}),
        )
        .unwrap();
        assert_eq!(request.portal, "acme");
        assert_eq!(request.entities, Some(vec![Entity::Deal, Entity::Contact]));
        assert_eq!(request.mode, Mode::Incremental);
        assert!(!request.confirm_deletes);
        let request = parse_request(json!({"portal": "acme", "mode": "full"})).unwrap();
        assert_eq!(request.entities, None);
        // A one-off invocation that lets a checked mass deletion through.
        let request =
            parse_request(json!({"portal": "acme", "mode": "reconcile", "confirm_deletes": true}))
                .unwrap();
        assert!(request.confirm_deletes);
    }

    #[test]
    fn every_sample_event_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/sync-scheduled");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let payload: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            parse_request(payload).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn names_what_is_wrong() {
        let bad_input = |payload: Value| {
            let error = parse_request(payload).unwrap_err();
            assert_eq!(error.error_type(), "BadInput", "{error}");
            error.to_string()
        };
        let err = bad_input(json!({"portal": "acme", "mode": "hourly"}));
        assert!(err.contains("hourly"), "{err}");
        let err = bad_input(json!({"portal": "acme", "mode": "full", "entity": "deal"}));
        assert!(err.contains("entity"), "{err}");
        let err = bad_input(json!({"portal": "acme", "entities": ["invoice"], "mode": "full"}));
        assert!(err.contains("invoice"), "{err}");
        let err = bad_input(
            json!({"detail-type": "Scheduled Event", "source": "aws.scheduler", "detail": "{}"}),
        );
        assert!(err.contains("Input"), "{err}");
    }

    /// The whole adapter: a schedule input in, summaries out, the mirror written, and a
    /// failing entity failing the invocation without stopping the others.
    /// A simulated portal `acme` whose `entities` sync into a throw-away database.
    /// Keep all three: dropping one stops the simulator or drops the database.
    async fn acme(sim: SimConfig, entities: &[&str]) -> (RunningSim, TestDb, SyncService) {
        let sim = b24_sim::start(sim).await.unwrap();
        let db = TestDb::create().await;
        let config = json!({
            "database": {"url": db.url},
            "portals": {"acme": {"webhook_url": sim.webhook_url(), "entities": entities}},
        });
        let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
        let service = SyncService::connect(config, true).await.unwrap();
        (sim, db, service)
    }

    #[tokio::test]
    async fn handles_a_schedule_input_end_to_end() {
        let portal = SimConfig {
            deals: 700,
            contacts: 300,
            ..Default::default()
        };
        let (_sim, _db, service) = acme(portal, &["deal", "contact"]).await;
        let mut context = Context::default();
        context.deadline = unix_now_ms() + 900_000;

        let event = LambdaEvent::new(json!({"portal": "acme", "mode": "full"}), context.clone());
        let answer = handle(&service, event).await.unwrap();
        let runs = answer["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (
                runs[0]["entity"].as_str(),
                runs[0]["rows_inserted"].as_u64()
            ),
            (Some("deal"), Some(700))
        );
        assert_eq!(
            (
                runs[1]["entity"].as_str(),
                runs[1]["rows_inserted"].as_u64()
            ),
            (Some("contact"), Some(300))
        );

        // An unknown portal and bad input fail the invocation with a clear message.
        let event = LambdaEvent::new(json!({"portal": "nope", "mode": "full"}), context.clone());
        let error = handle(&service, event).await.unwrap_err();
        assert_eq!(error.error_type(), "Configuration");
        let error = error.to_string();
        assert!(error.contains("nope") && error.contains("acme"), "{error}");
        let event = LambdaEvent::new(json!({"portal": "acme"}), context);
        let error = handle(&service, event).await.unwrap_err();
        assert_eq!(error.error_type(), "BadInput");
        assert!(error.to_string().contains("mode"), "{error}");
    }

    /// A mass deletion fails the invocation with the counts and how to confirm; an
    /// invocation with `confirm_deletes` applies it.
    #[tokio::test]
    async fn a_refused_deletion_fails_the_invocation_until_confirmed() {
        let portal = SimConfig {
            deals: 600,
            ..Default::default()
        };
        let (sim, _db, service) = acme(portal, &["deal"]).await;
        let mut context = Context::default();
        context.deadline = 600_000;
        let invoke = |payload: Value| handle(&service, LambdaEvent::new(payload, context.clone()));

        invoke(json!({"portal": "acme", "mode": "full"}))
            .await
            .unwrap();
        let hidden = sim
            .hide_records(b24_sim::Entity::Deal, 0.5, 3)
            .await
            .unwrap();
        let error = invoke(json!({"portal": "acme", "mode": "reconcile"}))
            .await
            .unwrap_err();
        assert_eq!(error.error_type(), "BadInput");
        let error = error.to_string();
        assert!(
            error.contains(&format!("would soft-delete {hidden} of 600 live rows")),
            "{error}"
        );
        assert!(error.contains("confirm_deletes"), "{error}");
        let answer =
            invoke(json!({"portal": "acme", "mode": "reconcile", "confirm_deletes": true}))
                .await
                .unwrap();
        assert_eq!(
            answer["runs"][0]["rows_deleted"].as_u64(),
            Some(hidden as u64)
        );
        assert_eq!(answer["runs"][0]["outcome"].as_str(), Some("completed"));
    }
}
