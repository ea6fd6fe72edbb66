//! The status page: one HTML document, styles inline, charts as inline SVG, no script.
//! A summary line per portal (green, amber or red, with the reasons), then per portal a
//! table of its entities and four charts of the last 24 hours. It refreshes itself every
//! minute (`<meta http-equiv="refresh">`), which needs no JavaScript either.

use chrono::{DateTime, Duration, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::charts::{Bar, Chart, bar_chart, column_chart};
use crate::health::{Health, duration_text, seconds_between};
use crate::report::{EntityReport, PortalReport, StatusReport};

/// The window the charts cover, in slots.
const WINDOW_HOURS: i64 = 24;
const ROW_SLOTS: i64 = 48;

const STYLE: &str = "
:root { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d2430; background: #f6f7f9; }
body { margin: 0 auto; padding: 12px; max-width: 1100px; }
h1 { font-size: 1.35rem; margin: 4px 0 2px; } h2 { font-size: 1.15rem; margin: 0 0 8px; }
h3 { font-size: .9rem; margin: 0 0 4px; font-weight: 600; color: #444; }
.meta { color: #555; font-size: .85rem; margin: 0 0 12px; }
ul.summary { list-style: none; padding: 0; margin: 0 0 16px; }
ul.summary li { background: #fff; border-left: 6px solid; border-radius: 4px; padding: 8px 10px; margin: 6px 0; }
ul.reasons { margin: 4px 0 0; padding-left: 18px; font-size: .9rem; }
section.portal { background: #fff; border-radius: 6px; padding: 12px; margin: 0 0 16px; border-top: 6px solid; }
ul.summary li.green, section.portal.green { border-color: #2e9e4f; }
ul.summary li.amber, section.portal.amber { border-color: #d9a21b; }
ul.summary li.red, section.portal.red { border-color: #d23c3c; }
.level { font-weight: 700; text-transform: uppercase; font-size: .8rem; margin-right: 6px; }
.green .level, td.green { color: #1f7a3a; } .amber .level, td.amber { color: #8a6300; }
.red .level, td.red { color: #b02a2a; } td.green, td.amber, td.red { font-weight: 600; }
table.forwarding, table.outbox { width: auto; } h3 { margin-top: 10px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 12px; margin-top: 12px; }
figure { margin: 0; } svg.chart { width: 100%; height: auto; display: block; }
svg .bar.ok { fill: #3d7ec9; } svg .bar.slow { fill: #7b5cc4; } svg .bar.failed { fill: #d23c3c; }
svg .bar.refused { fill: #d9a21b; } svg .axis, svg .label, svg .value { font-size: 9px; fill: #555; }
svg line.axis { stroke: #888; stroke-width: .6; } svg line.grid { stroke: #ddd; stroke-width: .6; }
.error { font-size: .8rem; color: #8b1f1f; white-space: normal; word-break: break-word; }
footer { font-size: .8rem; color: #555; }
";

/// The whole document.
pub fn render(report: &StatusReport) -> String {
    let now = report.generated_at;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="60";
                title { "b24sync status: " (report.health.level.as_str()) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "b24sync status" }
                p.meta { "As of " (time_text(now)) " (database clock); refreshes every minute." }
                ul.summary {
                    @for portal in &report.portals {
                        li class=(portal.health.level.as_str()) data-portal=(portal.name) data-level=(portal.health.level.as_str()) {
                            span.level { (portal.health.level.as_str()) }
                            a href={"#portal-" (portal.name)} { strong { (portal.name) } }
                            (reasons(&portal.health))
                        }
                    }
                }
                @for portal in &report.portals {
                    (portal_section(portal, now))
                }
                footer {
                    "Machine-readable: " a href="status.json" { "status.json" }
                    " · every mirror column explained: " a href="schema.md" { "schema.md" }
                }
            }
        }
    };
    page.into_string()
}

fn reasons(health: &Health) -> Markup {
    html! {
        @if health.reasons.len() == 1 {
            " " (health.reasons[0])
        } @else {
            ul.reasons { @for reason in &health.reasons { li { (reason) } } }
        }
    }
}

fn portal_section(portal: &PortalReport, now: DateTime<Utc>) -> Markup {
    html! {
        section class={"portal " (portal.health.level.as_str())} id={"portal-" (portal.name)} data-portal=(portal.name) {
            h2 { (portal.name) @if !portal.configured { " (not configured)" } }
            div.scroll {
                table.entities {
                    thead { tr {
                        th { "Entity" } th.num { "Live rows" } th.num { "Deleted" }
                        th { "Last success" } th.num { "Cursor lag" } th.num { "Runs 24 h" }
                        th.num { "Failed 24 h" } th.num { "Refused 24 h" } th { "State" }
                    } }
                    tbody {
                        @for entity in &portal.entities {
                            (entity_row(entity, now))
                        }
                    }
                }
            }
            (backlogs(portal))
            (errors(portal))
            div.charts { (charts(portal, now)) }
        }
    }
}

fn entity_row(entity: &EntityReport, now: DateTime<Utc>) -> Markup {
    let last = entity
        .last_success
        .values()
        .filter(|r| r.finished_at.is_some())
        .max_by_key(|r| r.finished_at);
    html! {
        tr data-entity=(entity.entity.as_str()) {
            td { (entity.entity.as_str()) @if !entity.configured { " (not configured)" } }
            @match entity.rows {
                Some(rows) => {
                    td.num data-live=(rows.live) { (thousands(rows.live)) }
                    td.num data-deleted=(rows.deleted) { (thousands(rows.deleted)) }
                }
                None => { td.num { "–" } td.num { "–" } }
            }
            td {
                @match last {
                    Some(run) => {
                        (run.mode) ", " (duration_text(seconds_between(run.finished_at.unwrap_or(now), now))) " ago, "
                        (seconds_text(run.seconds.unwrap_or(0.0))) ", " (thousands(run.rows_written)) " rows written"
                        @if run.rows_deleted > 0 { ", " (thousands(run.rows_deleted)) " deleted" }
                    }
                    None => { "never" }
                }
            }
            td.num { @match entity.cursor_lag_seconds { Some(lag) => (duration_text(lag)), None => "–" } }
            td.num { (entity.last_24h.runs) }
            td.num { (entity.last_24h.failed) }
            td.num { (entity.last_24h.refused) }
            td class=(entity.health.level.as_str()) { (entity.health.level.as_str()) }
        }
    }
}

fn backlogs(portal: &PortalReport) -> Markup {
    html! {
        @if let Some(routes) = &portal.forward_backlog {
            h3 { "Deal forwarding" }
            div.scroll { table.forwarding {
                thead { tr { th { "Route" } th { "Target" } th.num { "Pending" } th.num { "In progress" } th.num { "Failed" } } }
                tbody { @for route in routes { tr data-route=(route.route) {
                    td { (route.route) } td { (route.target) } td.num { (route.pending) }
                    td.num { (route.in_progress) } td.num { (route.failed) }
                } } }
            } }
        }
        @if let Some(outbox) = &portal.outbox {
            h3 { "Back-sync outbox" }
            div.scroll { table.outbox {
                thead { tr { th.num { "Pending" } th.num { "Pushing" } th.num { "Conflicts, 24 h" } th.num { "Failed, 24 h" } } }
                tbody { tr {
                    td.num { (outbox.pending) } td.num { (outbox.pushing) }
                    td.num { (outbox.conflict) } td.num { (outbox.failed) }
                } }
            } }
        }
    }
}

/// The latest failed or refused run of each entity, in the last day.
fn errors(portal: &PortalReport) -> Markup {
    let failures: Vec<(&EntityReport, &crate::report::RunSummary)> = portal
        .entities
        .iter()
        .flat_map(|e| {
            e.recent_runs
                .iter()
                .find(|r| matches!(r.outcome.as_deref(), Some("failed" | "refused")))
                .map(|r| (e, r))
        })
        .collect();
    html! {
        @if !failures.is_empty() {
            h3 { "Latest failures (24 h)" }
            div.scroll { table.failures {
                tbody { @for (entity, run) in failures { tr {
                    td { (entity.entity.as_str()) } td { (run.mode) } td { (time_text(run.started_at)) }
                    td.error { (run.outcome.as_deref().unwrap_or_default()) ": " (run.error.as_deref().unwrap_or_default()) }
                } } }
            } }
        }
    }
}

fn charts(portal: &PortalReport, now: DateTime<Utc>) -> Markup {
    let start = now - Duration::hours(WINDOW_HOURS);
    let runs: Vec<&crate::report::RunSummary> = portal
        .entities
        .iter()
        .flat_map(|e| e.recent_runs.iter())
        .filter(|r| r.started_at >= start)
        .collect();
    let slot_of = |at: DateTime<Utc>, slots: i64| -> Option<usize> {
        let slot = (at - start).num_seconds() * slots / (WINDOW_HOURS * 3600);
        (0..slots).contains(&slot).then_some(slot as usize)
    };
    let slot_label = |i: usize, slots: i64| {
        let from = start + Duration::seconds(i as i64 * WINDOW_HOURS * 3600 / slots);
        from.format("%H:%M UTC").to_string()
    };
    let mut rows = vec![0.0; ROW_SLOTS as usize];
    let mut longest = vec![0.0_f64; ROW_SLOTS as usize];
    let mut failed = vec![0.0; WINDOW_HOURS as usize];
    let mut refused = vec![0.0; WINDOW_HOURS as usize];
    for run in &runs {
        if let Some(slot) = slot_of(run.started_at, ROW_SLOTS) {
            rows[slot] += (run.rows_written + run.rows_deleted) as f64;
            longest[slot] = longest[slot].max(run.seconds.unwrap_or(0.0));
        }
        if let Some(hour) = slot_of(run.started_at, WINDOW_HOURS) {
            match run.outcome.as_deref() {
                Some("failed") => failed[hour] += 1.0,
                Some("refused") => refused[hour] += 1.0,
                _ => {}
            }
        }
    }
    let columns = |values: &[f64], class: fn(usize) -> &'static str, slots: i64| -> Vec<Bar> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| Bar {
                label: slot_label(i, slots),
                value,
                class: class(i),
            })
            .collect()
    };
    let errors: Vec<Bar> = failed
        .iter()
        .zip(&refused)
        .enumerate()
        .map(|(i, (&f, &r))| Bar {
            label: format!("{} ({f} failed, {r} refused)", slot_label(i, WINDOW_HOURS)),
            value: f + r,
            class: if f > 0.0 { "failed" } else { "refused" },
        })
        .collect();
    let lag: Vec<Bar> = portal
        .entities
        .iter()
        .filter(|e| e.configured)
        .map(|e| Bar {
            label: e.entity.as_str().to_string(),
            value: e.cursor_lag_seconds.unwrap_or(0.0),
            class: "slow",
        })
        .collect();
    let edges = ("24 h ago", "now");
    html! {
        figure { h3 { "Rows written per half hour" }
            (column_chart(&Chart { kind: "rows", title: "Rows written or deleted per half hour, last 24 hours", format: count }, &columns(&rows, |_| "ok", ROW_SLOTS), edges.0, edges.1)) }
        figure { h3 { "Longest run per half hour" }
            (column_chart(&Chart { kind: "durations", title: "Longest run per half hour, last 24 hours", format: seconds_text }, &columns(&longest, |_| "slow", ROW_SLOTS), edges.0, edges.1)) }
        figure { h3 { "Failed and refused runs per hour" }
            (column_chart(&Chart { kind: "errors", title: "Failed and refused runs per hour, last 24 hours", format: count }, &errors, edges.0, edges.1)) }
        figure { h3 { "Cursor lag by entity" }
            (bar_chart(&Chart { kind: "lag", title: "Now minus the newest DATE_MODIFY seen, per entity", format: duration_text }, &lag)) }
    }
}

/// Run durations: tenths of a second below ten seconds, an age-like text above.
fn seconds_text(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}s")
    } else {
        duration_text(value)
    }
}

fn count(value: f64) -> String {
    thousands(value.round() as i64)
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn time_text(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-45_000), "-45,000");
    }
}
