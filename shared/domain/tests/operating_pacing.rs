//! The operating-time model against a model portal: a listing of chained batches, each
//! request taking a random time (a busy machine, a slow network), must never run into
//! the portal's per-command budget check.
//!
//! The model portal keeps each method's usage in ten buckets per window and drops a
//! bucket whole once it is a window old, checks the budget before every command of a
//! batch and charges each command when it finishes, as the simulator (and the
//! documented portal) does.

use std::collections::VecDeque;

use b24_domain::limits::{Admission, LimitSettings, OperatingReport, PortalBudget};
use proptest::prelude::*;

const METHOD: &str = "crm.deal.list";

struct ModelPortal {
    budget: f64,
    window: f64,
    buckets: VecDeque<(f64, f64)>,
}

impl ModelPortal {
    fn drop_old(&mut self, now: f64) {
        while self
            .buckets
            .front()
            .is_some_and(|(start, _)| start + self.window <= now)
        {
            self.buckets.pop_front();
        }
    }

    fn used(&mut self, now: f64) -> f64 {
        self.drop_old(now);
        self.buckets.iter().map(|(_, s)| s).sum()
    }

    fn charge(&mut self, now: f64, seconds: f64) {
        let width = self.window / 10.0;
        let start = (now / width).floor() * width;
        self.drop_old(now);
        match self.buckets.back_mut() {
            Some((last, used)) if *last == start => *used += seconds,
            _ => self.buckets.push_back((start, seconds)),
        }
    }

    fn reset_at(&mut self, now: f64) -> f64 {
        self.drop_old(now);
        let oldest = self.buckets.front().map_or(now, |(start, _)| *start);
        (oldest + self.window).ceil()
    }

    /// Runs `commands` commands of `cost` each, spread evenly over `duration` from
    /// `start`; returns the refused commands and the report of each command run.
    fn batch(
        &mut self,
        start: f64,
        duration: f64,
        commands: usize,
        cost: f64,
    ) -> (usize, Vec<OperatingReport>) {
        let step = duration / commands as f64;
        let mut refused = 0;
        let mut reports = Vec::new();
        for i in 0..commands {
            let begin = start + step * i as f64;
            if self.used(begin) > self.budget {
                refused += 1;
                continue;
            }
            let finish = begin + step;
            self.charge(finish, cost);
            let total = self.used(finish);
            let reset_at = Some(self.reset_at(finish));
            reports.push(OperatingReport::new(METHOD, total, reset_at));
        }
        (refused, reports)
    }
}

/// Runs a batch of `commands` per duration through the limiter; returns the refused
/// commands and the time the listing took. `every_command` says whether the limiter
/// sees each command's total (a batch answer) or only the last (a single call's).
fn listing(
    settings: &LimitSettings,
    commands: usize,
    cost: f64,
    durations: &[f64],
    delays: &[f64],
    every_command: bool,
) -> (usize, f64) {
    let mut portal = ModelPortal {
        budget: settings.operating_budget_secs,
        window: settings.operating_window_secs,
        buckets: VecDeque::new(),
    };
    let started = 1_000_000.0;
    let mut now = started;
    let mut budget = PortalBudget::new(now);
    let mut refused = 0;
    for (duration, delay) in durations.iter().zip(delays) {
        loop {
            match budget.admit(now, &["batch", METHOD], settings) {
                Admission::Wait(wait) => now += wait.max(1e-3),
                Admission::Send { after } => {
                    now += after;
                    break;
                }
            }
        }
        let (lost, mut reports) = portal.batch(now + delay / 2.0, *duration, commands, cost);
        refused += lost;
        now += duration + delay;
        if !every_command {
            reports.drain(..reports.len().saturating_sub(1));
        }
        budget.observe(now, &reports, settings);
    }
    (refused, now - started)
}

fn tight() -> LimitSettings {
    // The simulator test's scaled-down budget: 2.2 operating seconds per 4 s window,
    // with the request bucket out of the way.
    LimitSettings {
        burst: 10_000.0,
        drain_per_sec: 1_000.0,
        operating_budget_secs: 2.2,
        operating_window_secs: 4.0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_listing_never_meets_the_budget_check_however_long_its_requests_take(
        durations in prop::collection::vec(0.01f64..2.5, 12..40),
        delays in prop::collection::vec(0.0f64..0.3, 40),
        command_cost in 0.005f64..0.015,
    ) {
        let (refused, _) = listing(&tight(), 50, command_cost, &durations, &delays, true);
        prop_assert_eq!(refused, 0);
    }

    /// Single calls report one total each, so a request's cost is known only from the
    /// growth between answers; requests of up to a tenth of the window, and a listing
    /// whose first request the budget cannot hold twice.
    #[test]
    fn single_calls_never_meet_the_budget_check(
        durations in prop::collection::vec(0.01f64..0.4, 12..40),
        delays in prop::collection::vec(0.0f64..0.3, 40),
        cost in 0.2f64..1.0,
    ) {
        let (refused, _) = listing(&tight(), 1, cost, &durations, &delays, false);
        prop_assert_eq!(refused, 0);
    }
}

#[test]
fn fast_requests_still_use_most_of_each_window() {
    // Requests that take no time: the listing needs about one window per budget's
    // worth of requests, not many more.
    let settings = tight();
    let requests = 40;
    let cost = 0.01;
    let (refused, elapsed) = listing(
        &settings,
        50,
        cost,
        &vec![0.02; requests],
        &vec![0.0; requests],
        true,
    );
    assert_eq!(refused, 0);
    let total = requests as f64 * 50.0 * cost;
    let windows = (total / settings.operating_budget_secs).ceil();
    assert!(
        elapsed <= (windows + 2.0) * settings.operating_window_secs,
        "{elapsed} s for {windows} windows' worth"
    );
}
