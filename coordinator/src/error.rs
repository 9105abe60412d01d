//! The coordinator API's errors: each maps to one HTTP status, and its message is safe to show the caller
//! (it never contains a share, key material or a value).

use thiserror::Error;

/// Why a request was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request is malformed or asks for something impossible (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The caller presented no key, or not the key this resource belongs to (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such node, job, attempt or blob (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The resource is not in a state that allows this now (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller submits faster than its rate limit allows (429).
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The coordinator failed (500): the database, the disk.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::TooManyRequests(_) => 429,
            ApiError::Internal(_) => 500,
        }
    }
}

/// Shorthand.
pub type ApiResult<T> = Result<T, ApiError>;
