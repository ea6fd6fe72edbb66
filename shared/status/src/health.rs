//! Green, amber or red, with the reason: how an operator should read one portal at a
//! glance. Pure: the facts come in, the verdict goes out.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Worst last, so the worst of several is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Green,
    Amber,
    Red,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Amber => "amber",
            Level::Red => "red",
        }
    }
}

/// A verdict and why: every reason of the verdict's level (and of lower ones when
/// they add something), most serious first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    pub level: Level,
    pub reasons: Vec<String>,
}

impl Health {
    pub fn green(reason: impl Into<String>) -> Health {
        Health {
            level: Level::Green,
            reasons: vec![reason.into()],
        }
    }

    /// The worst of several verdicts, with the reasons at that level (each prefixed by
    /// `label`), or `healthy` when all are green.
    pub fn worst<'a>(
        parts: impl IntoIterator<Item = (&'a str, &'a Health)>,
        healthy: impl FnOnce() -> String,
    ) -> Health {
        let parts: Vec<(&str, &Health)> = parts.into_iter().collect();
        let level = parts
            .iter()
            .map(|(_, h)| h.level)
            .max()
            .unwrap_or(Level::Green);
        if level == Level::Green {
            return Health::green(healthy());
        }
        let mut reasons: Vec<(Level, String)> = parts
            .iter()
            .filter(|(_, h)| h.level > Level::Green)
            .flat_map(|(label, h)| {
                h.reasons.iter().map(move |r| {
                    let text = if label.is_empty() {
                        r.clone()
                    } else {
                        format!("{label}: {r}")
                    };
                    (h.level, text)
                })
            })
            .collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
        Health {
            level,
            reasons: reasons.into_iter().map(|(_, r)| r).collect(),
        }
    }
}

/// When an entity's data counts as stale: no successful run for `stale_after` seconds
/// is amber, for `down_after` red. The defaults suit the template's schedules
/// (incremental every 5 minutes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub stale_after: f64,
    pub down_after: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            stale_after: 15.0 * 60.0,
            down_after: 60.0 * 60.0,
        }
    }
}

/// What the verdict on one portal entity rests on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityFacts {
    /// The latest end of a completed run of any mode.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The latest run has ended as failed, with its mode and error.
    pub last_run_failed: Option<(String, String)>,
    /// A refused run with no completed run of its mode since: mode, what it would
    /// have deleted, of how many live rows.
    pub refusal: Option<(String, i64, i64)>,
    /// An unfinished full sync's checkpoint.
    pub full_sync_at: Option<i64>,
    pub runs_24h: u64,
    pub failed_24h: u64,
}

/// The verdict on one portal entity at `now`.
pub fn classify_entity(facts: &EntityFacts, now: DateTime<Utc>, limits: &Thresholds) -> Health {
    let mut red = Vec::new();
    let mut amber = Vec::new();
    if let Some((mode, would_delete, live)) = &facts.refusal {
        red.push(format!(
            "the {mode} run refused to delete {would_delete} of {live} live rows: check the portal, then run `b24sync sync --mode {mode} --confirm-deletes`"
        ));
    }
    match facts.last_success_at {
        None => match (&facts.last_run_failed, facts.full_sync_at) {
            (Some((mode, error)), _) => red.push(format!(
                "never synced; the last run ({mode}) failed: {error}"
            )),
            (None, Some(checkpoint)) => {
                amber.push(format!("first full sync under way (at ID {checkpoint})"))
            }
            (None, None) => amber.push("not synced yet".to_string()),
        },
        Some(at) => {
            let age = seconds_between(at, now);
            let text = format!("last successful run {} ago", duration_text(age));
            if age > limits.down_after {
                red.push(text);
            } else if age > limits.stale_after {
                amber.push(text);
            }
            if let Some((mode, error)) = &facts.last_run_failed {
                amber.push(format!("the last run ({mode}) failed: {error}"));
            } else if facts.failed_24h > 0 {
                amber.push(format!(
                    "{} of {} runs failed in the last 24 hours",
                    facts.failed_24h, facts.runs_24h
                ));
            }
        }
    }
    let level = if !red.is_empty() {
        Level::Red
    } else if !amber.is_empty() {
        Level::Amber
    } else {
        Level::Green
    };
    red.extend(amber);
    if red.is_empty() {
        let since = facts
            .last_success_at
            .map(|at| duration_text(seconds_between(at, now)))
            .unwrap_or_default();
        red.push(format!("synced {since} ago"));
    }
    Health {
        level,
        reasons: red,
    }
}

