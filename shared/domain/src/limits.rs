//! Arithmetic of the two Bitrix24 limits, with time passed in explicitly (unix seconds)
//! so the same code serves the in-process limiter, the Postgres-backed shared one and
//! the tests.
//!
//! * Request rate: a leaky bucket per webhook. Each HTTP request (a `batch` counts as
//!   one) adds 1; the level drains by `drain_per_sec`; above `burst` the portal answers
//!   503 `QUERY_LIMIT_EXCEEDED`.
//! * Operating time: per method, the portal sums the seconds it spent executing the
//!   method over a rolling window, and every answer reports that running total
//!   (`time.operating`) and when its oldest part leaves the window
//!   (`time.operating_reset_at`). While the total is above the budget, the method's
//!   next call gets 429 `OPERATION_TIME_LIMIT` (inside a batch, every command after
//!   the total crossed it). Reported totals are never added up: each report replaces
//!   the previous one, the growth between two reports is what the request in between
//!   cost, and [`OperatingWindow`] keeps a model of the total that is never below the
//!   portal's, so a method is paced to stay within its budget without a 429.
//!
//! Every wait computed here lies in `[0, window]`, and every moment taken from the
//! portal or from stored state is clamped to `[now, now + window]`: a garbled value
//! (`1e20`, infinity, NaN, milliseconds instead of seconds) delays a method by one
//! window at most, and nothing here panics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The limits of one portal as seen by one webhook.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests the bucket holds before the portal refuses (X in the docs).
    pub burst: f64,
    /// Requests per second the bucket drains (Y in the docs).
    pub drain_per_sec: f64,
    /// Operating seconds a method may use within the window.
    pub operating_budget_secs: f64,
    /// Length of the rolling operating window.
    pub operating_window_secs: f64,
}

/// The documented window, used when a settings value is not a positive number.
const DOCUMENTED_WINDOW_SECS: f64 = 600.0;

/// Requests kept free below the portal's burst, so that requests arriving closer
/// together than they were sent (network jitter) still fit in the portal's bucket.
pub const BUCKET_HEADROOM: f64 = 2.0;

/// Parts kept per method and window: parts seen within one slot of window / this are
/// merged under the latest sighting (and the earliest sending), which bounds the state
/// (the shared limiter stores it per request) and only ever delays a part's expiry.
const PARTS_PER_WINDOW: f64 = 100.0;

impl LimitSettings {
    /// Every plan but Enterprise: burst 50, 2 requests/s, 480 s per 10 minutes.
    pub fn standard() -> Self {
        LimitSettings {
            burst: 50.0,
            drain_per_sec: 2.0,
            operating_budget_secs: 480.0,
            operating_window_secs: 600.0,
        }
    }

    /// Enterprise: burst 250, 5 requests/s, 480 s per 10 minutes.
    pub fn enterprise() -> Self {
        LimitSettings {
            burst: 250.0,
            drain_per_sec: 5.0,
            ..Self::standard()
        }
    }

    /// The operating window, and the longest any limiter ever waits.
    pub fn window_secs(&self) -> f64 {
        let window = self.operating_window_secs;
        if window.is_finite() && window > 0.0 {
            window
        } else {
            DOCUMENTED_WINDOW_SECS
        }
    }

    /// Requests the client lets into the bucket before pacing.
    pub fn bucket_capacity(&self) -> f64 {
        (self.burst - BUCKET_HEADROOM).max(1.0)
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self::standard()
    }
}

/// A wait in `[0, window]`; NaN and negative waits are no wait.
pub fn clamp_wait(secs: f64, window: f64) -> f64 {
    if secs > 0.0 { secs.min(window) } else { 0.0 }
}

/// A moment the portal or stored state named, clamped to `[now, now + window]`;
/// `None` for NaN (no usable moment).
pub fn clamp_moment(at: f64, now: f64, window: f64) -> Option<f64> {
    (!at.is_nan()).then(|| at.max(now).min(now + window))
}

/// A client-side mirror of the portal's request bucket.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakyBucket {
    pub level: f64,
    pub updated_at: f64,
}

impl LeakyBucket {
    pub fn new(now: f64) -> Self {
        LeakyBucket {
            level: 0.0,
            updated_at: now,
        }
    }

    fn drained(&self, now: f64, drain_per_sec: f64) -> f64 {
        (self.level - (now - self.updated_at).max(0.0) * drain_per_sec).max(0.0)
    }

