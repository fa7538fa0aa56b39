//! axum's extractors with their rejections turned into [`ApiError`]s, so that a malformed body,
//! query or path gets the same JSON error as every other bad input.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use super::ApiError;

/// A JSON body: an object. serde reads a struct from an array too, field by field in order,
/// so `["drover.noop", {}, "q", 5]` enqueued a job of priority 5 where every API says its body
/// is an object with named fields: an array is refused before it is read.
pub(crate) struct Body<T>(pub(crate) T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(request.headers()) {
            let mut error = ApiError::invalid(
                "body",
                "Expected request with `Content-Type: application/json`",
            );
            error.status = axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Err(error);
        }
        let bytes = body_bytes(request, state).await?;
        refuse_array(&bytes)?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Body(value))
    }
}

/// An array where an object is due (see [`Body`]), refused before serde reads it.
fn refuse_array(bytes: &[u8]) -> Result<(), ApiError> {
    if !bytes.trim_ascii_start().starts_with(b"[") {
        return Ok(());
    }
    let mut error = ApiError::invalid(
        "body",
        "the body is an array: expected a JSON object ({\"name\": value, ...})",
    );
    error.status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    Err(error)
}

/// Whether the request says its body is JSON, as axum's own extractor asks:
/// `application/json`, or an `application/…+json` type, parameters allowed.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

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
        refuse_array(text)?;
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
