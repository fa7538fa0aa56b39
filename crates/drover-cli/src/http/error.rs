//! One error type for every handler: `{"error": {"code", "message", "field"}}` with a stable
//! code, and a status that is 4xx for anything the caller can fix. Handlers return
//! `Result<_, ApiError>` and never format an error body themselves.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_core::{StoreError, ValidationError};
use serde::Serialize;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: `invalid_request`, `invalid_job`, `not_found`, `conflict`,
    /// `lease_lost`, `payload_too_large`, `unauthorized`, `forbidden`, `read_only`,
    /// `unavailable`, `busy`, `internal`.
    code: &'static str,
    /// For a person.
    message: String,
    /// The input field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A request body over `[http] max_body_bytes`, declared or sent.
    pub(crate) fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over the server's limit ([http] max_body_bytes)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(self.code, "busy" | "unavailable") {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The field a validation error is about.
pub(crate) fn field_of(error: &ValidationError) -> &'static str {
    match error {
        ValidationError::Name { field, .. } | ValidationError::Range { field, .. } => field,
        ValidationError::Args(_) | ValidationError::ArgsTooLarge { .. } => "args",
        ValidationError::BatchTooLarge { field, .. } => field,
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        let status = match error {
            ValidationError::ArgsTooLarge { .. } | ValidationError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_request"
        };
        Self {
            field: Some(field_of(&error).to_owned()),
            ..Self::new(status, code, error.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(error) => error.into(),
            StoreError::NotFound(_) => Self::not_found(error.to_string()),
            StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            StoreError::Busy(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string())
            }
            StoreError::Unavailable(_) | StoreError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
            StoreError::Internal(_) => {
                tracing::error!(error = %error, "internal error answering a request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server's log",
                )
            }
        }
    }
}

impl From<drover::Error> for ApiError {
    fn from(error: drover::Error) -> Self {
        match error {
            drover::Error::InvalidJob { index, error } => {
                let mut api = ApiError::from(error);
                if api.code == "invalid_request" {
                    api.code = "invalid_job";
                }
                if let Some(index) = index {
                    api.message = format!("job {index}: {}", api.message);
                    api.field = api.field.map(|field| format!("jobs[{index}].{field}"));
                }
                api
            }
            drover::Error::Invalid(error) => error.into(),
            drover::Error::Store(error) => error.into(),
            drover::Error::UnknownName { .. } => Self::not_found(error.to_string()),
            drover::Error::Capacity(error) => {
                use drover::autoscaler::admin::AdminError;
                match error {
                    AdminError::NotFound(message) => Self::not_found(message),
                    AdminError::Conflict(message) => {
                        Self::new(StatusCode::CONFLICT, "conflict", message)
                    }
                    AdminError::Invalid { field, message } => Self::invalid(field, message),
                    AdminError::Store(error) => error.into(),
                }
            }
            drover::Error::LeaseLost(message) => {
                Self::new(StatusCode::CONFLICT, "lease_lost", message)
            }
            drover::Error::Config(message) => {
                tracing::error!(error = %message, "configuration error answering a request");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::body_too_large();
        }
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        let field = json_field(&rejection).unwrap_or_else(|| "body".to_owned());
        Self {
            status,
            ..Self::invalid(field, in_json_terms(&rejection.body_text()))
        }
    }
}

/// The field a JSON body of the wrong shape is wrong at, like `priority`, `jobs[3].kind` or an
/// unknown `jobs[3].colour`: the path serde reached, and for a missing or repeated field
/// (reported at the object that holds it) that field's name under it.
fn json_field(rejection: &JsonRejection) -> Option<String> {
    // Text that is no JSON at all is the body's fault; a bad token inside a field's value
    // (`1e400`, a stray comma) is reported at that field's path.
    if !matches!(
        rejection,
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_)
    ) {
        return None;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    let error = loop {
        let error = source?;
        if let Some(found) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            break found;
        }
        source = error.source();
    };
    let path = error.path().to_string();
    let message = error.inner().to_string();
    let named = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|start| message.strip_prefix(start)?.split('`').next());
    Some(match (named, path.as_str()) {
        (Some(name), ".") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "?") => return None,
        (None, path) => path.to_owned(),
    })
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        // `Failed to deserialize query string: limit: invalid digit found in string` names
        // the parameter at fault: the field is that parameter, not the whole query.
        let named = text
            .strip_prefix("Failed to deserialize query string: ")
            .and_then(|rest| rest.split_once(": "))
            .filter(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
        match named {
            Some((name, why)) => {
                // Every numeric parameter of the API is a whole number of 0 or more; a limit,
                // of 1 or more (its route says how many at most).
                let least = if name == "limit" { 1 } else { 0 };
                let why = match why {
                    "invalid digit found in string" | "cannot parse integer from empty string" => {
                        format!("not a whole number of {least} or more")
                    }
                    other => in_json_terms(other),
                };
                Self::invalid(name.to_owned(), format!("{name}: {why}"))
            }
            None => {
                // An unknown parameter: `unknown field `colour`, expected one of ...`.
                let unknown = text
                    .split_once("unknown field `")
                    .and_then(|(_, rest)| rest.split_once('`'))
                    .map(|(name, _)| name.to_owned());
                Self::invalid(
                    unknown.unwrap_or_else(|| "query".to_owned()),
                    in_json_terms(&text),
                )
            }
        }
    }
}

/// serde's words for what was expected, in the words of JSON: Rust's names (`struct
/// EnqueueBody with 9 elements`, `i64`, `sequence`) mean nothing to a client in another
/// language.
fn in_json_terms(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(at) = out.find("expected struct ") {
        let name = at + "expected struct ".len();
        let mut end = name
            + out[name..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .unwrap_or(out.len() - name);
        // serde's count of the struct's fields: `with 9 elements`.
        if let Some(count) = out[end..].strip_prefix(" with ")
            && let Some(len) = count.find(" element")
        {
            end += " with ".len() + len + " element".len();
            if out[end..].starts_with('s') {
                end += 1;
            }
        }
        out.replace_range(at..end, "expected a JSON object");
    }
    for (rust, json) in [
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: object"),
        ("expected i64", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected u64", "expected an integer of 0 or more"),
        ("expected u32", "expected an integer of 0 or more"),
        ("expected usize", "expected an integer of 0 or more"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
    ] {
        out = out.replace(rust, json);
    }
    out
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid("path", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::in_json_terms;

    #[test]
    fn serde_s_rust_names_are_said_in_json_terms() {
        assert_eq!(
            in_json_terms(
                "invalid type: sequence, expected struct EnqueueBody with 9 elements at line 1"
            ),
            "invalid type: array, expected a JSON object at line 1"
        );
        assert_eq!(
            in_json_terms("invalid type: string \"x\", expected i64"),
            "invalid type: string \"x\", expected an integer"
        );
        assert_eq!(
            in_json_terms("expected struct LeaseBody"),
            "expected a JSON object"
        );
    }
}
