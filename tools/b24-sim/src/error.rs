//! The portal's error envelope: `{"error": "...", "error_description": "..."}`.

use serde_json::{Value, json};

/// An error answer of a REST method.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub description: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, description: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            description: description.into(),
        }
    }

    /// The old `crm.*` methods answer 400 with an empty `error`.
    pub fn crm(description: impl Into<String>) -> ApiError {
        ApiError::new(400, "", description)
    }

    pub fn not_found() -> ApiError {
        ApiError::crm("Not found")
    }

    /// A record the webhook's user may not read (old `crm.*` methods).
    pub fn access_denied() -> ApiError {
        ApiError::crm("Access denied.")
    }

    pub fn method_not_found() -> ApiError {
        ApiError::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    }

    /// A request without credentials.
    pub fn no_auth() -> ApiError {
        ApiError::new(401, "NO_AUTH_FOUND", "Wrong authorization data")
    }

    /// A webhook URL whose user or code is wrong.
    pub fn invalid_credentials() -> ApiError {
        ApiError::new(401, "INVALID_CREDENTIALS", "Invalid request credentials")
    }

    /// An `auth` parameter that is no access token of this portal's application.
    pub fn invalid_token() -> ApiError {
        ApiError::new(401, "invalid_token", "Unable to get application by token")
    }

    pub fn query_limit() -> ApiError {
        ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    }

    pub fn operation_time_limit() -> ApiError {
        ApiError::new(
            429,
            "OPERATION_TIME_LIMIT",
            "Method is blocked due to operation time limit",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(500, "INTERNAL_SERVER_ERROR", "Internal server error")
    }

    /// The envelope; a code of digits only (`0`, `100` of `crm.type.get` and
    /// `crm.item.*`) is a JSON number, as the docs show it.
    pub fn body(&self) -> Value {
        let code = match self.code.parse::<u64>() {
            Ok(number) if !self.code.is_empty() => json!(number),
            _ => json!(self.code),
        };
        json!({"error": code, "error_description": self.description})
    }
}
