//! Typed Bitrix24 failures, from the error envelope (`error`, `error_description`, HTTP
//! status) and from the transport. Messages name the method, never the webhook URL.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum B24Error {
    /// 503 `QUERY_LIMIT_EXCEEDED`: refused before execution; safe to retry.
    #[error("{method}: too many requests (503 QUERY_LIMIT_EXCEEDED)")]
    QueryLimitExceeded { method: String },
    /// 429 `OPERATION_TIME_LIMIT`: the method's operating-time budget is spent.
    #[error("{method}: blocked by the operating-time limit (429 OPERATION_TIME_LIMIT){}", ResetAt(*reset_at))]
    OperationTimeLimit {
        method: String,
        reset_at: Option<f64>,
    },
    /// 503 `OVERLOAD_LIMIT`: the portal's REST API is blocked by hand; retrying does not help.
    #[error(
        "{method}: REST API blocked due to overload (503 OVERLOAD_LIMIT): contact Bitrix24 support"
    )]
    OverloadLimit { method: String },
    /// `NO_AUTH_FOUND`, `expired_token`, `invalid_token`: the request carried no usable
    /// credentials (a malformed, deleted or expired webhook).
    #[error("{method}: authorization failed ({code}: {description}); check the webhook URL")]
    NoAuth {
        method: String,
        code: String,
        description: String,
    },
    /// `INVALID_CREDENTIALS` ("Invalid request credentials"): the portal knows no
    /// webhook with this user and code, which is what a wrong webhook code gets. Not a
    /// permission problem.
    #[error(
        "{method}: authorization failed (INVALID_CREDENTIALS: {description}); check the webhook URL"
    )]
    InvalidCredentials { method: String, description: String },
    #[error("{method}: the webhook lacks the scope for this method (insufficient_scope)")]
    InsufficientScope { method: String, description: String },
    /// `ACCESS_DENIED` and kin: the webhook's user may not do this.
    #[error("{method}: access denied ({code}: {description})")]
    AccessDenied {
        method: String,
        code: String,
        description: String,
    },
    #[error("{method}: method not found (ERROR_METHOD_NOT_FOUND)")]
    MethodNotFound { method: String },
    /// The record does not exist (`NOT_FOUND`, or the old API's empty code with "Not found").
    #[error("{method}: not found ({description})")]
    NotFound { method: String, description: String },
    /// Any other documented or undocumented error code.
    #[error("{method}: {code_shown}: {description}{}", Status(*status), code_shown = if code.is_empty() { "error" } else { code.as_str() })]
    Api {
        method: String,
        status: Option<u16>,
        code: String,
        description: String,
    },
    /// A 5xx answer (other than the two 503 limits), with or without a Bitrix24 code.
    #[error("{method}: server error HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Server {
        method: String,
        status: u16,
        code: Option<String>,
    },
    /// The body was not the JSON envelope (truncated, HTML error page, ...).
    #[error("{method}: invalid JSON in the answer (HTTP {status}): {detail}")]
    InvalidJson {
        method: String,
        status: u16,
        detail: String,
    },
    /// Valid JSON, but not the shape the method promises.
    #[error("{method}: unexpected answer: {detail}")]
    UnexpectedResponse { method: String, detail: String },
    #[error("{method}: no answer within the timeout")]
    Timeout { method: String },
    /// The connection could not be opened: the request never reached the portal.
    #[error("{method}: portal unreachable: {detail}")]
    Unreachable { method: String, detail: String },
    /// The connection broke after the request was sent.
    #[error("{method}: network error: {detail}")]
    Network { method: String, detail: String },
    /// A create (`*.add`, or a batch holding one) failed in a way that leaves open
    /// whether the portal executed it. Never retried: look the record up first.
    #[error(
        "{method}: create may or may not have happened, look the record up before retrying ({cause})"
    )]
    AmbiguousCreate {
        method: String,
        cause: Box<B24Error>,
    },
    /// The portal answered with a redirect: its address changed.
    #[error(
        "{method}: the portal answered HTTP {status} redirecting to {location_host:?}; update the webhook URL"
    )]
    PortalMoved {
        method: String,
        status: u16,
        location_host: Option<String>,
    },
    /// A batch command that did not run because an earlier one failed with `halt`.
    #[error("{method}: not executed, an earlier batch command failed (halt)")]
    CommandSkipped { method: String },
    /// The caller passed something this client cannot send.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
}

