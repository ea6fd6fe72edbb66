//! Sync decisions that need no IO: which modification time an incremental pass starts
//! from, where an unfinished pass continues, what an ID-set comparison says must be
//! deleted or fetched, and whether a run may delete as much as it found gone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, FixedOffset};
use serde::{Deserialize, Serialize};

/// What a sync run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rows modified since the stored cursor (minus an overlap), paged by ID windows.
    Incremental,
    /// Every row, in time-boxed slices that checkpoint the last ID; deletions found on
    /// the way. Continues an unfinished full sync if there is one.
    Full,
    /// Continues an unfinished full sync and does nothing when there is none: the
    /// frequent schedule that carries a big full sync across invocations.
    Resume,
    /// Compares the portal's ID set with the mirror's: soft-deletes what the portal no
    /// longer has and fetches what the mirror lacks.
    Reconcile,
    /// Refreshes the portal's reference tables (funnels, stages and lists, currencies,
    /// users): not a mode of one entity.
    Reference,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Incremental => "incremental",
            Mode::Full => "full",
            Mode::Resume => "resume",
            Mode::Reconcile => "reconcile",
            Mode::Reference => "reference",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended, as recorded in `_sync_runs.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Reached the end of what the mode does.
    Completed,
    /// Stopped at its time box; the next run continues from the checkpoint.
    Stopped,
    /// Found more deletions than the guard allows without confirmation; deleted
    /// nothing and kept its checkpoint and the deletions it found.
    Refused,
    /// Another run of the same portal entity held the run lock; did nothing.
    AlreadyRunning,
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Stopped => "stopped",
            RunOutcome::Refused => "refused",
            RunOutcome::AlreadyRunning => "already_running",
            RunOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown sync mode {0:?}: expected one of incremental, full, resume, reconcile")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Mode::Incremental,
            Mode::Full,
            Mode::Resume,
            Mode::Reconcile,
            Mode::Reference,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{field}: {value:?} is not an ISO-8601 date-time with an offset (like 2024-08-30T14:29:00+03:00)"
)]
pub struct BadPortalTime {
    pub field: &'static str,
    pub value: String,
}

/// Parses a Bitrix24 date-time (`2024-08-30T14:29:00+03:00`), keeping the portal's offset.
pub fn parse_portal_time(
    field: &'static str,
    value: &str,
) -> Result<DateTime<FixedOffset>, BadPortalTime> {
    DateTime::parse_from_rfc3339(value.trim()).map_err(|_| BadPortalTime {
        field,
        value: value.to_string(),
    })
}

/// The `>=DATE_MODIFY` bound of an incremental pass: the cursor minus `overlap`, written
/// in the cursor's own offset so the portal compares it in its own time zone.
pub fn incremental_since(cursor: &str, overlap: Duration) -> Result<String, BadPortalTime> {
    let at = parse_portal_time("cursor", cursor)? - overlap;
    Ok(at.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

/// The later of two portal times, kept verbatim. Unparseable candidates never win, so a
/// malformed row cannot move the cursor.
pub fn later_time(current: Option<String>, candidate: &str) -> Option<String> {
    let Ok(candidate_at) = parse_portal_time("DATE_MODIFY", candidate) else {
        return current;
    };
    match current.as_deref().map(|c| parse_portal_time("cursor", c)) {
        Some(Ok(current_at)) if current_at >= candidate_at => current,
        _ => Some(candidate.to_string()),
    }
}

/// Where an unfinished incremental pass continues: the same `>=DATE_MODIFY` bound,
/// after the last ID it wrote (the listing is in ascending ID order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementalCheckpoint {
    /// The pass's `>=DATE_MODIFY` bound, kept so every slice lists the same set.
    pub since: String,
    pub after_id: u64,
    /// The portal's newest `DATE_MODIFY` read before the pass's first slice; the
    /// cursor moves there when the pass completes, so rows changed while the pass
    /// was under way are read again by the next one.
    pub target: Option<String>,
}

/// The default share of an entity's live mirror rows one run may soft-delete without
/// confirmation.
pub const DEFAULT_MAX_DELETE_SHARE: f64 = 0.10;

/// How much a run may soft-delete: at most `max_share` of the entity's live rows for
/// the portal, unless the operator confirmed (or the share is 1.0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeleteGuard {
    pub max_share: f64,
    pub confirmed: bool,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_share: DEFAULT_MAX_DELETE_SHARE,
            confirmed: false,
        }
    }
}

/// A deletion the guard did not let through, with the counts behind it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, thiserror::Error)]
#[error(
    "would soft-delete {would_delete} of {live_rows} live rows ({:.1} %), more than the allowed {:.1} %",
    percent(*would_delete, *live_rows),
    max_share * 100.0
)]
pub struct DeletesRefused {
    pub would_delete: u64,
    pub live_rows: u64,
    pub max_share: f64,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl DeleteGuard {
    /// Whether soft-deleting `would_delete` of `live_rows` may go ahead.
    pub fn check(&self, would_delete: u64, live_rows: u64) -> Result<(), DeletesRefused> {
        let allowed = self.confirmed
            || self.max_share >= 1.0
            || would_delete == 0
            || would_delete as f64 <= self.max_share * live_rows as f64;
        if allowed {
            Ok(())
        } else {
            Err(DeletesRefused {
                would_delete,
                live_rows,
                max_share: self.max_share,
            })
        }
    }
}

/// The part of `remaining` one of `parts_left` consumers gets when each takes an equal
/// share of what is left: time one leaves unused flows to those after it, and none
/// can take the others' share.
pub fn fair_share(remaining: std::time::Duration, parts_left: usize) -> std::time::Duration {
    remaining / u32::try_from(parts_left.max(1)).unwrap_or(u32::MAX)
}

/// The outcome of comparing one ID window of the portal with the same window of the mirror.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdDiff {
    /// On the portal, not (or not live) in the mirror: fetch and upsert.
    pub missing_in_mirror: Vec<u64>,
    /// Live in the mirror, gone from the portal: soft-delete.
    pub gone_from_portal: Vec<u64>,
    /// In both, with a different version (for `diff_sorted` with versions).
    pub different: Vec<u64>,
}

impl IdDiff {
    pub fn is_empty(&self) -> bool {
        self.missing_in_mirror.is_empty()
            && self.gone_from_portal.is_empty()
            && self.different.is_empty()
    }
}

/// Compares two ascending, duplicate-free ID lists.
pub fn diff_sorted_ids(portal: &[u64], mirror: &[u64]) -> IdDiff {
    let with_unit = |ids: &[u64]| ids.iter().map(|&id| (id, ())).collect::<Vec<_>>();
    diff_sorted(&with_unit(portal), &with_unit(mirror))
}

/// Compares two lists of `(id, version)` sorted by ascending, duplicate-free ID.
pub fn diff_sorted<V: PartialEq>(portal: &[(u64, V)], mirror: &[(u64, V)]) -> IdDiff {
    let mut diff = IdDiff::default();
    let (mut p, mut m) = (0, 0);
    while p < portal.len() || m < mirror.len() {
        match (portal.get(p), mirror.get(m)) {
            (Some((a, va)), Some((b, vb))) if a == b => {
                if va != vb {
                    diff.different.push(*a);
                }
                p += 1;
                m += 1;
            }
            (Some((a, _)), Some((b, _))) if a < b => {
                diff.missing_in_mirror.push(*a);
                p += 1;
            }
            (Some(_), Some((b, _))) | (None, Some((b, _))) => {
                diff.gone_from_portal.push(*b);
                m += 1;
            }
            (Some((a, _)), None) => {
                diff.missing_in_mirror.push(*a);
                p += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_keeps_the_portal_offset() {
        let since = incremental_since("2024-08-30T14:29:00+03:00", Duration::minutes(5)).unwrap();
        assert_eq!(since, "2024-08-30T14:24:00+03:00");
        let since = incremental_since("2024-01-01T00:02:00-05:00", Duration::minutes(5)).unwrap();
        assert_eq!(since, "2023-12-31T23:57:00-05:00");
        let err = incremental_since("yesterday", Duration::minutes(5)).unwrap_err();
        assert!(err.to_string().contains("yesterday"));
    }

    #[test]
    fn later_time_compares_instants_not_strings() {
        // 10:00+00:00 is later than 12:00+03:00 (09:00 UTC).
        let c = later_time(
            Some("2024-01-01T12:00:00+03:00".into()),
            "2024-01-01T10:00:00+00:00",
        );
        assert_eq!(c.as_deref(), Some("2024-01-01T10:00:00+00:00"));
        let c = later_time(c, "2024-01-01T12:30:00+03:00");
        assert_eq!(c.as_deref(), Some("2024-01-01T10:00:00+00:00"));
        assert_eq!(later_time(None, "garbage"), None);
        assert_eq!(later_time(c.clone(), "garbage"), c);
    }

    #[test]
    fn diff_finds_both_directions() {
        let d = diff_sorted_ids(&[1, 2, 4, 7, 9], &[2, 3, 4, 8, 9, 10]);
        assert_eq!(d.missing_in_mirror, vec![1, 7]);
        assert_eq!(d.gone_from_portal, vec![3, 8, 10]);
        assert_eq!(diff_sorted_ids(&[], &[]), IdDiff::default());
        let d = diff_sorted(
            &[(1, "a"), (2, "b"), (3, "c")],
            &[(1, "a"), (2, "x"), (4, "d")],
        );
        assert_eq!(
            (d.missing_in_mirror, d.gone_from_portal, d.different),
            (vec![3], vec![4], vec![2])
        );
    }

    #[test]
    fn the_guard_allows_up_to_the_share_and_refuses_beyond_it() {
        let guard = DeleteGuard::default();
        assert_eq!(guard.check(0, 0), Ok(()));
        assert_eq!(guard.check(100, 1_000), Ok(()));
        let refused = guard.check(101, 1_000).unwrap_err();
        assert_eq!((refused.would_delete, refused.live_rows), (101, 1_000));
        assert_eq!(
            refused.to_string(),
            "would soft-delete 101 of 1000 live rows (10.1 %), more than the allowed 10.0 %"
        );
        // The portal listing nothing at all is the whole mirror.
        assert!(guard.check(300, 300).is_err());
        assert!(guard.check(1, 0).is_err());
        let confirmed = DeleteGuard {
            confirmed: true,
            ..guard
        };
        assert_eq!(confirmed.check(900, 1_000), Ok(()));
        let everything = DeleteGuard {
            max_share: 1.0,
            confirmed: false,
        };
        assert_eq!(everything.check(1_000, 1_000), Ok(()));
        let none = DeleteGuard {
            max_share: 0.0,
            confirmed: false,
        };
        assert!(none.check(1, 1_000_000).is_err());
    }

    #[test]
    fn fair_shares_split_what_is_left() {
        use std::time::Duration as D;
        assert_eq!(fair_share(D::from_secs(90), 3), D::from_secs(30));
        assert_eq!(fair_share(D::from_secs(60), 1), D::from_secs(60));
        assert_eq!(fair_share(D::from_secs(60), 0), D::from_secs(60));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("FULL".parse::<Mode>(), Ok(Mode::Full));
        assert!(
            "nightly"
                .parse::<Mode>()
                .unwrap_err()
                .to_string()
                .contains("reconcile")
        );
    }
}
