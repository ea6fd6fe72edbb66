//! Each portal's deal field descriptions (`crm.deal.fields`) and status lists
//! (`crm.status.list`), kept across warm invocations for a while so a forward usually
//! reads only the deal. The lists are fetched inside the batch the forward sends to
//! that portal anyway, so a cache miss costs no extra request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use b24_client::{Command, CommandResult};
use b24_domain::forward::mapping::{FieldCatalog, StatusItem};
use serde_json::{Value, json};

use crate::error::ForwardError;

/// What one portal says about its deals.
#[derive(Clone, Debug, Default)]
pub struct PortalMeta {
    pub fields: FieldCatalog,
    /// Every status list of the portal; empty unless a route matches by label.
    pub statuses: Vec<StatusItem>,
    has_statuses: bool,
}

/// Batch command names used for the metadata.
const FIELDS_CMD: &str = "meta_fields";
const STATUSES_CMD: &str = "meta_statuses";

/// The cache of every portal's metadata, shared by the invocations of one process.
pub struct MetadataCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<PortalMeta>)>>,
}

impl MetadataCache {
    pub fn new(ttl: Duration) -> MetadataCache {
        MetadataCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The portal's cached metadata when it is fresh and holds the status lists if
    /// `statuses` asks for them.
    pub fn get(&self, portal: &str, statuses: bool) -> Option<Arc<PortalMeta>> {
        let entries = self.entries.lock().ok()?;
        let (at, meta) = entries.get(portal)?;
        (at.elapsed() < self.ttl && (meta.has_statuses || !statuses)).then(|| meta.clone())
    }

    /// Forgets a portal's metadata (a mapping failed on it: the portal may have changed).
    pub fn forget(&self, portal: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(portal);
        }
    }

    fn put(&self, portal: &str, meta: Arc<PortalMeta>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(portal.to_string(), (Instant::now(), meta));
        }
    }
}

/// The commands that fetch what the cache lacks: none when it is fresh.
pub fn commands(cached: Option<&PortalMeta>, statuses: bool) -> Vec<Command> {
    if cached.is_some() {
        return Vec::new();
    }
    let mut commands = vec![Command::new(FIELDS_CMD, "crm.deal.fields", json!({}))];
    if statuses {
        commands.push(Command::new(STATUSES_CMD, "crm.status.list", json!({})));
    }
    commands
}

/// The metadata: the cached one, or the one read from `results` (then cached).
pub fn resolve(
    cache: &MetadataCache,
    portal: &str,
    cached: Option<Arc<PortalMeta>>,
    results: &mut Vec<CommandResult>,
    with_statuses: bool,
) -> Result<Arc<PortalMeta>, ForwardError> {
    if let Some(meta) = cached {
        return Ok(meta);
    }
    let step = "reading the deal field metadata";
    let fields = take_result(results, FIELDS_CMD, portal, step)?;
    let fields =
        FieldCatalog::from_fields_result(&fields).map_err(|e| ForwardError::BadAnswer {
            portal: portal.to_string(),
            step,
            detail: format!("crm.deal.fields: {e}"),
        })?;
    let statuses = if with_statuses {
        let step = "reading the status lists";
        let list = take_result(results, STATUSES_CMD, portal, step)?;
        serde_json::from_value::<Vec<StatusItem>>(list).map_err(|e| ForwardError::BadAnswer {
            portal: portal.to_string(),
            step,
            detail: format!("crm.status.list: {e}"),
        })?
    } else {
        Vec::new()
    };
    let meta = Arc::new(PortalMeta {
        fields,
        has_statuses: with_statuses,
        statuses,
    });
    cache.put(portal, meta.clone());
    Ok(meta)
}

/// Removes the named command's result, turning its failure into a [`ForwardError`].
pub fn take_result(
    results: &mut Vec<CommandResult>,
    name: &str,
    portal: &str,
    step: &'static str,
) -> Result<Value, ForwardError> {
    let index =
        results
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| ForwardError::BadAnswer {
                portal: portal.to_string(),
                step,
                detail: format!("no result for batch command {name}"),
            })?;
    let result = results.swap_remove(index);
    result
        .outcome
        .map(|output| output.result)
        .map_err(|source| ForwardError::Portal {
            portal: portal.to_string(),
            step,
            source,
        })
}

#[cfg(test)]
mod tests {
    use b24_client::CommandOutput;

    use super::*;

    fn ok(name: &str, result: Value) -> CommandResult {
        CommandResult {
            name: name.into(),
            method: "m".into(),
            outcome: Ok(CommandOutput {
                result,
                total: None,
                next: None,
                operating: None,
            }),
        }
    }

    #[test]
    fn a_miss_is_fetched_cached_and_then_needs_no_commands() {
        let cache = MetadataCache::new(Duration::from_secs(60));
        assert!(cache.get("p", true).is_none());
        let wanted = commands(None, true);
        assert_eq!(wanted.len(), 2);
        let mut results = vec![
            ok(
                FIELDS_CMD,
                json!({"TITLE": {"type": "string", "isReadOnly": false, "isMultiple": false, "title": "Name"}}),
            ),
            ok(
                STATUSES_CMD,
                json!([{"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "NAME": "New", "SORT": "10"}]),
            ),
        ];
        let meta = resolve(&cache, "p", None, &mut results, true).unwrap();
        assert!(meta.fields.get("TITLE").is_some());
        assert_eq!(meta.statuses[0].name, "New");
        let cached = cache.get("p", true).unwrap();
        assert!(commands(Some(&cached), true).is_empty());
        cache.forget("p");
        assert!(cache.get("p", false).is_none());
    }

    #[test]
    fn metadata_without_status_lists_does_not_serve_a_route_that_needs_them() {
        let cache = MetadataCache::new(Duration::from_secs(60));
        let mut results = vec![ok(FIELDS_CMD, json!({}))];
        resolve(&cache, "p", None, &mut results, false).unwrap();
        assert!(cache.get("p", false).is_some());
        assert!(cache.get("p", true).is_none());
    }

    #[test]
    fn stale_entries_are_misses() {
        let cache = MetadataCache::new(Duration::ZERO);
        let mut results = vec![ok(FIELDS_CMD, json!({}))];
        resolve(&cache, "p", None, &mut results, false).unwrap();
        assert!(cache.get("p", false).is_none());
    }
}
