//! Errors of the ARM client, and how they map onto classified step errors.

use siteflow_step::StepError;
use std::time::Duration;

/// What went wrong talking to Azure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AzureError {
    /// The service answered with an error status and (usually) an ARM error body.
    #[error("{code}: {message} (HTTP {status}, correlation id {correlation_id})")]
    Service {
        /// HTTP status.
        status: u16,
        /// The ARM error code (`AuthorizationFailed`), or `HttpNNN` without a body.
        code: String,
        /// The service's message.
        message: String,
        /// Our `x-ms-correlation-request-id`.
        correlation_id: String,
        /// The delay the service asked for (`Retry-After`, `retry-after-ms`).
        retry_after: Option<Duration>,
    },
    /// A long-running operation ended `Failed` or `Canceled`.
    #[error("{code}: operation ended {status}: {message} (correlation id {correlation_id})")]
    OperationFailed {
        /// `Failed` or `Canceled`.
        status: String,
        /// The operation's error code.
        code: String,
        /// The operation's error message.
        message: String,
        /// Our correlation id of the poll.
        correlation_id: String,
    },
    /// The request never got an answer (connection refused, TLS, timeout).
    #[error("could not reach {url}: {message}")]
    Transport {
        /// The URL (without query).
        url: String,
        /// Why.
        message: String,
    },
    /// No credential could produce a token.
    #[error("authentication failed: {0}")]
    Credential(String),
    /// A response did not have the expected shape.
    #[error("unexpected response from {url}: {message}")]
    Decode {
        /// The URL.
        url: String,
        /// What did not parse.
        message: String,
    },
    /// The cloud, endpoint or credential configuration is invalid.
    #[error("invalid Azure configuration: {0}")]
    Config(String),
}

/// ARM error codes that another attempt cannot fix.
const PERMANENT_CODES: &[&str] = &[
    "AuthorizationFailed",
    "QuotaExceeded",
    "OperationNotAllowed",
    "SkuNotAvailable",
    "InvalidTemplateDeployment",
    "InvalidParameter",
    "InvalidRequestContent",
    "LinkedAuthorizationFailed",
    "InvalidApiVersionParameter",
    "NoRegisteredProviderFound",
    "InvalidResourceGroupLocation",
];

/// ARM error codes that are worth another attempt even though the status is 4xx.
const TRANSIENT_CODES: &[&str] = &[
    "AnotherOperationInProgress",
    "RetryableError",
    "OperationPreempted",
    "ResourceGroupBeingDeleted",
    "Conflict",
    // Right after a registration completes, the RP's front end may not know it yet; a
    // namespace that was never registered keeps failing and the engine's retries run out.
    "MissingSubscriptionRegistration",
];

impl AzureError {
    /// The ARM error code, when the service gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureError::Service { code, .. } | AzureError::OperationFailed { code, .. } => {
                Some(code)
            }
            _ => None,
        }
    }

    /// The HTTP status, for service errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

impl From<AzureError> for StepError {
    fn from(e: AzureError) -> StepError {
        let message = e.to_string();
        match &e {
            AzureError::Service {
                status,
                code,
                retry_after,
                ..
            } => {
                let c = code.as_str();
                let err = if *status == 429 {
                    StepError::new(
                        siteflow_step::ErrorClass::Throttled { after: None },
                        code.clone(),
                        message,
                    )
                } else if PERMANENT_CODES.contains(&c) {
                    StepError::permanent(code.clone(), message)
                } else if *status == 408 || *status >= 500 || TRANSIENT_CODES.contains(&c) {
                    StepError::retryable(code.clone(), message)
                } else {
                    StepError::permanent(code.clone(), message)
                };
                match retry_after {
                    Some(after) => err.with_after(*after),
                    None => err,
                }
            }
            AzureError::OperationFailed { code, .. } => StepError::permanent(code.clone(), message),
            AzureError::Transport { .. } => StepError::retryable("ConnectionError", message),
            AzureError::Credential(_) => StepError::permanent("CredentialUnavailable", message),
            AzureError::Decode { .. } => StepError::permanent("UnexpectedResponse", message),
            AzureError::Config(_) => StepError::permanent("InvalidAzureConfig", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siteflow_step::ErrorClass;

    fn service(status: u16, code: &str, after: Option<u64>) -> AzureError {
        AzureError::Service {
            status,
            code: code.into(),
            message: "m".into(),
            correlation_id: "c".into(),
            retry_after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn classifies_service_errors() {
        let e: StepError = service(403, "AuthorizationFailed", None).into();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.code, "AuthorizationFailed");
        assert!(e.message.contains("correlation id c"));
        let e: StepError = service(429, "TooManyRequests", Some(7)).into();
        assert_eq!(
            e.class,
            ErrorClass::Throttled {
                after: Some(Duration::from_secs(7))
            }
        );
        let e: StepError = service(503, "ServiceUnavailable", Some(2)).into();
        assert_eq!(
            e.class,
            ErrorClass::Retryable {
                after: Some(Duration::from_secs(2))
            }
        );
        let e: StepError = service(409, "QuotaExceeded", None).into();
        assert_eq!(e.class, ErrorClass::Permanent);
        let e: StepError = service(409, "AnotherOperationInProgress", None).into();
        assert!(e.class.is_retryable());
        let e: StepError = service(409, "MissingSubscriptionRegistration", None).into();
        assert!(e.class.is_retryable());
    }
}