/// Seconds from `from` to `to`, never negative (clocks of two machines may disagree).
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// `45s`, `12m 5s`, `3h 2m`, `4days 1h`: two units at most, as a person reads an age.
pub fn duration_text(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    let unit = match seconds {
        0..3600 => 1,
        3600..86_400 => 60,
        _ => 3600,
    };
    let rounded = seconds / unit * unit;
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn now() -> DateTime<Utc> {
        "2026-12-08T12:00:00Z".parse().unwrap()
    }

    fn synced(minutes_ago: i64) -> EntityFacts {
        EntityFacts {
            last_success_at: Some(now() - Duration::minutes(minutes_ago)),
            runs_24h: 100,
            ..EntityFacts::default()
        }
    }

    fn level(facts: &EntityFacts) -> (Level, Vec<String>) {
        let health = classify_entity(facts, now(), &Thresholds::default());
        (health.level, health.reasons)
    }

    #[test]
    fn fresh_data_is_green_and_says_how_fresh() {
        assert_eq!(
            level(&synced(3)),
            (Level::Green, vec!["synced 3m ago".into()])
        );
    }

    #[test]
    fn stale_data_turns_amber_then_red() {
        assert_eq!(
            level(&synced(20)),
            (Level::Amber, vec!["last successful run 20m ago".into()])
        );
        assert_eq!(
            level(&synced(185)).0,
            Level::Red,
            "{:?}",
            level(&synced(185))
        );
        assert_eq!(level(&synced(185)).1, ["last successful run 3h 5m ago"]);
    }

    #[test]
    fn failures_are_amber_while_the_data_is_fresh() {
        let mut facts = synced(2);
        facts.failed_24h = 3;
        assert_eq!(
            level(&facts),
            (
                Level::Amber,
                vec!["3 of 100 runs failed in the last 24 hours".into()]
            )
        );
        facts.last_run_failed = Some(("incremental".into(), "portal unreachable".into()));
        assert_eq!(
            level(&facts).1,
            ["the last run (incremental) failed: portal unreachable"]
        );
    }

    #[test]
    fn a_refused_deletion_is_red_and_says_how_to_confirm() {
        let mut facts = synced(2);
        facts.refusal = Some(("reconcile".into(), 1200, 10_000));
        let (level, reasons) = level(&facts);
        assert_eq!(level, Level::Red);
        assert!(
            reasons[0].contains("refused to delete 1200 of 10000"),
            "{reasons:?}"
        );
        assert!(reasons[0].contains("--mode reconcile --confirm-deletes"));
    }

    #[test]
    fn an_entity_never_synced_is_amber_unless_its_runs_fail() {
        assert_eq!(
            level(&EntityFacts::default()),
            (Level::Amber, vec!["not synced yet".into()])
        );
        let first = EntityFacts {
            full_sync_at: Some(52_000),
            ..EntityFacts::default()
        };
        assert_eq!(level(&first).1, ["first full sync under way (at ID 52000)"]);
        let failing = EntityFacts {
            last_run_failed: Some(("full".into(), "invalid credentials".into())),
            ..EntityFacts::default()
        };
        assert_eq!(level(&failing).0, Level::Red);
    }

    #[test]
    fn the_worst_part_decides_and_names_itself() {
        let green = Health::green("fine");
        let amber = Health {
            level: Level::Amber,
            reasons: vec!["slow".into()],
        };
        let red = Health {
            level: Level::Red,
            reasons: vec!["down".into()],
        };
        let all = Health::worst(
            [("deal", &green), ("lead", &amber), ("contact", &red)],
            || "unused".into(),
        );
        assert_eq!(all.level, Level::Red);
        assert_eq!(all.reasons, ["contact: down", "lead: slow"]);
        let fine = Health::worst([("deal", &green)], || "all synced".into());
        assert_eq!(fine, Health::green("all synced"));
    }

    #[test]
    fn durations_read_like_ages() {
        assert_eq!(duration_text(44.6), "45s");
        assert_eq!(duration_text(725.0), "12m 5s");
        assert_eq!(duration_text(3.0 * 3600.0 + 125.0), "3h 2m");
        assert_eq!(duration_text(4.0 * 86_400.0 + 3700.0), "4days 1h");
        assert_eq!(duration_text(-5.0), "0s");
    }
}
