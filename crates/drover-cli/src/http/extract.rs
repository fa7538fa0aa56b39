//! axum's extractors with their rejections turned into [`ApiError`]s, so that a malformed body,
//! query or path gets the same JSON error as every other bad input.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use super::ApiError;

/// A JSON body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Body<T>(pub(crate) T);

/// A query string.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);

/// The body's bytes, within the server's limit (413 past it).
async fn body_bytes<S: Send + Sync>(
    request: axum::extract::Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large()
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })
}

/// A JSON body that may be absent (empty, or `null`): then `T::default()`.
pub(crate) struct OptionalBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for OptionalBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(OptionalBody(T::default()));
        }
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map(OptionalBody)
            .map_err(|err| {
                let path = err.path().to_string();
                let err = err.into_inner();
                let message = format!("invalid JSON body: {err}");
                // As axum's own JSON extractor answers: 400 for text that is not JSON, 422 for
                // JSON of the wrong shape (a wrong type, an unknown field), naming the field.
                if err.classify() != serde_json::error::Category::Data {
                    return ApiError::invalid("body", message);
                }
                let field = match path.as_str() {
                    "." | "?" => "body".to_owned(),
                    path => path.to_owned(),
                };
                let mut error = ApiError::invalid(field, message);
                error.status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
                error
            })
    }
}

/// No body: a request that acts on what its path names. Nothing, `null` or `{}` is taken; any
/// other body is refused, since it would be ignored while its sender believes it counted (a
/// `{"reason": ...}` on a pause, or text sent to the wrong route).
pub(crate) struct NoBody;

impl<S> FromRequest<S> for NoBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        let empty = bytes.trim_ascii().is_empty()
            || match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Null) => true,
                Ok(serde_json::Value::Object(fields)) => fields.is_empty(),
                _ => false,
            };
        if empty {
            Ok(NoBody)
        } else {
            Err(ApiError::invalid(
                "body",
                "this request takes no body: send none, null or {} (what the path names is \
                 all it acts on)",
            ))
        }
    }
}
