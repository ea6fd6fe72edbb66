//! The change message: what the webhook intake puts on the change queue and the change
//! worker takes off it. One typed contract for producer and consumer, serialised as JSON.
//!
//! A message is a hint, never the data: the worker re-reads the record from the portal,
//! so duplicates, reordering and a lost `Update` between two others change nothing.
//! Unknown keys are ignored on reading, so a newer producer can add fields before every
//! consumer knows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entity::Entity;

/// What the portal said happened to the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Add,
    Update,
    Delete,
}

/// One record of one portal changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMessage {
    /// The configured portal name (the key under `portals.` in the configuration).
    pub portal: String,
    pub entity: Entity,
    /// The record's Bitrix24 ID: positive and within PostgreSQL's bigint.
    pub id: u64,
    pub action: ChangeAction,
    /// When the portal raised the event (its `ts`), when the event said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<DateTime<Utc>>,
    /// When the intake accepted the event: the start of the change's lag.
    pub received_at: DateTime<Utc>,
}

/// Why a queue body is not a change message; the text names the problem, never the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a change message: {0}")]
pub struct InvalidChangeMessage(String);

/// The largest record ID a mirror can hold (`bigint`).
pub const MAX_RECORD_ID: u64 = i64::MAX as u64;

impl ChangeMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a change message always serialises")
    }

    pub fn from_json(body: &str) -> Result<ChangeMessage, InvalidChangeMessage> {
        let message: ChangeMessage =
            serde_json::from_str(body).map_err(|e| InvalidChangeMessage(e.to_string()))?;
        if message.id == 0 || message.id > MAX_RECORD_ID {
            return Err(InvalidChangeMessage(format!(
                "id {} is outside 1..={MAX_RECORD_ID}",
                message.id
            )));
        }
        if message.portal.is_empty() {
            return Err(InvalidChangeMessage("portal is empty".into()));
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChangeMessage {
        ChangeMessage {
            portal: "acme".into(),
            entity: Entity::Deal,
            id: 42,
            action: ChangeAction::Update,
            event_time: Some("2024-08-29T10:34:19Z".parse().unwrap()),
            received_at: "2024-08-29T10:34:20.125Z".parse().unwrap(),
        }
    }

    #[test]
    fn round_trips_through_json_with_stable_names() {
        let json = sample().to_json();
        assert_eq!(
            json,
            r#"{"portal":"acme","entity":"deal","id":42,"action":"update","event_time":"2024-08-29T10:34:19Z","received_at":"2024-08-29T10:34:20.125Z"}"#
        );
        assert_eq!(ChangeMessage::from_json(&json), Ok(sample()));
    }

    #[test]
    fn reads_messages_from_newer_producers_and_without_event_time() {
        let json = r#"{"portal":"acme","entity":"lead","id":7,"action":"delete","received_at":"2024-08-29T10:34:20Z","trace":"x"}"#;
        let message = ChangeMessage::from_json(json).unwrap();
        assert_eq!(message.entity, Entity::Lead);
        assert_eq!(message.action, ChangeAction::Delete);
        assert_eq!(message.event_time, None);
    }

    #[test]
    fn refuses_bodies_that_are_not_messages_and_ids_no_mirror_can_hold() {
        for body in [
            "",
            "{}",
            r#"{"portal":"acme","entity":"invoice","id":1,"action":"add","received_at":"2024-08-29T10:34:20Z"}"#,
            r#"{"portal":"acme","entity":"deal","id":0,"action":"add","received_at":"2024-08-29T10:34:20Z"}"#,
            r#"{"portal":"acme","entity":"deal","id":9223372036854775808,"action":"add","received_at":"2024-08-29T10:34:20Z"}"#,
            r#"{"portal":"","entity":"deal","id":1,"action":"add","received_at":"2024-08-29T10:34:20Z"}"#,
        ] {
            assert!(ChangeMessage::from_json(body).is_err(), "{body}");
        }
    }
}
