//! Why a forward failed, classified for the queue: a retryable error leaves the job on
//! the queue for the next delivery, a permanent one sends it to the dead-letter queue
//! (retrying cannot help). Messages name the route, portal, deal and step, never a
//! webhook URL, token or file URL.

use b24_client::B24Error;
use b24_domain::forward::mapping::MappingError;
use b24_domain::forward::products::ProductRowError;
use b24_store::StoreError;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Another invocation is forwarding this deal right now.
    #[error(
        "deal {deal_id} is being forwarded by another invocation until {until}; try again later"
    )]
    Busy { deal_id: u64, until: DateTime<Utc> },
    /// The job does not fit the configuration (unknown route, wrong source portal).
    #[error("configuration: {0}")]
    Config(String),
    /// The source deal does not exist or the webhook's user may not see it.
    #[error(
        "deal {deal_id} cannot be read on portal {portal}: it does not exist or is hidden from the webhook's user ({detail})"
    )]
    DealNotFound {
        portal: String,
        deal_id: u64,
        detail: String,
    },
    /// The target deal the ledger knows was deleted on the target portal.
    #[error(
        "target deal {target_deal_id} on portal {portal} no longer exists ({detail}); the forward ledger still names it"
    )]
    TargetDealGone {
        portal: String,
        target_deal_id: u64,
        detail: String,
    },
    #[error("route {route}: {source}")]
    Mapping {
        route: String,
        #[source]
        source: MappingError,
    },
    #[error("route {route}: {source}")]
    ProductRows {
        route: String,
        #[source]
        source: ProductRowError,
    },
    /// A Bitrix24 request failed; `step` says what it was for.
    #[error("portal {portal}, {step}: {source}")]
    Portal {
        portal: String,
        step: &'static str,
        #[source]
        source: B24Error,
    },
    /// An add was sent and its answer lost: the deal may exist. The next attempt
    /// looks it up by `ORIGINATOR_ID` / `ORIGIN_ID` before adding.
    #[error(
        "portal {portal}: the add may or may not have been applied ({detail}); the next attempt looks it up first"
    )]
    AmbiguousAdd { portal: String, detail: String },
    /// A portal answered in a shape this forwarder does not understand.
    #[error("portal {portal}, {step}: unexpected answer: {detail}")]
    BadAnswer {
        portal: String,
        step: &'static str,
        detail: String,
    },
    /// A file of a copied file field could not be downloaded.
    #[error("portal {portal}, downloading file {file_id} of {field}: {detail}")]
    File {
        portal: String,
        field: String,
        file_id: u64,
        detail: String,
        retryable: bool,
    },
    #[error("forward ledger: {0}")]
    Store(#[from] StoreError),
    /// The invocation's deadline came before `step` finished.
    #[error("the time ran out during {0}")]
    OutOfTime(&'static str),
}

impl ForwardError {
    /// Whether retrying the job cannot help: the dead-letter queue is the place for it.
    pub fn is_permanent(&self) -> bool {
        match self {
            ForwardError::Config(_)
            | ForwardError::DealNotFound { .. }
            | ForwardError::TargetDealGone { .. }
            | ForwardError::Mapping { .. }
            | ForwardError::ProductRows { .. }
            | ForwardError::BadAnswer { .. } => true,
            ForwardError::Portal { source, .. } => !portal_error_is_retryable(source),
            ForwardError::File { retryable, .. } => !retryable,
            ForwardError::Busy { .. }
            | ForwardError::AmbiguousAdd { .. }
            | ForwardError::Store(_)
            | ForwardError::OutOfTime(_) => false,
        }
    }

    /// A short stable name of the error's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardError::Busy { .. } => "busy",
            ForwardError::Config(_) => "config",
            ForwardError::DealNotFound { .. } => "deal_not_found",
            ForwardError::TargetDealGone { .. } => "target_deal_gone",
            ForwardError::Mapping { .. } => "mapping",
            ForwardError::ProductRows { .. } => "product_rows",
            ForwardError::Portal { .. } => "portal",
            ForwardError::AmbiguousAdd { .. } => "ambiguous_add",
            ForwardError::BadAnswer { .. } => "bad_answer",
            ForwardError::File { .. } => "file",
            ForwardError::Store(_) => "store",
            ForwardError::OutOfTime(_) => "out_of_time",
        }
    }
}

/// Limits, server errors and transport failures pass; an ambiguous create is retried
/// after a look-up. Refused credentials, permissions, unknown methods, bad requests
/// and a blocked API do not.
fn portal_error_is_retryable(error: &B24Error) -> bool {
    error.is_retryable() || matches!(error, B24Error::AmbiguousCreate { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(source: B24Error) -> ForwardError {
        ForwardError::Portal {
            portal: "central".into(),
            step: "writing the target deal",
            source,
        }
    }

    #[test]
    fn limits_and_transport_failures_are_retried_refusals_are_not() {
        let m = || "batch".to_string();
        assert!(!portal(B24Error::QueryLimitExceeded { method: m() }).is_permanent());
        assert!(!portal(B24Error::Timeout { method: m() }).is_permanent());
        let ambiguous = B24Error::AmbiguousCreate {
            method: m(),
            cause: Box::new(B24Error::Timeout { method: m() }),
        };
        assert!(!portal(ambiguous).is_permanent());
        let denied = B24Error::AccessDenied {
            method: m(),
            code: "ACCESS_DENIED".into(),
            description: String::new(),
        };
        assert!(portal(denied).is_permanent());
        assert!(portal(B24Error::OverloadLimit { method: m() }).is_permanent());
        assert!(
            ForwardError::Busy {
                deal_id: 1,
                until: Utc::now()
            }
            .kind()
                == "busy"
        );
        assert!(
            ForwardError::DealNotFound {
                portal: "p".into(),
                deal_id: 7,
                detail: "Not found".into()
            }
            .is_permanent()
        );
        assert!(!ForwardError::OutOfTime("reading the source deal").is_permanent());
    }
}
