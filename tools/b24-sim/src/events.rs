//! Outgoing events: after every add/update/delete the portal's queue POSTs the
//! event to the handler, form-encoded with PHP-style keys, once, without retry.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::schema::{Change, Entity, Kind};
use crate::stats::SimStats;

/// Where events go and the token that signs them.
#[derive(Clone)]
pub struct EventTarget {
    /// The handler URL.
    pub url: String,
    /// `auth[application_token]`, the handler's proof that the event is genuine.
    pub application_token: String,
}

impl std::fmt::Debug for EventTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTarget")
            .field("url", &self.url)
            .field("application_token", &"***")
            .finish()
    }
}

/// The portal's identity as events show it.
#[derive(Clone, Debug)]
pub(crate) struct EventAuth {
    pub domain: String,
    pub client_endpoint: String,
    pub member_id: String,
}

/// The form body of one event, in the order the portal writes the keys.
/// Smart-process events carry the type too: `data[FIELDS][ENTITY_TYPE_ID]` after the ID.
pub(crate) fn event_body(
    target: &EventTarget,
    auth: &EventAuth,
    kind: Kind,
    change: Change,
    id: u64,
    ts: i64,
) -> String {
    let name = kind.event_name(change);
    let handler_id = event_handler_id(kind, change);
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("event", &name)
        .append_pair("event_handler_id", &handler_id.to_string())
        .append_pair("data[FIELDS][ID]", &id.to_string());
    if let Kind::Smart(entity_type_id) = kind {
        form.append_pair("data[FIELDS][ENTITY_TYPE_ID]", &entity_type_id.to_string());
    }
    form.append_pair("ts", &ts.to_string())
        .append_pair("auth[domain]", &auth.domain)
        .append_pair("auth[client_endpoint]", &auth.client_endpoint)
        .append_pair("auth[server_endpoint]", "https://oauth.bitrix.info/rest/")
        .append_pair("auth[member_id]", &auth.member_id)
        .append_pair("auth[application_token]", &target.application_token)
        .finish()
}

/// One handler registration per event, as the portal numbers them (the dynamic-item
/// events are one registration each for every smart process).
fn event_handler_id(kind: Kind, change: Change) -> usize {
    let change_index = match change {
        Change::Add => 0,
        Change::Update => 1,
        Change::Delete => 2,
    };
    let base = match kind {
        Kind::Classic(entity) => {
            100 + Entity::ALL.iter().position(|e| *e == entity).unwrap_or(0) * 3
        }
        Kind::Smart(_) | Kind::Users => 200,
    };
    base + change_index
}

/// Queues events and delivers them one by one from a background task.
#[derive(Clone)]
pub(crate) struct EventQueue {
    sender: mpsc::UnboundedSender<(Kind, Change, u64)>,
}

impl EventQueue {
    pub fn start(target: EventTarget, auth: EventAuth, stats: Arc<Mutex<SimStats>>) -> EventQueue {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(Kind, Change, u64)>();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        tokio::spawn(async move {
            while let Some((kind, change, id)) = receiver.recv().await {
                let body = event_body(
                    &target,
                    &auth,
                    kind,
                    change,
                    id,
                    chrono::Utc::now().timestamp(),
                );
                let sent = client
                    .post(&target.url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .header("User-Agent", "Bitrix24 Webhook Engine")
                    .body(body)
                    .send()
                    .await;
                let delivered = matches!(&sent, Ok(response) if response.status().is_success());
                if !delivered {
                    let reason = match sent {
                        Ok(response) => format!("HTTP {}", response.status()),
                        Err(e) => e.without_url().to_string(),
                    };
                    tracing::warn!(event = %kind.event_name(change), id, %reason, "event delivery failed; not retried");
                }
                let mut stats = stats.lock();
                if delivered {
                    stats.events_sent += 1
                } else {
                    stats.events_failed += 1
                }
            }
        });
        EventQueue { sender }
    }

    pub fn publish(&self, changes: &[(Kind, Change, u64)]) {
        for change in changes {
            // A closed queue means the simulator is shutting down.
            let _ = self.sender.send(*change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_matches_the_portal_wire_format() {
        let target = EventTarget {
            url: "http://127.0.0.1:1/".into(),
            application_token: "tok123".into(),
        };
        let auth = EventAuth {
            domain: "sim.bitrix24.test".into(),
            client_endpoint: "http://127.0.0.1:8080/rest/".into(),
            member_id: "0123456789abcdef0123456789abcdef".into(),
        };
        let body = event_body(
            &target,
            &auth,
            Entity::Deal.into(),
            Change::Update,
            759,
            1736405807,
        );
        assert_eq!(
            body,
            "event=ONCRMDEALUPDATE&event_handler_id=101&data%5BFIELDS%5D%5BID%5D=759&ts=1736405807\
             &auth%5Bdomain%5D=sim.bitrix24.test&auth%5Bclient_endpoint%5D=http%3A%2F%2F127.0.0.1%3A8080%2Frest%2F\
             &auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F\
             &auth%5Bmember_id%5D=0123456789abcdef0123456789abcdef&auth%5Bapplication_token%5D=tok123"
        );
        assert!(!format!("{target:?}").contains("tok123"));
        // Verbatim keys of on-crm-dynamic-item-update.md: the ID, then the type.
        let body = event_body(
            &target,
            &auth,
            Kind::Smart(1220),
            Change::Update,
            24,
            1723538517,
        );
        assert!(
            body.starts_with(
                "event=ONCRMDYNAMICITEMUPDATE&event_handler_id=201&data%5BFIELDS%5D%5BID%5D=24\
                 &data%5BFIELDS%5D%5BENTITY_TYPE_ID%5D=1220&ts=1723538517&"
            ),
            "{body}"
        );
    }
}
