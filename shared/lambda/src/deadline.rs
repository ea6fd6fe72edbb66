//! When the current invocation must have answered.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::Context;

/// Deadlines before this (2001-09-09 in unix milliseconds) are not timestamps.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// The invocation's deadline as an `Instant`. AWS sends unix milliseconds; the local
/// emulator (`cargo lambda watch`) sends the timeout itself (600000), which is read as
/// milliseconds from now instead of as a deadline 56 years ago.
pub fn invocation_deadline(context: &Context) -> Instant {
    let remaining_ms = if context.deadline < EPOCH_MS_FLOOR {
        context.deadline
    } else {
        context.deadline.saturating_sub(unix_now_ms())
    };
    Instant::now() + Duration::from_millis(remaining_ms)
}

/// The wall clock in unix milliseconds, as AWS sends deadlines.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remaining_with(deadline: u64) -> Duration {
        let mut context = Context::default();
        context.deadline = deadline;
        invocation_deadline(&context).saturating_duration_since(Instant::now())
    }

    #[test]
    fn an_aws_deadline_is_the_remaining_time_from_now() {
        let remaining = remaining_with(unix_now_ms() + 900_000);
        assert!(remaining > Duration::from_secs(890) && remaining <= Duration::from_secs(900));
    }

    #[test]
    fn the_emulators_relative_value_is_read_as_the_time_left() {
        let remaining = remaining_with(600_000);
        assert!(remaining > Duration::from_secs(590) && remaining <= Duration::from_secs(600));
    }

    #[test]
    fn a_deadline_already_past_leaves_no_time() {
        assert_eq!(remaining_with(unix_now_ms() - 5_000), Duration::ZERO);
    }
}
