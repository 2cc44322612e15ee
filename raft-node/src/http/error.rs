//! Turning errors into problem documents, and extractors that refuse bad
//! input with one.
//!
//! This is the only place where the node decides what a client sees when
//! something goes wrong. Internal errors are logged here and answered with a
//! bare 500; everything else becomes an RFC 9457 document with its code.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bazar_api::{ErrorCode, Problem};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct AppError {
    problem: Box<Problem>,
    /// A log index the refusal reflects (a rejected buy records an order),
    /// sent as `X-Bazar-Index`.
    index: Option<u64>,
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        if let Error::Internal(detail) = &e {
            tracing::error!(error = %detail, "internal error");
        }
        let index = match &e {
            Error::OutOfStock { orders_index, .. } => *orders_index,
            _ => None,
        };
        AppError { problem: Box::new(e.to_problem()), index }
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::from(Error::from(e))
    }
}

impl AppError {
    /// A 400 `invalid_input` problem.
    pub fn invalid(detail: impl Into<String>) -> AppError {
        AppError::from_problem(Problem::new(ErrorCode::InvalidInput, detail))
    }

    /// Wraps a problem document.
    pub fn from_problem(p: Problem) -> AppError {
        AppError { problem: Box::new(p), index: None }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (&*self.problem).into_response();
        if let Some(index) = self.index {
            response.headers_mut().insert(bazar_api::INDEX_HEADER, HeaderValue::from(index));
        }
        response
    }
}

/// A JSON request body, refused with a problem when it is not JSON, does not
/// parse, has unknown fields, or is too large.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body (with any or no content type) means `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn read_body(req: Request) -> Result<Bytes, AppError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::from_problem(Problem::new(ErrorCode::InvalidInput, "request body too large").with_status(413))
        } else {
            AppError::from_problem(
                Problem::new(ErrorCode::InvalidInput, rejection.body_text()).with_status(status.as_u16()),
            )
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::invalid(format!("invalid JSON body: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(AppError::from_problem(
                Problem::new(ErrorCode::InvalidInput, "expected a JSON body with Content-Type: application/json")
                    .with_status(415),
            ));
        }
        let bytes = read_body(req).await?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = read_body(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(AppError::from_problem(
                Problem::new(ErrorCode::InvalidInput, "expected a JSON body with Content-Type: application/json")
                    .with_status(415),
            ));
        }
        Ok(OptionalJsonBody(parse(&bytes)?))
    }
}

/// A positive integer id from the last path segment.
pub struct Id(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::invalid(e.body_text()))?;
        match raw.parse::<u64>() {
            Ok(id) if id > 0 => Ok(Id(id)),
            _ => Err(AppError::invalid(format!("{raw:?} is not a valid id: ids are positive integers"))),
        }
    }
}

/// The answer to a route that does not exist.
pub async fn not_found() -> AppError {
    AppError::from_problem(Problem::new(ErrorCode::NotFound, "no such route"))
}

/// The answer to a method a route does not support.
pub async fn method_not_allowed() -> AppError {
    AppError::from_problem(Problem::new(ErrorCode::InvalidInput, "method not allowed on this route").with_status(405))
}
