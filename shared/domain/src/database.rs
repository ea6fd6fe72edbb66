//! The limits every mirror database session runs under: how long to wait for a
//! connection, how soon a dead peer is noticed, and how long a statement, a lock wait or
//! an idle open transaction may last before the server ends it.

use std::time::Duration;

/// Connection and session limits. `Duration::ZERO` for a server-side timeout means "no
/// limit", as in PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// Per address tried; a Lambda should fail fast and retry on its next schedule
    /// rather than spend its budget on an unreachable host.
    pub connect_timeout: Duration,
    /// Idle time before the first TCP keepalive probe; `None` turns keepalives off.
    /// A dead peer (failover, a NAT or proxy that dropped the flow) is declared dead
    /// after about twice this time: see [`SessionSettings::keepalive_probes`].
    pub keepalive_idle: Option<Duration>,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_session_timeout: Duration,
}

impl Default for SessionSettings {
    /// - connect 10 s: a reachable database answers in milliseconds; DNS plus a
    ///   failover's new endpoint in a few seconds.
    /// - keepalive after 30 s idle: below the idle cut-off of NAT gateways and
    ///   proxies (350 s on AWS NAT), and a silently dead server is noticed in about a
    ///   minute instead of the operating system's two hours.
    /// - statement 5 min: the longest legitimate statement is one chunk's upsert or one
    ///   backfill batch (seconds); a runaway query is stopped well inside a 15-minute
    ///   Lambda invocation.
    /// - lock 10 s: the sync's own locks are held for milliseconds; waiting longer means
    ///   a long DDL or someone's open transaction, and queueing behind it would block
    ///   every reader queued after us. The run fails and the next one retries.
    /// - idle in transaction 60 s: a Lambda frozen with a transaction open (its
    ///   invocation ended mid-statement) must not hold row locks, such as the shared
    ///   rate-limit row, until the sandbox is reaped.
    fn default() -> Self {
        SessionSettings {
            connect_timeout: Duration::from_secs(10),
            keepalive_idle: Some(Duration::from_secs(30)),
            statement_timeout: Duration::from_secs(5 * 60),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_session_timeout: Duration::from_secs(60),
        }
    }
}

/// Unanswered keepalive probes before the connection is declared dead.
const KEEPALIVE_PROBES: u32 = 3;

impl SessionSettings {
    /// The keepalive probe interval and count for an idle time: probes every third of
    /// it, three of them, so a dead peer is declared dead after twice the idle time.
    pub fn keepalive_probes(idle: Duration) -> (Duration, u32) {
        (idle / KEEPALIVE_PROBES, KEEPALIVE_PROBES)
    }

    /// How long sent data may stay unacknowledged before the connection is closed: the
    /// same bound as keepalives, for a peer that vanished while a statement was in
    /// flight (keepalives only probe idle connections).
    pub fn unacknowledged_timeout(idle: Duration) -> Duration {
        idle * 2
    }

    /// The server-side settings of a session as `(name, value)` pairs for `SET`:
    /// the three timeouts in milliseconds, rounded up so a sub-millisecond limit never
    /// turns into PostgreSQL's "no limit"; with keepalives on, the server's own
    /// keepalives too, so it notices a vanished client (a frozen Lambda) as soon and
    /// releases that session's locks.
    pub fn server_settings(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| format!("{}ms", d.as_micros().div_ceil(1000));
        let mut settings = vec![
            ("statement_timeout", ms(self.statement_timeout)),
            ("lock_timeout", ms(self.lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction_session_timeout),
            ),
        ];
        if let Some(idle) = self.keepalive_idle {
            // The server counts keepalive times in whole seconds.
            let secs = |d: Duration| format!("{}s", d.as_millis().div_ceil(1000).max(1));
            let (interval, probes) = Self::keepalive_probes(idle);
            settings.extend([
                ("tcp_keepalives_idle", secs(idle)),
                ("tcp_keepalives_interval", secs(interval)),
                ("tcp_keepalives_count", probes.to_string()),
            ]);
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_peer_is_declared_dead_after_twice_the_idle_time() {
        let idle = Duration::from_secs(30);
        let (interval, probes) = SessionSettings::keepalive_probes(idle);
        assert_eq!(interval, Duration::from_secs(10));
        assert_eq!(idle + interval * probes, Duration::from_secs(60));
        assert_eq!(
            SessionSettings::unacknowledged_timeout(idle),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn server_settings_are_whole_units_rounded_up() {
        let settings = SessionSettings {
            keepalive_idle: Some(Duration::from_millis(1500)),
            statement_timeout: Duration::from_micros(1),
            lock_timeout: Duration::ZERO,
            idle_in_transaction_session_timeout: Duration::from_millis(1500),
            ..SessionSettings::default()
        };
        assert_eq!(
            settings.server_settings(),
            [
                ("statement_timeout", "1ms".to_string()),
                ("lock_timeout", "0ms".to_string()),
                ("idle_in_transaction_session_timeout", "1500ms".to_string()),
                ("tcp_keepalives_idle", "2s".to_string()),
                ("tcp_keepalives_interval", "1s".to_string()),
                ("tcp_keepalives_count", "3".to_string()),
            ]
        );
        let defaults = SessionSettings::default().server_settings();
        assert_eq!(defaults[0], ("statement_timeout", "300000ms".to_string()));
        assert_eq!(defaults[3], ("tcp_keepalives_idle", "30s".to_string()));
        assert_eq!(defaults[4], ("tcp_keepalives_interval", "10s".to_string()));
        let without_keepalive = SessionSettings {
            keepalive_idle: None,
            ..SessionSettings::default()
        };
        assert_eq!(without_keepalive.server_settings().len(), 3);
    }
}
