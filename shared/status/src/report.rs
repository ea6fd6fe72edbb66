//! The status report (`/status.json`, and what the page draws) from the store's
//! snapshot and the configuration: per portal and entity the counts, last runs, lag and
//! the last day's runs, the backlogs, and a verdict. Pure.

use std::collections::BTreeMap;

use b24_config::{Config, SmartProcesses, SmartRef};
use b24_domain::entity::Entity;
use b24_store::{EntityStatus, RunRecord, StatusSnapshot};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::health::{EntityFacts, Health, Level, Thresholds, classify_entity, seconds_between};
use crate::redact::Redactor;

/// An error text shown is cut to this many characters.
const MAX_ERROR_CHARS: usize = 500;

/// What the report covers, from the configuration: the portals with their entities, the
/// routes that start at each, and every secret to keep out of it.
pub struct ReportSettings {
    pub portals: Vec<(String, Vec<Entity>)>,
    /// Each portal's `smart_processes`: the smart processes it selects are reported as
    /// configured (titles cannot be checked without the portal: any smart process then).
    pub smart_processes: BTreeMap<String, SmartProcesses>,
    pub routes: Vec<(String, String)>,
    pub redactor: Redactor,
    pub thresholds: Thresholds,
}

impl ReportSettings {
    pub fn new(config: &Config) -> ReportSettings {
        ReportSettings {
            portals: config
                .portals
                .iter()
                .map(|(name, portal)| (name.clone(), portal.entities.clone()))
                .collect(),
            smart_processes: config
                .portals
                .iter()
                .map(|(name, portal)| (name.clone(), portal.smart_processes.clone()))
                .collect(),
            routes: config
                .routes
                .values()
                .map(|route| (route.name.clone(), route.source.clone()))
                .collect(),
            redactor: Redactor::new(config),
            thresholds: Thresholds::default(),
        }
    }

    /// Whether `portal`'s configuration mirrors `entity`: one of its `entities`, or a
    /// smart process its `smart_processes` may select.
    fn mirrors(&self, portal: &str, configured: &[Entity], entity: Entity) -> bool {
        if configured.contains(&entity) {
            return true;
        }
        let Entity::Smart(id) = entity else {
            return false;
        };
        match self.smart_processes.get(portal) {
            None | Some(SmartProcesses::None) => false,
            Some(SmartProcesses::All) => true,
            Some(SmartProcesses::Listed(refs)) => refs
                .iter()
                .any(|r| matches!(r, SmartRef::Title(_)) || *r == SmartRef::TypeId(id)),
        }
    }

