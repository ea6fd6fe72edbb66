//! Seeded fault injection: the same spec and the same request sequence give the
//! same faults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use crate::generate::SimRng;

/// Shares (0..=1) of requests that get each fault. Written as a comma-separated
/// `kind=share` list: `503=0.1,500=0.05,latency=200@0.5,timeout=0.01,drop_before=0.02,
/// drop_after=0.02,truncate=0.02,seed=7`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    pub status_503: f64,
    pub status_500: f64,
    pub timeout: f64,
    pub latency: Option<(Duration, f64)>,
    pub drop_before: f64,
    pub drop_after: f64,
    pub truncate: f64,
    pub seed: u64,
    /// Faults hit only requests calling this method, directly or as a command of a
    /// `batch` (`only=crm.deal.update`); other requests run untouched and draw nothing.
    pub only: Option<String>,
}

impl FaultSpec {
    pub fn is_none(&self) -> bool {
        self.status_503 == 0.0
            && self.status_500 == 0.0
            && self.timeout == 0.0
            && self.latency.is_none()
            && self.drop_before == 0.0
            && self.drop_after == 0.0
            && self.truncate == 0.0
    }
}

fn share(kind: &str, text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("fault '{kind}': share '{text}' is not a number"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "fault '{kind}': share {value} is not between 0 and 1"
        ));
    }
    Ok(value)
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut faults = FaultSpec::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, value) = item
                .split_once('=')
                .ok_or_else(|| format!("fault '{item}' is not written as kind=share"))?;
            let kind = kind.trim();
            match kind {
                "503" => faults.status_503 = share(kind, value)?,
                "500" => faults.status_500 = share(kind, value)?,
                "timeout" => faults.timeout = share(kind, value)?,
                "drop_before" => faults.drop_before = share(kind, value)?,
                "drop_after" => faults.drop_after = share(kind, value)?,
                "truncate" => faults.truncate = share(kind, value)?,
                "latency" => {
                    let (ms, p) = value.split_once('@').ok_or_else(|| {
                        format!("fault 'latency': '{value}' is not written as MS@share")
                    })?;
                    let ms: u64 = ms.trim().parse().map_err(|_| {
                        format!("fault 'latency': '{ms}' is not a number of milliseconds")
                    })?;
                    faults.latency = Some((Duration::from_millis(ms), share(kind, p)?));
                }
                "only" => {
                    let method = value.trim();
                    if method.is_empty() || method.contains(char::is_whitespace) {
                        return Err(format!("fault 'only': '{value}' is not a method name"));
                    }
                    faults.only = Some(method.to_ascii_lowercase());
                }
                "seed" => {
                    faults.seed = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("fault seed '{value}' is not a number"))?
                }
                other => {
                    return Err(format!(
                        "unknown fault '{other}' (expected 503, 500, timeout, latency, drop_before, drop_after, truncate, only, seed)"
                    ));
                }
            }
        }
        Ok(faults)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (kind, share) in [
            ("503", self.status_503),
            ("500", self.status_500),
            ("timeout", self.timeout),
            ("drop_before", self.drop_before),
            ("drop_after", self.drop_after),
            ("truncate", self.truncate),
        ] {
            if share > 0.0 {
                parts.push(format!("{kind}={share}"));
            }
        }
        if let Some((latency, share)) = self.latency {
            parts.push(format!("latency={}@{share}", latency.as_millis()));
        }
        if let Some(method) = &self.only {
            parts.push(format!("only={method}"));
        }
        parts.push(format!("seed={}", self.seed));
        f.write_str(&parts.join(","))
    }
}

/// What happens to a request before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BeforeFault {
    /// Sleep longer than any sane client timeout.
    Timeout,
    /// Close the connection without an answer; nothing is applied.
    Drop,
    /// 503 `QUERY_LIMIT_EXCEEDED`, refused before execution.
    Status503,
    /// 500 `INTERNAL_SERVER_ERROR`, refused before execution.
    Status500,
}

/// What happens to a request after it ran (its changes are applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterFault {
    Drop,
    Truncate,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct FaultPlan {
    pub before: Option<BeforeFault>,
    pub latency: Option<Duration>,
    pub after: Option<AfterFault>,
}

pub(crate) struct FaultInjector {
    pub spec: FaultSpec,
    rng: SimRng,
}

impl FaultInjector {
    pub fn new(spec: FaultSpec) -> FaultInjector {
        let rng = SimRng::seed_from_u64(spec.seed);
        FaultInjector { spec, rng }
    }

