//! The error for a bad combination of options or a missing setting, which every
//! subcommand can raise and `main` maps to exit code 2.

/// A bad combination of options (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
