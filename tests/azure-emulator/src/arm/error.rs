//! ARM error bodies: `{"error":{"code","message","target"?,"details":[]}}`.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::http::Resp;

/// An ARM error response.
#[derive(Debug, Clone)]
pub(crate) struct ArmError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) target: Option<String>,
    pub(crate) details: Vec<Value>,
}

impl ArmError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
            details: Vec::new(),
        }
    }

    pub(crate) fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub(crate) fn detail(mut self, code: &str, target: Option<&str>, message: &str) -> Self {
        let mut d = json!({"code": code, "message": message});
        if let Some(t) = target {
            d["target"] = json!(t);
        }
        self.details.push(d);
        self
    }

    /// The `error` object (also used inside operation status bodies).
    pub(crate) fn error_object(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message, "details": self.details});
        if let Some(t) = &self.target {
            e["target"] = json!(t);
        }
        e
    }

    pub(crate) fn into_resp(self) -> Resp {
        Resp::json(self.status, &json!({"error": self.error_object()}))
    }

    pub(crate) fn missing_api_version() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    }

    pub(crate) fn resource_group_not_found(rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        )
    }

    pub(crate) fn resource_not_found(type_and_name: &str, rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource '{type_and_name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    pub(crate) fn subscription_not_found(sub: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        )
    }

    pub(crate) fn missing_registration(ns: &str) -> Self {
        let msg = format!(
            "The subscription is not registered to use namespace '{ns}'. See https://aka.ms/rps-not-found for how to register subscriptions."
        );
        Self::new(
            StatusCode::CONFLICT,
            "MissingSubscriptionRegistration",
            msg.clone(),
        )
        .detail("MissingSubscriptionRegistration", Some(ns), &msg)
    }

    pub(crate) fn invalid_content(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!(
                "The request content was invalid and could not be deserialized: '{}'.",
                msg.into()
            ),
        )
    }

    pub(crate) fn another_operation(id: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AnotherOperationInProgress",
            format!(
                "Another operation on this or dependent resource is in progress. To retry later, please check the resource '{id}'."
            ),
        )
    }
}

impl From<crate::schema::Violation> for ArmError {
    fn from(v: crate::schema::Violation) -> Self {
        use crate::schema::Violation;
        match v {
            Violation::Missing { path } => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!("Required parameter '{path}' is missing (null)."),
            )
            .target(path),
            Violation::BadEnum {
                path,
                value,
                allowed,
            } => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!(
                    "The value '{value}' of parameter '{path}' is not valid. Allowed values are: {}.",
                    allowed.join(", ")
                ),
            )
            .target(path),
            Violation::BadType { path, expected } => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!(
                    "The request content was invalid and could not be deserialized: 'Error converting value at path '{path}': expected {expected}'."
                ),
            )
            .target(path),
            Violation::UnknownMember {
                path,
                member,
                type_name,
            } => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!(
                    "The request content was invalid and could not be deserialized: 'Could not find member '{member}' on object of type '{type_name}'. Path '{path}', line 1, position 1.'."
                ),
            ),
        }
    }
}