    /// Reserves room for one request and returns how many seconds the caller must wait
    /// before sending it so that the level never exceeds `capacity`. Reservations made
    /// by concurrent callers queue up behind each other. Not clamped: the caller
    /// clamps to its window.
    pub fn reserve(&mut self, now: f64, capacity: f64, drain_per_sec: f64) -> f64 {
        let level = self.drained(now, drain_per_sec) + 1.0;
        let wait = if level > capacity {
            (level - capacity) / drain_per_sec
        } else {
            0.0
        };
        self.level = level;
        self.updated_at = now;
        wait
    }

    /// After the portal said 503, treat the bucket as full.
    pub fn saturate(&mut self, now: f64, capacity: f64) {
        self.level = self.level.max(capacity);
        self.updated_at = now;
    }
}

/// What one portal answer said about one method's operating time.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatingReport {
    /// The method, lower case without `.json` (`crm.deal.list`, `batch`).
    pub method: String,
    /// `time.operating`: the method's running total in the window.
    pub total: f64,
    /// `time.operating_reset_at`: when the oldest part of that total leaves the window.
    pub reset_at: Option<f64>,
}

impl OperatingReport {
    pub fn new(method: impl Into<String>, total: f64, reset_at: Option<f64>) -> Self {
        OperatingReport {
            method: method.into(),
            total,
            reset_at,
        }
    }
}

/// The portal keeps the window in ten buckets and drops a bucket whole, so usage stays
/// in the portal's total for at least nine tenths of the window after it was charged.
const SHORTEST_STAY: f64 = 0.9;

/// Kept free beyond the expected cost of the next request: it may cost a little more
/// than the last one did, and inside a batch every command past the budget gets a 429.
const COST_MARGIN: f64 = 0.1;

/// One part of a method's reported total: what the requests answered by one report
/// added. Known only within bounds, because older usage may have left the window in
/// between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Nothing in this part was charged before this moment: the previous report
    /// (requests of one method go one after another), or for a first report the start
    /// of the portal's oldest bucket.
    pub sent_after: f64,
    /// When the report arrived; the portal lets the part go within a window of it.
    pub seen: f64,
    /// At least the total's growth since the previous report.
    pub at_least: f64,
    /// At most the total less what older parts surely still hold.
    pub at_most: f64,
}

/// One method's operating time, as its portal reports it.
///
/// The portal reports only running totals. A request's cost is the growth of the
/// total if nothing left the window in between, and at most the new total less the
/// older usage that cannot have left yet. Each part leaves this model a full window
/// after it was seen, never before the portal lets it go, and the model never exceeds
/// the latest reported total: the modelled total is never below the portal's (for
/// the usage whose answers the limiter sees).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatingWindow {
    /// The latest window total the portal reported, and when.
    pub reported_total: f64,
    pub reported_at: Option<f64>,
    /// `operating_reset_at` of that report, clamped to the window.
    pub reset_at: Option<f64>,
    /// The parts of the total still in the model, oldest first.
    pub parts: Vec<Part>,
    /// What the method's next request is expected to add: the latest growth of the
    /// total between two reports (a smaller growth halves it at most, and only when
    /// nothing can have left the window in between).
    pub next_cost: f64,
    /// Until when the portal refused the method with 429.
    pub blocked_until: Option<f64>,
}

impl OperatingWindow {
    /// The modelled total at `now`.
    pub fn modelled_total(&self, now: f64, window: f64) -> f64 {
        let parts: f64 = self.live_parts(now, window).map(|p| p.at_most).sum();
        parts.min(self.reported_total)
    }

