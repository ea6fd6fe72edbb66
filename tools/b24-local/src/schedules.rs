//! The schedules as timers: what EventBridge Scheduler does in AWS, one schedule per
//! mode and configured portal, each invoking the scheduled sync with its explicit input,
//! and the back-sync schedule.

use std::sync::Mutex;
use std::time::Duration;

use b24_config::Config;
use b24_domain::sync::Mode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::LocalState;

/// `MODE=EVERY` from the command line: `incremental=5m`, `reconcile=1h`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSpec {
    pub mode: Mode,
    pub every: Duration,
}

/// Reads `MODE=EVERY`, naming what is wrong.
pub fn parse_schedule(text: &str) -> Result<ScheduleSpec, String> {
    let (mode, every) = text
        .split_once('=')
        .ok_or_else(|| format!("schedule {text:?}: expected MODE=EVERY, like incremental=5m"))?;
    let mode: Mode = serde_json::from_value(Value::String(mode.trim().to_string()))
        .map_err(|_| {
            format!("schedule {text:?}: mode {mode:?} is not one of incremental, full, resume, reconcile, reference")
        })?;
    let every = humantime::parse_duration(every.trim())
        .map_err(|error| format!("schedule {text:?}: interval {every:?}: {error}"))?;
    if every.is_zero() {
        return Err(format!(
            "schedule {text:?}: the interval must be longer than zero"
        ));
    }
    Ok(ScheduleSpec { mode, every })
}

/// One timer: a name, the function it invokes, its interval, its input and what its
/// runs did.
pub(crate) struct Schedule {
    pub name: String,
    pub target: Target,
    pub every: Duration,
    pub input: Value,
    pub runs: Mutex<ScheduleRuns>,
}

/// The function a schedule invokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    SyncScheduled,
    BackSync,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ScheduleRuns {
    pub runs: u64,
    pub failures: u64,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    /// The function's answer, or `{"errorType", "errorMessage"}` as Lambda reports one.
    pub last_answer: Option<Value>,
}

/// A schedule per spec and portal, named `MODE-PORTAL`, and with `back_sync` set the
/// template's one back-sync schedule, `back-sync` (input `{}`: every portal with
/// back-sync on).
pub(crate) fn for_portals(
    specs: &[ScheduleSpec],
    back_sync: Option<Duration>,
    config: &Config,
) -> Vec<Schedule> {
    let syncs = specs.iter().flat_map(|spec| {
        config.portals.keys().map(move |portal| Schedule {
            name: format!("{}-{portal}", spec.mode),
            target: Target::SyncScheduled,
            every: spec.every,
            input: json!({"portal": portal, "mode": spec.mode}),
            runs: Mutex::new(ScheduleRuns::default()),
        })
    });
    let push = back_sync.map(|every| Schedule {
        name: "back-sync".into(),
        target: Target::BackSync,
        every,
        input: json!({}),
        runs: Mutex::new(ScheduleRuns::default()),
    });
    syncs.chain(push).collect()
}

/// Fires schedule `index` every interval, the first time one interval after the start.
/// A run that takes longer than the interval delays the next one rather than
/// overlapping it (the run lock would refuse the overlap anyway).
pub(crate) async fn run_timer(state: &LocalState, index: usize) {
    let every = state.schedules[index].every;
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        fire(state, index).await;
    }
}

/// Runs schedule `index` now and records what it did.
pub(crate) async fn fire(state: &LocalState, index: usize) -> Value {
    let schedule = &state.schedules[index];
    lock(&schedule.runs).last_started_at = Some(Utc::now());
    tracing::info!(schedule = %schedule.name, input = %schedule.input, "schedule fired");
    let answer = match schedule.target {
        Target::SyncScheduled => state.invoke_sync(schedule.input.clone()).await,
        Target::BackSync => state.invoke_back_sync(schedule.input.clone()).await,
    };
    let mut runs = lock(&schedule.runs);
    runs.runs += 1;
    runs.last_finished_at = Some(Utc::now());
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            runs.failures += 1;
            tracing::error!(schedule = %schedule.name, %error, "scheduled run failed");
            crate::routes::function_error_body(&error)
        }
    };
    runs.last_answer = Some(answer.clone());
    answer
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_schedule_and_names_what_is_wrong() {
        assert_eq!(
            parse_schedule("incremental=30s").unwrap(),
            ScheduleSpec {
                mode: Mode::Incremental,
                every: Duration::from_secs(30)
            }
        );
        assert_eq!(
            parse_schedule("reconcile = 1h 30m").unwrap().every,
            Duration::from_secs(5400)
        );
        for (bad, named) in [
            ("incremental", "MODE=EVERY"),
            ("hourly=5m", "hourly"),
            ("full=soon", "soon"),
            ("full=0s", "longer than zero"),
        ] {
            let error = parse_schedule(bad).unwrap_err();
            assert!(error.contains(named), "{bad}: {error}");
        }
    }
}
