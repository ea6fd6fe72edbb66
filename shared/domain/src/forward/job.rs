//! The forward job: what the robot handler puts on the forward queue and the
//! forwarder takes off it, serialised as JSON. Like the change message it is a hint:
//! the forwarder re-reads the deal, so a redelivered job forwards the current deal
//! again and updates the target deal it made the first time.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::change::MAX_RECORD_ID;

/// Forward one deal along one route.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardJob {
    /// The configured route name.
    pub route: String,
    /// The configured name of the portal the deal is on (the route's source).
    pub source: String,
    pub deal_id: u64,
    /// When the robot handler accepted the call.
    pub received_at: DateTime<Utc>,
    /// The application robot's `event_token`, for `bizproc.event.send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_token: Option<String>,
    /// The robot waits for `bizproc.event.send` (`use_subscription` `Y`).
    #[serde(default)]
    pub waits_for_reply: bool,
    /// The application robot's `properties[...]` as the portal sent them.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
}

impl fmt::Debug for ForwardJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardJob")
            .field("route", &self.route)
            .field("source", &self.source)
            .field("deal_id", &self.deal_id)
            .field("received_at", &self.received_at)
            .field("event_token", &self.event_token.as_ref().map(|_| "***"))
            .field("waits_for_reply", &self.waits_for_reply)
            .field("properties", &self.properties)
            .finish()
    }
}

/// Why a queue body is not a forward job; the text names the problem, never the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a forward job: {0}")]
pub struct InvalidForwardJob(String);

impl ForwardJob {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a forward job always serialises")
    }

    pub fn from_json(body: &str) -> Result<ForwardJob, InvalidForwardJob> {
        let job: ForwardJob = serde_json::from_str(body).map_err(|e| {
            // serde_json names the line and column and what it expected, never the text.
            InvalidForwardJob(e.to_string())
        })?;
        if job.deal_id == 0 || job.deal_id > MAX_RECORD_ID {
            return Err(InvalidForwardJob(format!(
                "deal_id {} is outside 1..={MAX_RECORD_ID}",
                job.deal_id
            )));
        }
        if job.route.is_empty() {
            return Err(InvalidForwardJob("route is empty".into()));
        }
        if job.source.is_empty() {
            return Err(InvalidForwardJob("source is empty".into()));
        }
        if job.waits_for_reply && job.event_token.as_deref().is_none_or(str::is_empty) {
            return Err(InvalidForwardJob(
                "waits_for_reply is true but there is no event_token to reply with".into(),
            ));
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ForwardJob {
        ForwardJob {
            route: "partner-to-central".into(),
            source: "partner".into(),
            deal_id: 123,
            received_at: "2026-12-01T13:00:00.5Z".parse().unwrap(),
            event_token: Some("55c1dc1c3f0d75.78875596|A51601_82584|hsyUws1j4".into()),
            waits_for_reply: true,
            properties: Map::from_iter([("comment".to_string(), Value::from("urgent"))]),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let job = job();
        assert_eq!(ForwardJob::from_json(&job.to_json()).unwrap(), job);
    }

    #[test]
    fn a_webhook_robot_job_has_only_the_required_keys() {
        let job = ForwardJob {
            event_token: None,
            waits_for_reply: false,
            properties: Map::new(),
            ..job()
        };
        assert_eq!(
            job.to_json(),
            r#"{"route":"partner-to-central","source":"partner","deal_id":123,"received_at":"2026-12-01T13:00:00.500Z","waits_for_reply":false}"#
        );
        let minimal =
            r#"{"route":"r","source":"s","deal_id":1,"received_at":"2026-12-01T13:00:00Z"}"#;
        let read = ForwardJob::from_json(minimal).unwrap();
        assert!(!read.waits_for_reply && read.event_token.is_none() && read.properties.is_empty());
    }

    #[test]
    fn unknown_keys_are_ignored_so_producers_can_add_some() {
        let body = r#"{"route":"r","source":"s","deal_id":1,"received_at":"2026-12-01T13:00:00Z","newer":true}"#;
        assert!(ForwardJob::from_json(body).is_ok());
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let cases = [
            ("{", "EOF while parsing"),
            (
                r#"{"route":"r","source":"s","received_at":"2026-12-01T13:00:00Z"}"#,
                "missing field `deal_id`",
            ),
            (
                r#"{"route":"r","source":"s","deal_id":0,"received_at":"2026-12-01T13:00:00Z"}"#,
                "deal_id 0 is outside",
            ),
            (
                r#"{"route":"r","source":"s","deal_id":9223372036854775808,"received_at":"2026-12-01T13:00:00Z"}"#,
                "is outside",
            ),
            (
                r#"{"route":"","source":"s","deal_id":1,"received_at":"2026-12-01T13:00:00Z"}"#,
                "route is empty",
            ),
            (
                r#"{"route":"r","source":"","deal_id":1,"received_at":"2026-12-01T13:00:00Z"}"#,
                "source is empty",
            ),
            (
                r#"{"route":"r","source":"s","deal_id":1,"received_at":"2026-12-01T13:00:00Z","waits_for_reply":true}"#,
                "no event_token",
            ),
            (
                r#"{"route":"r","source":"s","deal_id":-1,"received_at":"2026-12-01T13:00:00Z"}"#,
                "invalid value",
            ),
        ];
        for (body, reason) in cases {
            let error = ForwardJob::from_json(body).unwrap_err().to_string();
            assert!(error.starts_with("not a forward job: "), "{error}");
            assert!(error.contains(reason), "{body}: {error}");
        }
    }

    #[test]
    fn debug_hides_the_event_token() {
        let shown = format!("{:?}", job());
        assert!(!shown.contains("hsyUws1j4"), "{shown}");
        assert!(shown.contains("event_token: Some(\"***\")"), "{shown}");
    }
}
