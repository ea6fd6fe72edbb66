//! How a function tells the Lambda runtime why an invocation failed.

use lambda_runtime::Diagnostic;

/// A failed invocation, classified for whoever reads the runtime's report (the
/// `errorType` of the invocation error, metrics filters, alarms). The message is what
/// the runtime reports and logs: build it from errors that never carry a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    /// The event itself is wrong: the same event fails again, so fix the sender.
    #[error("{0}")]
    BadInput(String),
    /// Something outside (portal, database, queue) failed: a retry may pass.
    #[error("{0}")]
    Transient(String),
    /// The function's configuration is missing or wrong: an operator must fix it.
    #[error("{0}")]
    Configuration(String),
}

impl FunctionError {
    /// The `errorType` the runtime reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            FunctionError::BadInput(_) => "BadInput",
            FunctionError::Transient(_) => "Transient",
            FunctionError::Configuration(_) => "Configuration",
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Diagnostic {
        Diagnostic {
            error_type: error.error_type().into(),
            error_message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_reports_the_class_and_the_message_alone() {
        let cases = [
            (FunctionError::BadInput("no mode".into()), "BadInput"),
            (
                FunctionError::Transient("database down".into()),
                "Transient",
            ),
            (
                FunctionError::Configuration("no url".into()),
                "Configuration",
            ),
        ];
        for (error, error_type) in cases {
            let message = error.to_string();
            let diagnostic = Diagnostic::from(error);
            assert_eq!(diagnostic.error_type, error_type);
            assert_eq!(diagnostic.error_message, message);
            assert!(!message.contains(error_type), "{message}");
        }
    }
}