    fn live_parts(&self, now: f64, window: f64) -> impl Iterator<Item = &Part> + '_ {
        self.parts.iter().filter(move |p| p.seen + window > now)
    }

    /// Brings stored moments into `[.., now + window]`, drops what left the window and
    /// what is not a number, so that garbled state delays by one window at most.
    fn settle(&mut self, now: f64, window: f64) {
        self.parts.retain(|p| {
            p.at_most.is_finite() && p.at_most > 0.0 && !p.seen.is_nan() && !p.sent_after.is_nan()
        });
        for part in &mut self.parts {
            part.seen = part.seen.min(now);
            part.sent_after = part.sent_after.min(part.seen);
            if !(part.at_least.is_finite() && part.at_least >= 0.0) {
                part.at_least = 0.0;
            }
            part.at_least = part.at_least.min(part.at_most);
        }
        self.parts.retain(|p| p.seen + window > now);
        let latest = now + window;
        self.blocked_until = self
            .blocked_until
            .filter(|until| !until.is_nan())
            .map(|until| until.min(latest))
            .filter(|until| *until > now);
        self.reset_at = self.reset_at.filter(|r| !r.is_nan()).map(|r| r.min(latest));
        self.reported_at = self
            .reported_at
            .filter(|at| !at.is_nan())
            .map(|at| at.min(now));
        if !(self.reported_total.is_finite() && self.reported_total >= 0.0) {
            self.reported_total = 0.0;
        }
        if !(self.next_cost.is_finite() && self.next_cost >= 0.0) {
            self.next_cost = 0.0;
        }
    }

    /// Takes the method's window total reported at `now` and returns its growth since
    /// the previous report (the whole total for the first report in a window, zero
    /// when it fell because older usage left). A total that is not a non-negative
    /// number is ignored.
    pub fn report(
        &mut self,
        now: f64,
        total: f64,
        reset_at: Option<f64>,
        settings: &LimitSettings,
    ) -> f64 {
        self.report_measured(now, total, reset_at, None, settings)
    }

    /// [`Self::report`] for an answer that also said what its own request cost
    /// (`measured`: the growth between the totals its commands reported, see
    /// [`PortalBudget::observe`]), which stands for the cost when the growth since the
    /// previous report cannot.
    pub fn report_measured(
        &mut self,
        now: f64,
        total: f64,
        reset_at: Option<f64>,
        measured: Option<f64>,
        settings: &LimitSettings,
    ) -> f64 {
        let window = settings.window_secs();
        self.settle(now, window);
        if !(total.is_finite() && total >= 0.0) {
            return 0.0;
        }
        let previous = self.reported_at.filter(|at| now - at < window);
        let growth = match previous {
            Some(_) => (total - self.reported_total).max(0.0),
            None => total,
        };
        let surely_held: f64 = self
            .parts
            .iter()
            .filter(|p| p.sent_after + window * SHORTEST_STAY > now)
            .map(|p| p.at_least)
            .sum();
        let at_most = (total - surely_held).max(growth).min(total);
        // The growth is the request's cost only if nothing of the previous total can
        // have left the window meanwhile (a long request, a slow network); else the cost
        // may be more than the growth, and an estimate that shrank with it would let
        // the next batch run past the budget: only a measured cost may lower it then.
        let exact = previous.is_some() && surely_held + 1e-9 >= self.reported_total;
        match exact
            .then_some(growth)
            .or(measured.filter(|c| c.is_finite()))
        {
            Some(cost) if cost > 0.0 => self.next_cost = cost.max(self.next_cost / 2.0),
            _ if previous.is_some() => self.next_cost = self.next_cost.max(growth),
            _ => {}
        }
        // The first report's total may hold older usage: it was all charged after
        // the portal's oldest bucket began (`operating_reset_at` - window, less a
        // second for a reset rounded up), else at most a window ago.
        let charged_after = previous.unwrap_or_else(|| {
            reset_at
                .and_then(|r| clamp_moment(r, now, window))
                .map_or(now - window, |r| (r - window - 1.0).max(now - window))
        });
        let part = Part {
            sent_after: charged_after,
            seen: now,
            at_least: growth,
            at_most,
        };
        self.add_part(part, window);
        self.keep_newest_covering(total);
        self.reported_total = total;
        self.reported_at = Some(now);
        self.reset_at = reset_at.and_then(|r| clamp_moment(r, now, window));
        growth
    }

    fn add_part(&mut self, part: Part, window: f64) {
        if part.at_most <= 0.0 {
            return;
        }
        let slot = |t: f64| (t * PARTS_PER_WINDOW / window).floor();
        match self.parts.last_mut() {
            Some(last) if slot(last.seen) == slot(part.seen) => {
                last.seen = part.seen;
                last.at_least += part.at_least;
                last.at_most += part.at_most;
            }
            _ => self.parts.push(part),
        }
    }

    /// The portal lets usage go oldest first, so the `total` it holds is its newest
    /// usage: older parts beyond the newest ones that cover the total are gone.
    fn keep_newest_covering(&mut self, total: f64) {
        let mut newer: f64 = self.parts.iter().map(|p| p.at_most).sum();
        let mut gone = 0;
        for part in &self.parts {
            newer -= part.at_most;
            if newer < total {
                break;
            }
            gone += 1;
        }
        self.parts
            .drain(..gone.min(self.parts.len().saturating_sub(1)));
    }

    /// The portal refused the method with 429 until `reset_at` (clamped to the
    /// window). Without it, the block lasts until the last report's `reset_at`, else
    /// until the oldest modelled part leaves the window, else one tenth of the window
    /// (the portal keeps the window in ten buckets).
    pub fn block(&mut self, now: f64, reset_at: Option<f64>, settings: &LimitSettings) {
        let window = settings.window_secs();
        self.settle(now, window);
        let future = |at: Option<f64>| {
            at.and_then(|a| clamp_moment(a, now, window))
                .filter(|a| *a > now)
        };
        let until = future(reset_at)
            .or(future(self.reset_at))
            .or(future(self.parts.first().map(|p| p.seen + window)))
            .unwrap_or(now + window / 10.0);
        self.blocked_until = Some(self.blocked_until.map_or(until, |u| u.max(until)));
    }

    /// Seconds to wait before the method's next request, in `[0, window]`.
    ///
    /// No wait while the modelled total leaves room for the next request's expected
    /// cost (plus a margin) within the budget, so that the whole request fits: inside
    /// a batch the portal checks the budget before every command. Otherwise, until
    /// enough parts leave the model, which is never before the portal's
    /// `operating_reset_at` (the oldest part was seen after the portal's oldest
    /// bucket began). Going at the reset itself would be a guess: the portal does not
    /// say how much leaves then.
    pub fn wait_needed(&self, now: f64, settings: &LimitSettings) -> f64 {
        let window = settings.window_secs();
        if let Some(until) = self.blocked_until.filter(|until| *until > now) {
            return clamp_wait(until - now, window);
        }
        let budget = settings.operating_budget_secs;
        let reserve = (self.next_cost * (1.0 + COST_MARGIN)).min(budget);
        let fits = |parts: f64| parts.min(self.reported_total) + reserve <= budget;
        let mut parts: f64 = self.live_parts(now, window).map(|p| p.at_most).sum();
        if fits(parts) {
            return 0.0;
        }
        let mut wait = window;
        let mut live = self.live_parts(now, window).peekable();
        while let Some(part) = live.next() {
            parts -= part.at_most;
            if fits(parts) || live.peek().is_none() {
                wait = part.seen + window - now;
                break;
            }
        }
        clamp_wait(wait, window)
    }

    /// Nothing in the window and no block: the state can be dropped.
    pub fn is_idle(&self, now: f64, settings: &LimitSettings) -> bool {
        let window = settings.window_secs();
        self.live_parts(now, window).next().is_none()
            && self.blocked_until.is_none_or(|until| until <= now)
            && self.reported_at.is_none_or(|at| now - at >= window)
    }
}