struct ResetAt(Option<f64>);

impl fmt::Display for ResetAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " until unix time {at:.0}"),
            None => Ok(()),
        }
    }
}

struct Status(Option<u16>);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, " (HTTP {status})"),
            None => Ok(()),
        }
    }
}

impl B24Error {
    /// Whether sending the same request again may succeed. Ambiguous creates are never
    /// retryable; limits are (after waiting), and so are transport hiccups for reads.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            B24Error::QueryLimitExceeded { .. }
                | B24Error::OperationTimeLimit { .. }
                | B24Error::Server { .. }
                | B24Error::InvalidJson { .. }
                | B24Error::Timeout { .. }
                | B24Error::Unreachable { .. }
                | B24Error::Network { .. }
        )
    }

    /// Failures after which a create may have been executed by the portal.
    pub(crate) fn leaves_create_ambiguous(&self) -> bool {
        matches!(
            self,
            B24Error::Server { .. }
                | B24Error::InvalidJson { .. }
                | B24Error::Timeout { .. }
                | B24Error::Network { .. }
        )
    }

    /// Authentication or permission failures: retrying or waiting cannot help.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            B24Error::NoAuth { .. }
                | B24Error::InvalidCredentials { .. }
                | B24Error::InsufficientScope { .. }
                | B24Error::AccessDenied { .. }
        )
    }

    /// The portal could not be reached or kept answering with transport failures.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            B24Error::Unreachable { .. } | B24Error::Timeout { .. } | B24Error::Network { .. }
        )
    }

    /// Maps an error envelope to its variant. `status` is `None` inside a batch, where
    /// every command's error arrives within an HTTP 200.
    pub fn from_envelope(
        method: &str,
        status: Option<u16>,
        code: &str,
        description: &str,
    ) -> B24Error {
        let method = method.to_string();
        let description = description.to_string();
        let is = |c: &str| code.eq_ignore_ascii_case(c);
        if is("QUERY_LIMIT_EXCEEDED") {
            B24Error::QueryLimitExceeded { method }
        } else if is("OPERATION_TIME_LIMIT") {
            B24Error::OperationTimeLimit {
                method,
                reset_at: None,
            }
        } else if is("OVERLOAD_LIMIT") {
            B24Error::OverloadLimit { method }
        } else if is("NO_AUTH_FOUND")
            || is("expired_token")
            || is("invalid_token")
            || is("WRONG_AUTH_TYPE")
        {
            B24Error::NoAuth {
                method,
                code: code.to_string(),
                description,
            }
        } else if is("INVALID_CREDENTIALS") {
            B24Error::InvalidCredentials {
                method,
                description,
            }
        } else if is("insufficient_scope") {
            B24Error::InsufficientScope {
                method,
                description,
            }
        } else if is("ACCESS_DENIED") || is("allowed_only_intranet_user") || is("user_access_error")
        {
            B24Error::AccessDenied {
                method,
                code: code.to_string(),
                description,
            }
        } else if is("ERROR_METHOD_NOT_FOUND") {
            B24Error::MethodNotFound { method }
        } else if is("NOT_FOUND")
            || (code.is_empty() && description.to_ascii_lowercase().contains("not found"))
        {
            B24Error::NotFound {
                method,
                description,
            }
        } else if let Some(status) = status.filter(|s| *s >= 500) {
            B24Error::Server {
                method,
                status,
                code: Some(code.to_string()).filter(|c| !c.is_empty()),
            }
        } else {
            B24Error::Api {
                method,
                status,
                code: code.to_string(),
                description,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_documented_code_case_insensitively() {
        let m = "crm.deal.get";
        assert!(matches!(
            B24Error::from_envelope(m, Some(503), "QUERY_LIMIT_EXCEEDED", ""),
            B24Error::QueryLimitExceeded { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(429), "operation_time_limit", ""),
            B24Error::OperationTimeLimit { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(503), "OVERLOAD_LIMIT", ""),
            B24Error::OverloadLimit { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(401), "NO_AUTH_FOUND", "Wrong authorization data"),
            B24Error::NoAuth { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(401), "expired_token", ""),
            B24Error::NoAuth { .. }
        ));
        for status in [Some(401), Some(403), None] {
            let wrong_code = B24Error::from_envelope(
                m,
                status,
                "INVALID_CREDENTIALS",
                "Invalid request credentials",
            );
            assert!(
                matches!(wrong_code, B24Error::InvalidCredentials { .. }),
                "{wrong_code:?}"
            );
        }
        assert!(matches!(
            B24Error::from_envelope(m, None, "insufficient_scope", ""),
            B24Error::InsufficientScope { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(403), "ACCESS_DENIED", ""),
            B24Error::AccessDenied { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(404), "ERROR_METHOD_NOT_FOUND", ""),
            B24Error::MethodNotFound { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(400), "", "Not found"),
            B24Error::NotFound { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(400), "NOT_FOUND", "Element not found"),
            B24Error::NotFound { .. }
        ));
        assert!(matches!(
            B24Error::from_envelope(m, Some(500), "INTERNAL_SERVER_ERROR", ""),
            B24Error::Server { status: 500, .. }
        ));
        let other = B24Error::from_envelope(m, Some(400), "", "Parameter 'fields' must be array");
        assert!(matches!(
            &other,
            B24Error::Api {
                status: Some(400),
                ..
            }
        ));
        assert_eq!(
            other.to_string(),
            "crm.deal.get: error: Parameter 'fields' must be array (HTTP 400)"
        );
    }

    #[test]
    fn classifies_retryable_auth_and_unreachable() {
        let m = || "crm.deal.list".to_string();
        assert!(B24Error::QueryLimitExceeded { method: m() }.is_retryable());
        assert!(
            B24Error::OperationTimeLimit {
                method: m(),
                reset_at: Some(1.0)
            }
            .is_retryable()
        );
        assert!(B24Error::Timeout { method: m() }.is_retryable());
        assert!(!B24Error::OverloadLimit { method: m() }.is_retryable());
        assert!(!B24Error::MethodNotFound { method: m() }.is_retryable());
        let ambiguous = B24Error::AmbiguousCreate {
            method: m(),
            cause: Box::new(B24Error::Timeout { method: m() }),
        };
        assert!(!ambiguous.is_retryable());
        // Both webhook refusals say "check the webhook URL", are never retried and
        // never read as a permission problem.
        let refusals = [
            B24Error::from_envelope(&m(), Some(401), "NO_AUTH_FOUND", "Wrong authorization data"),
            B24Error::from_envelope(
                &m(),
                Some(401),
                "INVALID_CREDENTIALS",
                "Invalid request credentials",
            ),
        ];
        for refusal in &refusals {
            assert!(refusal.is_auth() && !refusal.is_retryable(), "{refusal:?}");
            let text = refusal.to_string();
            assert!(
                text.contains("authorization failed") && text.ends_with("check the webhook URL"),
                "{text}"
            );
            assert!(
                !text.contains("denied") && !text.contains("scope"),
                "{text}"
            );
        }
        assert!(
            B24Error::Unreachable {
                method: m(),
                detail: "refused".into()
            }
            .is_unreachable()
        );
        assert!(B24Error::Timeout { method: m() }.leaves_create_ambiguous());
        assert!(
            !B24Error::Unreachable {
                method: m(),
                detail: String::new()
            }
            .leaves_create_ambiguous()
        );
        assert!(!B24Error::QueryLimitExceeded { method: m() }.leaves_create_ambiguous());
    }
}
