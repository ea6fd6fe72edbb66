//! The Lambda adapter of back-sync: a drain request in (`{}` or `{"portal": "acme"}`),
//! what each portal entity's drain did out (see [`b24_sync::PushSummary`]). A drain that
//! failed fails the invocation after the others ran (its rows wait for their retry in
//! the outbox); each drain reports one EMF metrics line ([`push_metrics`]).

use std::time::Instant;

use b24_lambda::metrics::{MetricSet, Metrics};
use b24_lambda::{FunctionError, invocation_deadline};
use b24_sync::{PushSummary, SyncError, SyncService};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::{Value, json};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "back-sync";

/// What to drain: one portal, or every portal with back-sync on.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    #[serde(default)]
    pub portal: Option<String>,
}

/// Reads the schedule's input, naming what is wrong. An EventBridge envelope (a schedule
/// without an explicit input) drains every portal, as `{}` does.
pub fn parse_request(payload: Value) -> Result<PushRequest, FunctionError> {
    if payload.is_null() || payload.get("detail-type").is_some() {
        return Ok(PushRequest::default());
    }
    serde_json::from_value(payload).map_err(|e| {
        FunctionError::BadInput(format!(
            "invalid back-sync request: {e}; expected {{}} or {{\"portal\":\"NAME\"}}"
        ))
    })
}

/// One invocation, its metrics on stdout.
pub async fn handle(
    service: &SyncService,
    event: LambdaEvent<Value>,
) -> Result<Value, FunctionError> {
    let deadline = invocation_deadline(&event.context);
    push(service, &Metrics::stdout(), event.payload, Some(deadline)).await
}

/// Drains what `payload` names until `deadline`, reporting each drain to `metrics`.
pub async fn push(
    service: &SyncService,
    metrics: &Metrics,
    payload: Value,
    deadline: Option<Instant>,
) -> Result<Value, FunctionError> {
    let request = parse_request(payload)?;
    tracing::info!(
        portal = request
            .portal
            .as_deref()
            .unwrap_or("(every portal with back-sync on)"),
        "back-sync request"
    );
    let result = service.push(request.portal.as_deref(), deadline).await;
    let summaries = match &result {
        Ok(summaries) | Err((summaries, _)) => summaries,
    };
    for summary in summaries {
        metrics.emit(&push_metrics(summary));
    }
    match result {
        Ok(summaries) => Ok(json!({ "pushes": summaries })),
        Err((_, error)) => Err(classify(error)),
    }
}

/// One drain's metrics by Function, Portal and Entity: outbox rows, records created,
/// updated and deleted, those already applied, conflicts, failed and retried pushes, the
/// Bitrix24 requests and throttled answers, and the portal's operating time and the
/// drain's own.
pub fn push_metrics(summary: &PushSummary) -> MetricSet {
    MetricSet::new()
        .dimension("Function", FUNCTION)
        .dimension("Portal", &summary.portal)
        .dimension("Entity", &summary.entity)
        .counts(summary.counts())
        .durations(summary.durations())
}

/// A configuration problem (back-sync off for the portal named, an unknown portal)
/// needs an operator; anything else may pass on the next run.
fn classify(error: SyncError) -> FunctionError {
    match error {
        SyncError::Config(_) => FunctionError::Configuration(error.to_string()),
        _ => FunctionError::Transient(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_lambda::metrics::MemorySink;
    use b24_sim::{RunningSim, SimConfig};
    use b24_testkit::TestDb;

    #[test]
    fn reads_its_input_and_names_what_is_wrong() {
        assert_eq!(parse_request(json!({})).unwrap(), PushRequest::default());
        assert_eq!(parse_request(Value::Null).unwrap(), PushRequest::default());
        assert_eq!(
            parse_request(json!({"portal": "acme"}))
                .unwrap()
                .portal
                .as_deref(),
            Some("acme")
        );
        // A schedule without an explicit input sends its envelope: every portal.
        let envelope = json!({"detail-type": "Scheduled Event", "source": "aws.scheduler"});
        assert_eq!(parse_request(envelope).unwrap(), PushRequest::default());
        let error = parse_request(json!({"portals": ["acme"]})).unwrap_err();
        assert_eq!(error.error_type(), "BadInput");
        assert!(error.to_string().contains("portals"), "{error}");
        for entry in std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/back-sync"
        ))
        .unwrap()
        {
            let path = entry.unwrap().path();
            let payload: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            parse_request(payload).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    /// Portal `acme` with back-sync on and `quiet` with it off, both synced.
    async fn portals() -> (RunningSim, TestDb, SyncService) {
        let sim = b24_sim::start(SimConfig {
            deals: 30,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let db = TestDb::create().await;
        let config = json!({
            "database": {"url": db.url},
            "portals": {
                "acme": {"webhook_url": sim.webhook_url(), "entities": ["deal"], "back_sync": {"enabled": true}},
                "quiet": {"webhook_url": sim.webhook_url(), "domain": "quiet.example.com", "entities": ["deal"]},
            },
        });
        let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
        let service = SyncService::connect(config, true).await.unwrap();
        for portal in ["acme", "quiet"] {
            let request =
                serde_json::from_value(json!({"portal": portal, "mode": "full"})).unwrap();
            service.handle(&request, None).await.unwrap();
        }
        (sim, db, service)
    }

    #[tokio::test]
    async fn pushes_every_portal_with_back_sync_on_and_reports_each_drain() {
        let (sim, db, service) = portals().await;
        let c = db.client().await;
        c.batch_execute(
            "UPDATE b24.deal__acme SET title = 'pushed' WHERE id = 2;
             UPDATE b24.deal__quiet SET title = 'waits' WHERE id = 3;",
        )
        .await
        .unwrap();
        let sink = MemorySink::new();
        let answer = push(&service, &sink.metrics(), json!({}), None)
            .await
            .unwrap();
        let pushes = answer["pushes"].as_array().unwrap();
        assert_eq!(pushes.len(), 1, "{answer}");
        assert_eq!(
            (pushes[0]["portal"].as_str(), pushes[0]["updated"].as_u64()),
            (Some("acme"), Some(1))
        );
        let deals = sim.dump(b24_sim::Entity::Deal).await.unwrap();
        let title = |id: &str| deals.iter().find(|d| d["ID"] == id).unwrap()["TITLE"].clone();
        assert_eq!(title("2"), "pushed");
        assert_ne!(title("3"), "waits", "back-sync is off for quiet");
        let lines = sink.documents().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["Function"], FUNCTION);
        assert_eq!(lines[0]["Portal"], "acme");
        assert_eq!(lines[0]["Updated"], 1);
        assert_eq!(lines[0]["OutboxRows"], 1);

        // Naming a portal with back-sync off says how to turn it on.
        let error = push(&service, &sink.metrics(), json!({"portal": "quiet"}), None)
            .await
            .unwrap_err();
        assert_eq!(error.error_type(), "Configuration");
        assert!(
            error
                .to_string()
                .contains("portals.quiet.back_sync.enabled"),
            "{error}"
        );
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM b24._outbox WHERE portal = 'quiet' AND state = 'pending'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(waiting, 1, "the edit waits in the outbox");
    }
}