/// The reports of one method in one answer, in command order: the highest total, and
/// what the commands after the first added to it.
struct MethodAnswer {
    total: f64,
    reset_at: Option<f64>,
    commands: usize,
    last: f64,
    added: f64,
}

impl MethodAnswer {
    fn new(first: &OperatingReport) -> Self {
        MethodAnswer {
            total: first.total,
            reset_at: first.reset_at,
            commands: 0,
            last: first.total,
            added: 0.0,
        }
    }

    fn add(&mut self, report: &OperatingReport) {
        if self.commands > 0 {
            // Usage leaving the window between two commands only makes a step smaller.
            self.added += (report.total - self.last).max(0.0);
        }
        self.commands += 1;
        self.last = report.total;
        if report.total >= self.total {
            self.total = report.total;
            self.reset_at = report.reset_at.or(self.reset_at);
        }
    }

    /// The request's cost as its own commands show it: the steps between their totals,
    /// with the first command (whose step is unseen) costing their average.
    fn measured(&self) -> Option<f64> {
        let steps = self.commands.checked_sub(1).filter(|n| *n > 0)?;
        Some(self.added * self.commands as f64 / steps as f64)
    }
}

/// Whether one request may be sent now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    /// A method's operating time is short: ask again after this many seconds.
    Wait(f64),
    /// The request is counted into the bucket: send it after this many seconds.
    Send { after: f64 },
}

/// Everything a limiter knows about one portal: its request bucket and the operating
/// time of each method. Both limiters keep exactly this, one in memory and one in a
/// database row.
#[derive(Clone, Debug, PartialEq)]
pub struct PortalBudget {
    pub bucket: LeakyBucket,
    pub methods: BTreeMap<String, OperatingWindow>,
}

impl PortalBudget {
    pub fn new(now: f64) -> Self {
        PortalBudget {
            bucket: LeakyBucket::new(now),
            methods: BTreeMap::new(),
        }
    }

    /// Decides on one request that runs `methods` (one method for a single call; for a
    /// batch, `batch` and its commands' methods).
    pub fn admit(&mut self, now: f64, methods: &[&str], settings: &LimitSettings) -> Admission {
        let window = settings.window_secs();
        let mut operating_wait: f64 = 0.0;
        for method in methods {
            if let Some(state) = self.methods.get_mut(*method) {
                state.settle(now, window);
                operating_wait = operating_wait.max(state.wait_needed(now, settings));
            }
        }
        if operating_wait > 0.0 {
            return Admission::Wait(operating_wait);
        }
        // A stored level that is not a number counts as a full bucket; one from the
        // future, or more queued than a window drains, is bounded.
        let capacity = settings.bucket_capacity();
        let bucket = &mut self.bucket;
        if !bucket.level.is_finite() {
            bucket.level = capacity;
        }
        bucket.level = bucket.level.min(capacity + settings.drain_per_sec * window);
        bucket.updated_at = bucket.updated_at.min(now);
        let wait = self.bucket.reserve(now, capacity, settings.drain_per_sec);
        Admission::Send {
            after: clamp_wait(wait, window),
        }
    }

