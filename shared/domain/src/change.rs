//! The change message: what the webhook intake puts on the change queue and the change
//! worker takes off it. One typed contract for producer and consumer, serialised as JSON.
//!
//! A message is a hint, never the data: the worker re-reads the record from the portal,
//! so duplicates, reordering and a lost `Update` between two others change nothing.
//! Unknown keys are ignored on reading, so a newer producer can add fields before every
//! consumer knows them.

use std::collections::BTreeMap;

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

/// One batch's changes of one portal entity, each record once. `K` names a queue message
/// (SQS's message ID), so the worker can say which messages failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeGroup<K> {
    pub portal: String,
    pub entity: Entity,
    /// By record ID, ascending.
    pub records: BTreeMap<u64, RecordChanges<K>>,
}

/// What a batch said about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordChanges<K> {
    /// Every message that named the record (duplicates included).
    pub messages: Vec<K>,
    /// Whether any of them said it was deleted. Only a delete event lets a lookup that
    /// misses the record delete it: a record an update names and the lookup misses may
    /// just be hidden from the webhook's user (a role change), which is no deletion.
    pub deleted: bool,
}

/// Groups a batch by portal and entity (ordered by both), each record ID once whatever
/// the order and repetition of its messages.
pub fn group_changes<K>(
    batch: impl IntoIterator<Item = (K, ChangeMessage)>,
) -> Vec<ChangeGroup<K>> {
    let mut groups: BTreeMap<(String, Entity), BTreeMap<u64, RecordChanges<K>>> = BTreeMap::new();
    for (key, message) in batch {
        let record = groups
            .entry((message.portal, message.entity))
            .or_default()
            .entry(message.id)
            .or_insert_with(|| RecordChanges {
                messages: Vec::new(),
                deleted: false,
            });
        record.messages.push(key);
        record.deleted |= message.action == ChangeAction::Delete;
    }
    groups
        .into_iter()
        .map(|((portal, entity), records)| ChangeGroup {
            portal,
            entity,
            records,
        })
        .collect()
}

impl<K: Clone> ChangeGroup<K> {
    /// Every record ID, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.records.keys().copied().collect()
    }

    /// Every message of the group.
    pub fn messages(&self) -> Vec<K> {
        self.records
            .values()
            .flat_map(|r| r.messages.iter().cloned())
            .collect()
    }

    /// The records a delete event named and the lookup did not return (`found`: the
    /// IDs it returned, ascending): confirmed gone, ascending.
    pub fn confirmed_deletions(&self, found: &[u64]) -> Vec<u64> {
        self.records
            .iter()
            .filter(|(id, record)| record.deleted && found.binary_search(id).is_err())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The messages that named any of `ids`.
    pub fn messages_of(&self, ids: &[u64]) -> Vec<K> {
        ids.iter()
            .filter_map(|id| self.records.get(id))
            .flat_map(|r| r.messages.iter().cloned())
            .collect()
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

    fn change(portal: &str, entity: Entity, id: u64, action: ChangeAction) -> ChangeMessage {
        ChangeMessage {
            portal: portal.into(),
            entity,
            id,
            action,
            ..sample()
        }
    }

    #[test]
    fn groups_by_portal_and_entity_with_each_record_once() {
        use ChangeAction::{Add, Delete, Update};
        let batch = vec![
            ("m1", change("acme", Entity::Deal, 9, Update)),
            ("m2", change("beta", Entity::Deal, 9, Update)),
            ("m3", change("acme", Entity::Contact, 4, Add)),
            ("m4", change("acme", Entity::Deal, 3, Update)),
            ("m5", change("acme", Entity::Deal, 9, Delete)),
            ("m6", change("acme", Entity::Deal, 9, Update)),
        ];
        let groups = group_changes(batch);
        let keys: Vec<(&str, Entity)> = groups
            .iter()
            .map(|g| (g.portal.as_str(), g.entity))
            .collect();
        assert_eq!(
            keys,
            [
                ("acme", Entity::Deal),
                ("acme", Entity::Contact),
                ("beta", Entity::Deal)
            ]
        );
        let deals = &groups[0];
        assert_eq!(deals.ids(), [3, 9]);
        assert_eq!(deals.records[&9].messages, ["m1", "m5", "m6"]);
        assert!(deals.records[&9].deleted);
        assert!(!deals.records[&3].deleted);
        assert_eq!(deals.messages(), ["m4", "m1", "m5", "m6"]);
        assert_eq!(deals.messages_of(&[9, 77]), ["m1", "m5", "m6"]);
    }

    #[test]
    fn only_a_delete_event_the_lookup_misses_is_a_confirmed_deletion() {
        use ChangeAction::{Delete, Update};
        let groups = group_changes([
            (1, change("acme", Entity::Lead, 5, Delete)),
            (2, change("acme", Entity::Lead, 6, Delete)),
            (3, change("acme", Entity::Lead, 7, Update)),
        ]);
        // 5 is back on the portal (restored); 6 is gone; 7 is missing but no delete
        // event named it (hidden from the webhook's user, or its event still coming).
        assert_eq!(groups[0].confirmed_deletions(&[5]), [6]);
        assert_eq!(groups[0].confirmed_deletions(&[5, 6, 7]), Vec::<u64>::new());
    }

    #[test]
    fn order_and_repetition_do_not_change_the_groups_records() {
        use ChangeAction::{Add, Delete, Update};
        let batch = [
            change("acme", Entity::Deal, 2, Add),
            change("acme", Entity::Deal, 1, Delete),
            change("acme", Entity::Deal, 2, Update),
            change("acme", Entity::Deal, 1, Update),
        ];
        let deleted_by_id = |messages: Vec<ChangeMessage>| {
            group_changes(messages.into_iter().map(|m| ((), m)))[0]
                .records
                .iter()
                .map(|(&id, r)| (id, r.deleted))
                .collect::<Vec<_>>()
        };
        let forward = deleted_by_id(batch.to_vec());
        let mut reversed = batch.to_vec();
        reversed.reverse();
        let mut doubled = batch.to_vec();
        doubled.extend(batch.iter().cloned());
        assert_eq!(forward, [(1, true), (2, false)]);
        assert_eq!(deleted_by_id(reversed), forward);
        assert_eq!(deleted_by_id(doubled), forward);
    }
}