    /// Draws every kind once per request the faults apply to (see [`FaultSpec::only`]),
    /// in a fixed order, so the sequence of plans depends only on the seed and the
    /// number of those requests.
    pub fn plan(&mut self, method: &str, body: &[u8]) -> FaultPlan {
        if self.spec.is_none() || !self.applies(method, body) {
            return FaultPlan::default();
        }
        let s = &self.spec;
        let mut hit = |share: f64| self.rng.random::<f64>() < share;
        let timeout = hit(s.timeout);
        let drop_before = hit(s.drop_before);
        let status_503 = hit(s.status_503);
        let status_500 = hit(s.status_500);
        let latency = s.latency.and_then(|(d, share)| hit(share).then_some(d));
        let drop_after = hit(s.drop_after);
        let truncate = hit(s.truncate);
        let before = [
            (timeout, BeforeFault::Timeout),
            (drop_before, BeforeFault::Drop),
            (status_503, BeforeFault::Status503),
            (status_500, BeforeFault::Status500),
        ]
        .into_iter()
        .find_map(|(hit, fault)| hit.then_some(fault));
        let after = [
            (drop_after, AfterFault::Drop),
            (truncate, AfterFault::Truncate),
        ]
        .into_iter()
        .find_map(|(hit, fault)| hit.then_some(fault));
        FaultPlan {
            before,
            latency,
            after,
        }
    }
}

impl FaultInjector {
    fn applies(&self, method: &str, body: &[u8]) -> bool {
        let Some(only) = &self.spec.only else {
            return true;
        };
        let method = method.trim_end_matches(".json").to_ascii_lowercase();
        method == *only
            || (method == "batch"
                && body
                    .to_ascii_lowercase()
                    .windows(only.len())
                    .any(|w| w == only.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_round_trips() {
        let spec: FaultSpec = "503=0.1, 500=0.05,latency=200@0.5,timeout=0.01,drop_before=0.02,drop_after=0.03,truncate=0.04,seed=7"
            .parse()
            .unwrap();
        assert_eq!(spec.status_503, 0.1);
        assert_eq!(spec.latency, Some((Duration::from_millis(200), 0.5)));
        assert_eq!(spec.seed, 7);
        assert_eq!(spec.to_string().parse::<FaultSpec>().unwrap(), spec);
        assert!("".parse::<FaultSpec>().unwrap().is_none());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(
            "503=2"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!(
            "boom=0.1"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("unknown fault 'boom'")
        );
        assert!(
            "latency=fast"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("MS@share")
        );
        assert!(
            "503"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("kind=share")
        );
    }

    #[test]
    fn plans_are_reproducible_and_follow_the_shares() {
        let spec: FaultSpec = "503=0.3,drop_after=0.2,seed=9".parse().unwrap();
        let plans = |n| {
            let mut injector = FaultInjector::new(spec.clone());
            (0..n)
                .map(|_| injector.plan("crm.deal.list", b""))
                .collect::<Vec<_>>()
        };
        assert_eq!(plans(200), plans(200));
        let hits = plans(2000)
            .iter()
            .filter(|p| p.before == Some(BeforeFault::Status503))
            .count();
        assert!(
            (450..750).contains(&hits),
            "{hits} of 2000 got a 503 at share 0.3"
        );
        let none = FaultInjector::new(FaultSpec::default()).plan("crm.deal.list", b"");
        assert_eq!(none, FaultPlan::default());
    }

    #[test]
    fn faults_limited_to_a_method_hit_its_calls_and_batches_holding_it_only() {
        let spec: FaultSpec = "500=1.0,only=crm.deal.update,seed=1".parse().unwrap();
        assert_eq!(spec.to_string().parse::<FaultSpec>().unwrap(), spec);
        let mut injector = FaultInjector::new(spec);
        let hit = |plan: FaultPlan| plan.before == Some(BeforeFault::Status500);
        assert!(hit(injector.plan("crm.deal.update", b"{}")));
        assert!(hit(injector.plan("CRM.DEAL.UPDATE.json", b"")));
        let batch = br#"{"halt":0,"cmd":{"u0":"crm.deal.update?id=3&fields[TITLE]=x"}}"#;
        assert!(hit(injector.plan("batch", batch)));
        assert!(!hit(injector.plan("crm.deal.fields", b"")));
        assert!(!hit(
            injector.plan("batch", br#"{"cmd":{"a":"crm.deal.list?start=-1"}}"#)
        ));
        assert!("only= ".parse::<FaultSpec>().unwrap_err().contains("only"));
    }
}