    /// Takes the operating totals of one answer and returns how much they grew in all
    /// (see [`OperatingWindow::report`]). Several reports of one method (the commands
    /// of a batch) count once, with their highest total: each carries the total after
    /// its own command, so the steps between them, in command order, also measure
    /// what the request cost.
    pub fn observe(
        &mut self,
        now: f64,
        reports: &[OperatingReport],
        settings: &LimitSettings,
    ) -> f64 {
        let mut latest: BTreeMap<&str, MethodAnswer> = BTreeMap::new();
        let usable = |r: &&OperatingReport| r.total.is_finite() && r.total >= 0.0;
        for report in reports.iter().filter(usable) {
            latest
                .entry(report.method.as_str())
                .or_insert_with(|| MethodAnswer::new(report))
                .add(report);
        }
        latest
            .into_iter()
            .map(|(method, answer)| {
                self.methods
                    .entry(method.to_string())
                    .or_default()
                    .report_measured(
                        now,
                        answer.total,
                        answer.reset_at,
                        answer.measured(),
                        settings,
                    )
            })
            .sum()
    }

    /// The portal said 503: the bucket is full.
    pub fn request_refused(&mut self, now: f64, settings: &LimitSettings) {
        self.bucket.saturate(now, settings.burst);
    }

    /// The portal said 429 for `method`.
    pub fn method_refused(
        &mut self,
        now: f64,
        method: &str,
        reset_at: Option<f64>,
        settings: &LimitSettings,
    ) {
        self.methods
            .entry(method.to_string())
            .or_default()
            .block(now, reset_at, settings);
    }

