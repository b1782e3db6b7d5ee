//! One error type for every route: `application/problem+json` with a stable `code`; 5xx details
//! are logged, never sent.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tracing::warn;
use utoipa::ToSchema;

/// RFC 9457 problem details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the `code` identifies the problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    /// Stable machine-readable code, e.g. `email_taken`.
    pub code: &'static str,
    /// A human-readable explanation safe to show the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str, detail: Option<String>) -> Self {
        Self { status, code, title, detail, retry_after: None }
    }
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Sign in required", Some("a valid session is required".into()))
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", Some("your role does not allow this".into()))
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", Some(format!("no such {what}")))
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request", Some(detail.into()))
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        warn!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", None)
    }
    /// A dependency is down or overloaded: 503 with `Retry-After`, so clients know to retry.
    pub fn unavailable(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable", Some("please retry shortly".into()))
        }
    }
    /// No route for this path.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", Some("no such route".into()))
    }
    /// The route exists but not for this method.
    pub fn wrong_method() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            Some("this route does not take this method".into()),
        )
    }
}

/// Unknown routes answer problem+json like every other error.
pub async fn no_route() -> ApiError {
    ApiError::no_route()
}

/// A known route with the wrong method, as problem+json (axum keeps the `Allow` header).
pub async fn wrong_method() -> ApiError {
    ApiError::wrong_method()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem { kind: "about:blank", title: self.title, status: self.status.as_u16(), code: self.code, detail: self.detail };
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Maps an upstream gRPC status to the API's answer. Messages of 4xx-class statuses are written
/// by our services for users; anything else is logged and hidden.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = Some(s.message().to_owned());
        match s.code() {
            Code::InvalidArgument => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "Invalid input", msg),
            Code::AlreadyExists => Self::new(StatusCode::CONFLICT, "conflict", "Already exists", msg),
            Code::Unauthenticated => Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Sign in required", msg),
            Code::PermissionDenied => Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", msg),
            Code::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", msg),
            Code::ResourceExhausted => {
                let retry = s.metadata().get(sb_runtime::status::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                Self {
                    retry_after: retry.or(Some(60)),
                    ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests", msg)
                }
            }
            // Logged, with the service's name, by the channel it came through
            // (`sb_runtime::upstream::Upstream`).
            Code::Unavailable | Code::DeadlineExceeded => {
                let retry = s.metadata().get(sb_runtime::status::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                Self::unavailable(retry.unwrap_or(sb_runtime::status::OUTAGE_RETRY_SECS))
            }
            // Services use FAILED_PRECONDITION for "not possible in this state", with a message
            // written for the user (e.g. "complete a checkout first").
            Code::FailedPrecondition => Self::new(StatusCode::CONFLICT, "not_possible_now", "Not possible in this state", msg),
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => Self::internal(s),
        }
    }
}

/// Body-parsing failures, as problems: 413 over the size limit, 415 without a JSON content type,
/// 400 for malformed JSON, 422 for JSON of the wrong shape.
impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let detail = Some(r.body_text());
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(status, "body_too_large", "Request body too large", None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(status, "unsupported_media_type", "Expected application/json", detail),
            StatusCode::UNPROCESSABLE_ENTITY => Self::new(status, "validation_failed", "Invalid input", detail),
            _ => Self::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON", detail),
        }
    }
}

/// A query string that does not fit (e.g. `?limit=abc`), as a problem.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

/// `Query<T>` whose rejections are problems.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|axum::extract::Query(v)| ApiQuery(v)).map_err(ApiError::from)
    }
}

/// `Json<T>` whose rejections are problems.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| ApiJson(v)).map_err(ApiError::from)
    }
}