    /// The configured portal entities, for the snapshot query.
    pub fn entities(&self) -> Vec<(String, Entity)> {
        self.portals
            .iter()
            .flat_map(|(portal, entities)| entities.iter().map(|e| (portal.clone(), *e)))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The database's clock when the snapshot was read.
    pub generated_at: DateTime<Utc>,
    /// The worst portal's verdict.
    pub health: Health,
    pub portals: Vec<PortalReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PortalReport {
    pub name: String,
    /// False for a portal the mirror holds but the configuration no longer names.
    pub configured: bool,
    pub health: Health,
    pub entities: Vec<EntityReport>,
    /// Routes starting at this portal (or with open ledger rows from it); absent when
    /// it forwards nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_backlog: Option<Vec<RouteBacklog>>,
    /// Absent until back-sync's outbox exists in the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EntityReport {
    pub entity: Entity,
    pub configured: bool,
    /// The portal's table; absent before the first run created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowCounts>,
    /// The newest `DATE_MODIFY` in the mirror and the incremental cursor (verbatim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_date_modify: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Now minus the newest `DATE_MODIFY` seen (the mirror's or the cursor's), in the
    /// database's clock against the portal's: a quiet portal has a large lag too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor_lag_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfinished_full_sync: Option<UnfinishedFullSync>,
    /// The last completed run of each mode that has one, by mode.
    pub last_success: BTreeMap<String, RunSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// The latest failed or refused run, however old.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<RunSummary>,
    pub last_24h: WindowCounts,
    pub health: Health,
    /// The last day's runs, newest first, for the page's charts.
    #[serde(skip)]
    pub recent_runs: Vec<RunSummary>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RowCounts {
    pub live: i64,
    pub deleted: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnfinishedFullSync {
    pub checkpoint: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub mode: String,
    /// `completed`, `stopped`, `refused`, `failed`; absent while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    pub rows_read: i64,
    pub rows_written: i64,
    pub rows_deleted: i64,
    pub http_requests: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_rows: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    pub runs: u64,
    pub completed: u64,
    pub stopped: u64,
    pub failed: u64,
    pub refused: u64,
    pub rows_written: i64,
    pub rows_deleted: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteBacklog {
    pub route: String,
    pub target: String,
    /// Waiting for the queue's next delivery.
    pub pending: i64,
    /// Claimed by an invocation now (`adding`, `updating`).
    pub in_progress: i64,
    /// Given up: in the dead-letter queue, the responsible user notified.
    pub failed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_open_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxReport {
    pub pending: i64,
    pub pushing: i64,
    pub conflict: i64,
    pub failed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

impl StatusReport {
    pub fn build(snapshot: &StatusSnapshot, settings: &ReportSettings) -> StatusReport {
        let now = snapshot.taken_at;
        let mut names: Vec<&str> = settings.portals.iter().map(|(p, _)| p.as_str()).collect();
        names.extend(snapshot.entities.iter().map(|e| e.portal.as_str()));
        names.sort_unstable();
        names.dedup();
        let portals: Vec<PortalReport> = names
            .into_iter()
            .map(|name| portal_report(name, snapshot, settings, now))
            .collect();
        let health = Health::worst(portals.iter().map(|p| (p.name.as_str(), &p.health)), || {
            format!("{} portals in sync", portals.len())
        });
        StatusReport {
            generated_at: now,
            health,
            portals,
        }
    }
}

fn portal_report(
    name: &str,
    snapshot: &StatusSnapshot,
    settings: &ReportSettings,
    now: DateTime<Utc>,
) -> PortalReport {
    let configured_entities = settings
        .portals
        .iter()
        .find(|(p, _)| p == name)
        .map(|(_, entities)| entities.as_slice());
    let entities: Vec<EntityReport> = snapshot
        .entities
        .iter()
        .filter(|e| e.portal == name)
        .map(|e| {
            let configured =
                configured_entities.is_some_and(|c| settings.mirrors(name, c, e.entity));
            entity_report(e, configured, settings, now)
        })
        .collect();
    let forward_backlog = route_backlog(name, snapshot, settings);
    let outbox = snapshot.outbox.as_ref().map(|rows| {
        let mut report = OutboxReport::default();
        for row in rows.iter().filter(|o| o.portal == name) {
            match row.state.as_str() {
                "pending" => {
                    report.pending = row.rows;
                    report.oldest_pending_at = Some(row.oldest_created_at);
                }
                "pushing" => report.pushing = row.rows,
                "conflict" => report.conflict = row.rows,
                "failed" => report.failed = row.rows,
                _ => {}
            }
        }
        report
    });
    let mut parts: Vec<(String, Health)> = entities
        .iter()
        .filter(|e| e.configured)
        .map(|e| (e.entity.as_str().to_string(), e.health.clone()))
        .collect();
    if let Some(outbox) = &outbox {
        parts.push((
            "back-sync".into(),
            outbox_health(outbox, now, &settings.thresholds),
        ));
    }
    for route in forward_backlog.iter().flatten() {
        parts.push((
            format!("route {}", route.route),
            route_health(route, now, &settings.thresholds),
        ));
    }
    let synced = entities.iter().filter(|e| e.configured).count();
    let health = if configured_entities.is_none() {
        Health {
            level: Level::Amber,
            reasons: vec!["not in the configuration any more; its tables are kept".into()],
        }
    } else {
        Health::worst(parts.iter().map(|(l, h)| (l.as_str(), h)), || {
            let oldest = entities
                .iter()
                .filter(|e| e.configured)
                .filter_map(last_success_at)
                .min()
                .map(|at| crate::health::duration_text(seconds_between(at, now)));
            match oldest {
                Some(age) if synced == 1 => format!("synced {age} ago"),
                Some(age) => format!("{synced} entities synced, the oldest {age} ago"),
                None => "no entity to sync".to_string(),
            }
        })
    };
    PortalReport {
        name: name.to_string(),
        configured: configured_entities.is_some(),
        health,
        entities,
        forward_backlog,
        outbox,
    }
}

fn last_success_at(entity: &EntityReport) -> Option<DateTime<Utc>> {
    entity
        .last_success
        .values()
        .filter_map(|r| r.finished_at)
        .max()
}

fn entity_report(
    status: &EntityStatus,
    configured: bool,
    settings: &ReportSettings,
    now: DateTime<Utc>,
) -> EntityReport {
    let summary = |run: &RunRecord| run_summary(run, &settings.redactor);
    let last_success: BTreeMap<String, RunSummary> = status
        .last_completed
        .iter()
        .map(|run| (run.mode.clone(), summary(run)))
        .collect();
    let mut window = WindowCounts::default();
    for run in &status.recent_runs {
        window.runs += 1;
        match run.outcome.as_deref() {
            Some("completed") => window.completed += 1,
            Some("stopped") => window.stopped += 1,
            Some("failed") => window.failed += 1,
            Some("refused") => window.refused += 1,
            _ => {}
        }
        window.rows_written += run.rows_written.unwrap_or(0);
        window.rows_deleted += run.rows_deleted.unwrap_or(0);
    }
    let cursor_time = status
        .cursor
        .as_deref()
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|c| c.with_timezone(&Utc));
    let newest_seen = cursor_time.max(status.newest_date_modify);
    let refusal = status.last_unsuccessful.as_ref().and_then(|run| {
        let superseded = status
            .last_completed
            .iter()
            .any(|done| done.mode == run.mode && done.started_at > run.started_at);
        (run.outcome.as_deref() == Some("refused") && !superseded).then(|| {
            (
                run.mode.clone(),
                run.would_delete.unwrap_or(0),
                run.live_rows.unwrap_or(0),
            )
        })
    });
    let last_run = status.last_run.as_ref().map(summary);
    let facts = EntityFacts {
        last_success_at: last_success.values().filter_map(|r| r.finished_at).max(),
        last_run_failed: last_run
            .as_ref()
            .filter(|r| r.outcome.as_deref() == Some("failed"))
            .map(|r| (r.mode.clone(), r.error.clone().unwrap_or_default())),
        refusal,
        full_sync_at: status.full_checkpoint,
        runs_24h: window.runs,
        failed_24h: window.failed,
    };
    EntityReport {
        entity: status.entity,
        configured,
        table: status.table_name.clone(),
        rows: status
            .live_rows
            .zip(status.deleted_rows)
            .map(|(live, deleted)| RowCounts { live, deleted }),
        newest_date_modify: status.newest_date_modify,
        cursor: status.cursor.clone(),
        cursor_lag_seconds: newest_seen.map(|at| seconds_between(at, now)),
        unfinished_full_sync: status.full_checkpoint.map(|checkpoint| UnfinishedFullSync {
            checkpoint,
            started_at: status.full_started_at,
        }),
        last_success,
        last_run,
        last_failure: status.last_unsuccessful.as_ref().map(summary),
        last_24h: window,
        health: classify_entity(&facts, now, &settings.thresholds),
        recent_runs: status.recent_runs.iter().map(summary).collect(),
    }
}

fn run_summary(run: &RunRecord, redactor: &Redactor) -> RunSummary {
    RunSummary {
        mode: run.mode.clone(),
        outcome: run.outcome.clone(),
        started_at: run.started_at,
        finished_at: run.finished_at,
        seconds: run
            .finished_at
            .map(|end| seconds_between(run.started_at, end)),
        rows_read: run.rows_read.unwrap_or(0),
        rows_written: run.rows_written.unwrap_or(0),
        rows_deleted: run.rows_deleted.unwrap_or(0),
        http_requests: run.http_requests.unwrap_or(0),
        error: run.error.as_deref().map(|e| {
            let scrubbed = redactor.scrub(e);
            match scrubbed.char_indices().nth(MAX_ERROR_CHARS) {
                Some((cut, _)) => format!("{}…", &scrubbed[..cut]),
                None => scrubbed,
            }
        }),
        would_delete: run.would_delete,
        live_rows: run.live_rows,
    }
}

fn route_backlog(
    portal: &str,
    snapshot: &StatusSnapshot,
    settings: &ReportSettings,
) -> Option<Vec<RouteBacklog>> {
    let mut routes: BTreeMap<String, RouteBacklog> = BTreeMap::new();
    for (route, _) in settings
        .routes
        .iter()
        .filter(|(_, source)| source == portal)
    {
        let backlog = RouteBacklog {
            route: route.clone(),
            ..RouteBacklog::default()
        };
        routes.insert(route.clone(), backlog);
    }
    for row in snapshot
        .forward_backlog
        .iter()
        .filter(|b| b.source_portal == portal)
    {
        let entry = routes
            .entry(row.route.clone())
            .or_insert_with(|| RouteBacklog {
                route: row.route.clone(),
                ..RouteBacklog::default()
            });
        entry.target.clone_from(&row.target_portal);
        match row.state.as_str() {
            "pending" => entry.pending += row.rows,
            "adding" | "updating" => entry.in_progress += row.rows,
            "failed" => entry.failed += row.rows,
            _ => {}
        }
        if row.state != "failed" {
            entry.oldest_open_at = entry
                .oldest_open_at
                .map_or(Some(row.oldest_updated_at), |at| {
                    Some(at.min(row.oldest_updated_at))
                });
        }
    }
    (!routes.is_empty()).then(|| routes.into_values().collect())
}

fn outbox_health(outbox: &OutboxReport, now: DateTime<Utc>, limits: &Thresholds) -> Health {
    let mut reasons = Vec::new();
    if outbox.failed > 0 || outbox.conflict > 0 {
        reasons.push(format!(
            "{} edits failed and {} met a conflict in the last 24 hours (b24sync push --list failed,conflict)",
            outbox.failed, outbox.conflict
        ));
    }
    if let Some(oldest) = outbox.oldest_pending_at
        && seconds_between(oldest, now) > limits.stale_after
    {
        reasons.push(format!(
            "{} edits wait to be pushed, the oldest for {}",
            outbox.pending,
            crate::health::duration_text(seconds_between(oldest, now))
        ));
    }
    if reasons.is_empty() {
        return Health::green(format!("{} edits to push", outbox.pending));
    }
    Health {
        level: Level::Amber,
        reasons,
    }
}

fn route_health(route: &RouteBacklog, now: DateTime<Utc>, limits: &Thresholds) -> Health {
    let mut reasons = Vec::new();
    if route.failed > 0 {
        reasons.push(format!("{} deals could not be forwarded", route.failed));
    }
    if let Some(oldest) = route.oldest_open_at
        && seconds_between(oldest, now) > limits.down_after
    {
        reasons.push(format!(
            "{} forwards open, the oldest for {}",
            route.pending + route.in_progress,
            crate::health::duration_text(seconds_between(oldest, now))
        ));
    }
    if reasons.is_empty() {
        return Health::green("forwarding");
    }
    Health {
        level: Level::Amber,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of(portal: &str, entities: &[Entity]) -> StatusSnapshot {
        StatusSnapshot {
            taken_at: Utc::now(),
            entities: entities
                .iter()
                .map(|&entity| EntityStatus {
                    portal: portal.to_string(),
                    entity,
                    table_name: None,
                    live_rows: None,
                    deleted_rows: None,
                    newest_date_modify: None,
                    cursor: None,
                    full_checkpoint: None,
                    full_started_at: None,
                    last_completed: Vec::new(),
                    last_run: None,
                    last_unsuccessful: None,
                    recent_runs: Vec::new(),
                })
                .collect(),
            forward_backlog: Vec::new(),
            outbox: None,
        }
    }

    /// The entities of `portal` the report counts as configured, for `smart_processes`.
    fn configured(smart_processes: &str) -> Vec<String> {
        let config = format!(
            "[database]\nurl = \"postgres://127.0.0.1/x\"\n[portals.acme]\n\
             webhook_url = \"https://acme.bitrix24.com/rest/1/abcdef0123456789/\"\n\
             entities = [\"deal\"]\n{smart_processes}"
        );
        let config = Config::from_toml_str(&config).unwrap();
        let settings = ReportSettings::new(&config);
        let mirrored = [
            Entity::Deal,
            Entity::Contact,
            Entity::Smart(1038),
            Entity::Smart(1042),
        ];
        let report = StatusReport::build(&snapshot_of("acme", &mirrored), &settings);
        report.portals[0]
            .entities
            .iter()
            .filter(|e| e.configured)
            .map(|e| e.entity.to_string())
            .collect()
    }

    #[test]
    fn smart_processes_the_portal_selects_count_as_configured() {
        assert_eq!(configured(""), ["deal"]);
        assert_eq!(
            configured("smart_processes = \"all\""),
            ["deal", "sp_1038", "sp_1042"]
        );
        assert_eq!(configured("smart_processes = [1042]"), ["deal", "sp_1042"]);
        // A title is resolved by the portal, which the status function does not ask.
        assert_eq!(
            configured("smart_processes = [\"Orders\"]"),
            ["deal", "sp_1038", "sp_1042"]
        );
    }
}