    /// Drops the methods with nothing left to remember.
    pub fn forget_idle(&mut self, now: f64, settings: &LimitSettings) {
        self.methods
            .retain(|_, state| !state.is_idle(now, settings));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tight() -> LimitSettings {
        LimitSettings {
            operating_budget_secs: 10.0,
            operating_window_secs: 60.0,
            ..LimitSettings::standard()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn bucket_allows_burst_then_paces_at_drain_rate() {
        let s = LimitSettings::standard();
        let mut b = LeakyBucket::new(0.0);
        for _ in 0..50 {
            assert_eq!(b.reserve(0.0, s.burst, s.drain_per_sec), 0.0);
        }
        assert!(close(b.reserve(0.0, s.burst, s.drain_per_sec), 0.5));
        assert!(close(b.reserve(0.0, s.burst, s.drain_per_sec), 1.0));
        // Ten seconds later twenty requests have drained.
        let mut b = LeakyBucket {
            level: 50.0,
            updated_at: 0.0,
        };
        assert_eq!(b.reserve(10.0, s.burst, s.drain_per_sec), 0.0);
        assert!(close(b.level, 31.0));
    }

    #[test]
    fn reported_totals_replace_each_other_and_their_growth_is_the_cost() {
        let s = tight();
        let mut w = OperatingWindow::default();
        // The first report: all of it is new, but says nothing about one request's cost.
        assert!(close(w.report(100.0, 2.0, Some(150.0), &s), 2.0));
        assert_eq!(w.next_cost, 0.0);
        // Running totals: 2 -> 3.5 -> 5 is 1.5 per request, 5 in all (never 10.5).
        assert!(close(w.report(101.0, 3.5, Some(150.0), &s), 1.5));
        assert!(close(w.report(102.0, 5.0, Some(150.0), &s), 1.5));
        assert!(close(w.modelled_total(102.0, 60.0), 5.0));
        assert!(close(w.next_cost, 1.5));
        assert_eq!((w.reported_total, w.reported_at), (5.0, Some(102.0)));
        // A total that fell (older usage left the window early) adds nothing and trims
        // the model from its oldest end.
        assert_eq!(w.report(103.0, 4.0, Some(160.0), &s), 0.0);
        assert!(close(w.modelled_total(103.0, 60.0), 4.0));
        assert!(close(w.next_cost, 1.5), "the cost estimate is kept");
    }

    #[test]
    fn a_batch_reports_each_method_once_with_its_highest_total() {
        let s = tight();
        let mut budget = PortalBudget::new(0.0);
        let reports = [
            OperatingReport::new("crm.deal.list", 0.5, Some(60.0)),
            OperatingReport::new("crm.deal.list", 1.5, Some(60.0)),
            OperatingReport::new("crm.deal.list", 1.0, Some(60.0)),
            OperatingReport::new("batch", 0.001, None),
        ];
        assert!(close(budget.observe(1.0, &reports, &s), 1.501));
        assert_eq!(budget.methods["crm.deal.list"].reported_total, 1.5);
        assert_eq!(budget.methods["batch"].reported_total, 0.001);
    }

    #[test]
    fn paces_to_keep_room_for_the_next_request() {
        let s = tight();
        let mut w = OperatingWindow::default();
        w.report(0.0, 3.0, None, &s);
        w.report(1.0, 6.0, None, &s);
        // 6 used + 3 expected (+10%) = 9.3 <= 10: go.
        assert_eq!(w.wait_needed(1.0, &s), 0.0);
        w.report(2.0, 9.0, None, &s);
        // 9 + 3.3 > 10. The first 3 came with whatever the window held before, so the
        // part seen at t=1 may hold up to 6: wait until it leaves (t=61).
        assert!(close(w.wait_needed(2.0, &s), 59.0));
        assert!(w.wait_needed(60.0, &s) > 0.0);
        assert_eq!(w.wait_needed(61.0, &s), 0.0);
    }

    #[test]
    fn paces_on_its_own_model_not_on_the_reset_and_never_waits_past_the_window() {
        let s = tight();
        let mut budget = PortalBudget::new(0.0);
        let deal = |t, r| [OperatingReport::new("crm.deal.list", t, Some(r))];
        budget.observe(0.0, &deal(3.0, 30.0), &s);
        budget.observe(1.0, &deal(6.0, 30.0), &s);
        budget.observe(2.0, &deal(9.0, 30.0), &s);
        // At the portal's reset (30) some unknown part of the 9 leaves; a request of 3
        // could cross the budget mid-batch. The first part surely left at 60.
        assert_eq!(
            budget.admit(2.0, &["crm.deal.list"], &s),
            Admission::Wait(58.0)
        );
        assert_eq!(
            budget.admit(30.0, &["crm.deal.list"], &s),
            Admission::Wait(30.0)
        );
        assert_eq!(
            budget.admit(60.0, &["crm.deal.list"], &s),
            Admission::Send { after: 0.0 }
        );
        // The answer: the portal dropped more than modelled (9 - 9 + 3 = 3).
        budget.observe(61.0, &deal(3.0, 91.0), &s);
        assert!(close(
            budget.methods["crm.deal.list"].modelled_total(61.0, 60.0),
            3.0
        ));
        assert_eq!(
            budget.admit(61.0, &["crm.deal.list"], &s),
            Admission::Send { after: 0.0 }
        );
        // Other methods never wait for this one.
        assert_eq!(
            budget.admit(61.0, &["crm.contact.list"], &s),
            Admission::Send { after: 0.0 }
        );
    }

    #[test]
    fn a_report_over_the_budget_waits_until_enough_has_left() {
        let s = tight();
        let mut w = OperatingWindow::default();
        w.report(0.0, 6.0, None, &s);
        w.report(1.0, 11.0, Some(20.0), &s);
        // All 11 may have come from the t=1 request: wait until it leaves (61), then
        // 0 + 5.5 fits.
        assert!(close(w.wait_needed(1.0, &s), 60.0));
    }

    #[test]
    fn a_request_costlier_than_the_budget_waits_for_an_empty_window_only() {
        let s = tight();
        let mut w = OperatingWindow::default();
        w.report(0.0, 4.0, None, &s);
        w.report(10.0, 18.0, None, &s);
        assert!(close(w.wait_needed(10.0, &s), 60.0));
        assert_eq!(w.wait_needed(70.0, &s), 0.0);
    }

    #[test]
    fn missing_operating_keys_leave_the_method_unpaced() {
        let s = tight();
        let mut budget = PortalBudget::new(0.0);
        assert_eq!(budget.observe(0.0, &[], &s), 0.0);
        for i in 0..100 {
            assert!(matches!(
                budget.admit(f64::from(i), &["crm.deal.list"], &s),
                Admission::Send { .. }
            ));
        }
        assert!(budget.methods.is_empty());
    }

    #[test]
    fn a_429_blocks_until_its_reset_or_the_best_guess() {
        let s = tight();
        let mut w = OperatingWindow::default();
        w.block(0.0, Some(20.0), &s);
        assert!(close(w.wait_needed(0.0, &s), 20.0));
        assert_eq!(w.wait_needed(20.0, &s), 0.0);
        // No reset in the 429: the last report's, else the oldest part's expiry, else
        // a tenth of the window.
        let mut w = OperatingWindow::default();
        w.report(100.0, 12.0, Some(130.0), &s);
        w.block(101.0, None, &s);
        assert_eq!(w.blocked_until, Some(130.0));
        let mut w = OperatingWindow::default();
        w.report(100.0, 12.0, None, &s);
        w.block(101.0, None, &s);
        assert_eq!(w.blocked_until, Some(160.0));
        let mut w = OperatingWindow::default();
        w.block(101.0, None, &s);
        assert_eq!(w.blocked_until, Some(107.0));
    }

    #[test]
    fn garbled_reset_moments_are_clamped_to_the_window() {
        let s = tight();
        let now = 1_700_000_000.0;
        let cases = [
            (1e20, Some(now + 60.0)),
            (f64::INFINITY, Some(now + 60.0)),
            (f64::NEG_INFINITY, Some(now)),
            (-5.0, Some(now)),
            (now * 1000.0, Some(now + 60.0)),
            (f64::NAN, None),
            (now + 12.0, Some(now + 12.0)),
        ];
        for (raw, expected) in cases {
            assert_eq!(clamp_moment(raw, now, 60.0), expected, "{raw}");
            // A 429 with it blocks for at most one window.
            let mut w = OperatingWindow::default();
            w.block(now, Some(raw), &s);
            let wait = w.wait_needed(now, &s);
            assert!((0.0..=60.0).contains(&wait), "{raw}: {wait}");
            assert_eq!(w.wait_needed(now + 60.0, &s), 0.0, "{raw}");
            // A report with it never waits beyond the window either.
            let mut w = OperatingWindow::default();
            w.report(now, 9.0, Some(raw), &s);
            w.report(now + 1.0, 9.8, Some(raw), &s);
            let wait = w.wait_needed(now + 1.0, &s);
            assert!((0.0..=60.0).contains(&wait), "{raw}: {wait}");
            assert_eq!(w.wait_needed(now + 61.0, &s), 0.0, "{raw}");
        }
    }

    #[test]
    fn garbled_totals_are_ignored_and_huge_ones_block_one_window_at_most() {
        let s = tight();
        let mut w = OperatingWindow::default();
        for raw in [f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(w.report(0.0, raw, Some(30.0), &s), 0.0);
        }
        assert_eq!(w, OperatingWindow::default());
        w.report(0.0, 1e20, None, &s);
        assert!(close(w.wait_needed(0.0, &s), 60.0));
        assert_eq!(w.wait_needed(60.0, &s), 0.0);
    }

    #[test]
    fn garbled_stored_state_delays_one_window_at_most() {
        let s = tight();
        let now = 1_000.0;
        let mut budget = PortalBudget::new(now);
        budget.bucket = LeakyBucket {
            level: f64::INFINITY,
            updated_at: 1e20,
        };
        budget.methods.insert(
            "m".into(),
            OperatingWindow {
                reported_total: f64::NAN,
                reported_at: Some(1e20),
                reset_at: Some(1e20),
                parts: vec![
                    Part {
                        sent_after: 1e20,
                        seen: 1e20,
                        at_least: f64::NAN,
                        at_most: 50.0,
                    },
                    Part {
                        sent_after: 0.0,
                        seen: f64::NAN,
                        at_least: 1.0,
                        at_most: 1.0,
                    },
                    Part {
                        sent_after: 0.0,
                        seen: now,
                        at_least: 1.0,
                        at_most: f64::INFINITY,
                    },
                ],
                next_cost: f64::INFINITY,
                blocked_until: Some(1e20),
            },
        );
        let Admission::Wait(wait) = budget.admit(now, &["m"], &s) else {
            panic!("a blocked method must wait");
        };
        assert!(close(wait, 60.0), "{wait}");
        // One window later everything garbled has expired.
        let later = now + 60.0;
        let Admission::Send { after } = budget.admit(later, &["m"], &s) else {
            panic!("garbled state must not block beyond one window");
        };
        assert!((0.0..=60.0).contains(&after), "{after}");
        assert_eq!(
            budget.admit(later + 60.0, &["m"], &s),
            Admission::Send { after: 0.0 }
        );
    }

    #[test]
    fn waits_are_clamped_and_never_nan() {
        assert_eq!(clamp_wait(f64::NAN, 60.0), 0.0);
        assert_eq!(clamp_wait(-3.0, 60.0), 0.0);
        assert_eq!(clamp_wait(f64::INFINITY, 60.0), 60.0);
        assert_eq!(clamp_wait(5.0, 60.0), 5.0);
        let broken = LimitSettings {
            operating_window_secs: f64::NAN,
            ..LimitSettings::standard()
        };
        assert_eq!(broken.window_secs(), 600.0);
    }

    #[test]
    fn parts_seen_close_together_merge_and_idle_methods_are_forgotten() {
        let s = tight();
        let mut budget = PortalBudget::new(0.0);
        for i in 0..1_000 {
            let t = f64::from(i) * 0.1;
            budget.observe(
                t,
                &[OperatingReport::new("m", f64::from(i) * 0.001, None)],
                &s,
            );
        }
        let parts = budget.methods["m"].parts.len();
        assert!(parts <= 101, "{parts} parts");
        budget.forget_idle(99.9, &s);
        assert!(budget.methods.contains_key("m"));
        budget.forget_idle(99.9 + 60.0, &s);
        assert!(budget.methods.is_empty());
    }

    #[test]
    fn usage_leaving_between_two_reports_is_never_credited_to_the_new_request() {
        // Budget 10, window 60. Three requests of 3; the portal then drops the first
        // (its bucket left) while the fourth request runs: the total reads 9 again.
        // Crediting the fourth only 9 - 9 = 0 would let its 3 s vanish from the model
        // when the older parts leave, and the portal would refuse calls the model lets
        // through.
        let s = tight();
        let mut w = OperatingWindow::default();
        w.report(0.0, 3.0, None, &s);
        w.report(1.0, 6.0, None, &s);
        w.report(2.0, 9.0, None, &s);
        w.report(59.5, 9.0, None, &s);
        // Whatever the portal still holds at t, the model holds at least as much: the
        // fourth request's 3 stay until 119.5 at the least.
        for t in [60.0, 61.0, 62.0, 100.0, 119.0] {
            assert!(w.modelled_total(t, 60.0) >= 3.0, "t={t}");
        }
        assert_eq!(w.modelled_total(119.5, 60.0), 0.0);
    }

    #[test]
    fn usage_leaving_during_a_request_never_shrinks_the_expected_cost() {
        // Budget 10, window 60: two requests of 3, then a long one during which the
        // first 3 may have left: a growth of 0.5 says nothing about its cost.
        let s = tight();
        let mut w = OperatingWindow::default();
        w.report(0.0, 3.0, Some(60.0), &s);
        w.report(1.0, 6.0, Some(60.0), &s);
        assert!(close(w.next_cost, 3.0));
        let mut long = w.clone();
        long.report(58.0, 6.5, Some(60.0), &s);
        assert!(close(long.next_cost, 3.0));
        // The answer's own commands measured 2: that may lower it (by half at most).
        w.report_measured(58.0, 6.5, Some(60.0), Some(2.0), &s);
        assert!(close(w.next_cost, 2.0));
    }

    #[test]
    fn a_batch_answer_measures_its_cost_from_its_commands_steps() {
        // Three commands of one method reporting 4, 5 and 6 (the first one's own step
        // is unseen), long after the previous answer: the request cost about 3,
        // whatever the total grew by.
        let s = tight();
        let mut budget = PortalBudget::new(0.0);
        let deal = |total| OperatingReport::new("crm.deal.list", total, Some(60.0));
        budget.observe(0.0, &[deal(1.0)], &s);
        budget.observe(55.0, &[deal(4.0), deal(5.0), deal(6.0)], &s);
        assert!(close(budget.methods["crm.deal.list"].next_cost, 3.0));
    }

    #[test]
    fn growth_without_anything_leaving_is_exact() {
        // Reports close together: nothing can have left. The first total was charged
        // after the portal's oldest bucket began (its reset, 60, less the window and a
        // second), so it stays for the rest of the window too and every part is exact.
        let s = tight();
        let mut w = OperatingWindow::default();
        for (t, total) in [(0.0, 2.0), (1.0, 4.0), (2.0, 6.0), (3.0, 8.0)] {
            w.report(t, total, Some(60.0), &s);
        }
        let bounds: Vec<(f64, f64)> = w.parts.iter().map(|p| (p.at_least, p.at_most)).collect();
        assert_eq!(bounds, [(2.0, 2.0); 4]);
        assert!(close(w.next_cost, 2.0));
        // 8 + 2.2 > 10: the first part must leave, at t=60.
        assert!(close(w.wait_needed(3.0, &s), 57.0));

        // Without a reset the first total may be older usage about to leave: the next
        // request may have cost up to its whole total.
        let mut w = OperatingWindow::default();
        w.report(0.0, 2.0, None, &s);
        w.report(1.0, 4.0, None, &s);
        assert_eq!((w.parts[0].at_least, w.parts[0].at_most), (2.0, 4.0));
    }
}
