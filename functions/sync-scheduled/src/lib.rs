//! The Lambda adapter of the scheduled sync: an EventBridge Scheduler `Input` in, the per-entity summaries out.
//! A run refused by the deletion guard fails the invocation (its message says how to
//! confirm); a run that found another one under way is a summary with outcome
//! `already_running`. Each entity's run reports one EMF metrics line (see [`run_metrics`]).

use std::time::Instant;

use b24_domain::sync::RunOutcome;
use b24_lambda::metrics::{MetricSet, Metrics};
use b24_lambda::{FunctionError, invocation_deadline};
use b24_sync::{EntityOutcome, SyncError, SyncRequest, SyncService};
use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "sync-scheduled";

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

/// One invocation, its metrics on stdout.
pub async fn handle(
    service: &SyncService,
    event: LambdaEvent<Value>,
) -> Result<Value, FunctionError> {
    let deadline = invocation_deadline(&event.context);
    sync(service, &Metrics::stdout(), event.payload, Some(deadline)).await
}

/// Runs the sync request `payload` until `deadline` and reports each entity's run to
/// `metrics`.
pub async fn sync(
    service: &SyncService,
    metrics: &Metrics,
    payload: Value,
    deadline: Option<Instant>,
) -> Result<Value, FunctionError> {
    let request = parse_request(payload)?;
    let remaining_ms = deadline.map(|deadline| {
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    });
    tracing::info!(portal = %request.portal, mode = %request.mode, remaining_ms, "sync request");
    let result = service.handle(&request, deadline).await;
    let outcomes = match &result {
        Ok(outcomes) | Err((outcomes, _)) => outcomes,
    };
    for outcome in outcomes {
        metrics.emit(&run_metrics(outcome));
    }
    match result {
        Ok(outcomes) => Ok(serde_json::json!({ "runs": outcomes })),
        // Failing the invocation makes the failure visible (Errors metric, retry policy,
        // the schedule's dead-letter queue); the log line above it carries the details.
        Err((_, error)) => Err(classify(error)),
    }
}

/// One entity run's metrics, by Function, Portal, Entity and Mode: what the run read,
/// wrote and deleted, what it cost at the portal, how long it took, and how it ended
/// (`RunsFailed`, `RunsRefused`, `RunsStopped` at the time box, `RunsSkipped` when
/// another run held the lock: 1 or 0). A run that failed reports only how it ended.
pub fn run_metrics(outcome: &EntityOutcome) -> MetricSet {
    let (portal, entity, mode, ended) = match outcome {
        EntityOutcome::Done(summary) => (
            &summary.portal,
            &summary.entity,
            &summary.mode,
            summary.outcome,
        ),
        EntityOutcome::Failed {
            portal,
            entity,
            mode,
            outcome,
            ..
        } => (portal, entity, mode, Some(*outcome)),
    };
    let ended_as = |wanted: RunOutcome| u64::from(ended == Some(wanted));
    let set = MetricSet::new()
        .dimension("Function", FUNCTION)
        .dimension("Portal", portal)
        .dimension("Entity", entity)
        .dimension("Mode", mode)
        .count("RunsFailed", ended_as(RunOutcome::Failed))
        .count("RunsRefused", ended_as(RunOutcome::Refused))
        .count("RunsStopped", ended_as(RunOutcome::Stopped))
        .count("RunsSkipped", ended_as(RunOutcome::AlreadyRunning));
    let EntityOutcome::Done(summary) = outcome else {
        return set;
    };
    set.counts(summary.counts()).durations(summary.durations())
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
        let mut modes = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let payload: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let request =
                parse_request(payload).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            modes.insert(request.mode.to_string());
        }
        // One sample per mode a schedule runs.
        let expected = ["full", "incremental", "reconcile", "reference", "resume"];
        assert_eq!(modes.into_iter().collect::<Vec<_>>(), expected);
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

    /// Each entity's run reports one EMF line whose rows match the run's summary, and a
    /// refused run reports itself as refused.
    #[tokio::test]
    async fn each_run_reports_its_metrics() {
        let portal = SimConfig {
            deals: 700,
            contacts: 300,
            ..Default::default()
        };
        let (sim, _db, service) = acme(portal, &["deal", "contact"]).await;
        let sink = b24_lambda::metrics::MemorySink::new();
        let metrics = sink.metrics();
        let answer = sync(
            &service,
            &metrics,
            json!({"portal": "acme", "mode": "full"}),
            None,
        )
        .await
        .unwrap();
        let lines = sink.documents().unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for ((line, run), (entity, rows)) in lines
            .iter()
            .zip(answer["runs"].as_array().unwrap())
            .zip([("deal", 700.0), ("contact", 300.0)])
        {
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([["Function", "Portal", "Entity", "Mode"]])
            );
            assert_eq!(
                (
                    &line["Function"],
                    &line["Portal"],
                    &line["Entity"],
                    &line["Mode"]
                ),
                (
                    &json!(FUNCTION),
                    &json!("acme"),
                    &json!(entity),
                    &json!("full")
                )
            );
            assert_eq!(line["RowsWritten"], rows, "{line}");
            assert_eq!(line["RowsRead"], rows, "{line}");
            assert_eq!(line["RowsUnchanged"], 0.0);
            assert_eq!(line["RowsDeleted"], 0.0);
            assert_eq!(
                line["BitrixRequests"],
                run["http_requests"].as_f64().unwrap()
            );
            assert!(line["BitrixRequests"].as_f64().unwrap() > 0.0);
            assert_eq!(line["Throttled503"], run["throttled_503"].as_f64().unwrap());
            assert_eq!(line["Throttled429"], run["throttled_429"].as_f64().unwrap());
            assert_eq!(line["OperatingSeconds"], run["operating_seconds"]);
            assert_eq!(line["RunSeconds"], run["seconds"]);
            for ended in ["RunsFailed", "RunsRefused", "RunsStopped", "RunsSkipped"] {
                assert_eq!(line[ended], 0.0, "{ended}");
            }
        }

        // A reconcile the guard refuses: reported as refused, with no row counts.
        sim.hide_records(b24_sim::Entity::Deal, 0.5, 3)
            .await
            .unwrap();
        let sink = b24_lambda::metrics::MemorySink::new();
        let request = json!({"portal": "acme", "entities": ["deal"], "mode": "reconcile"});
        sync(&service, &sink.metrics(), request, None)
            .await
            .unwrap_err();
        let lines = sink.documents().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            (&lines[0]["Mode"], &lines[0]["RunsRefused"]),
            (&json!("reconcile"), &json!(1))
        );
        assert_eq!(lines[0]["RunsFailed"], 0.0);
        assert!(lines[0].get("RowsWritten").is_none());
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
