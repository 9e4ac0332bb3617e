//! The one mapping from failures to HTTP: `{"error": {"code": "...", "message": "..."}}` with
//! the fitting status (SPEC section 3).

use std::borrow::Cow;
use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use flotilla_actors::error::Error as ActorError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    retry_after: Option<u64>,
    /// For a 405: the methods the path serves.
    allow: Option<&'static str>,
}

/// Declares a set of error answers for the OpenAPI document (`responses(..., ReadErrors)`),
/// each status with the one description every endpoint gives it; every set includes the answers
/// of any endpoint behind a bearer token (401, 500, 503), 405, and the server's edge (408 and
/// 429, see `crate::intake`). Never built.
macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident = $($status:tt)*) => {
        error_set!(@munch [$(#[$doc])*] $name [] $($status)* 401 405 408 429 500 503);
    };
    (@munch [$($doc:tt)*] $name:ident [$($done:tt)*]) => {
        $($doc)*
        #[derive(utoipa::IntoResponses)]
        #[allow(dead_code)]
        pub enum $name { $($done)* }
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 400 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// Malformed or invalid.
            #[response(status = 400, description = "malformed or invalid")]
            Invalid(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 401 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// No token, or one the service does not know.
            #[response(status = 401, description = "missing or unknown bearer token")]
            Unauthorized(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 404 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// No such object, or another tenant's.
            #[response(status = 404, description = "no such object (another tenant's included)")]
            NotFound(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 405 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// Another method than the path serves.
            #[response(
                status = 405,
                description = "`method_not_allowed`: the path is served with the methods `Allow` names",
                headers(("Allow" = String, description = "the methods the path serves"))
            )]
            MethodNotAllowed(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 408 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// The body did not arrive in time.
            #[response(status = 408, description = "`request_timeout`: the request body did not arrive in time")]
            Late(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 429 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// Too many connections from one address (or, where an endpoint says so, calls).
            #[response(
                status = 429,
                description = "`too_many_connections` from this address, or an endpoint's own rate limit",
                headers(("Retry-After" = String, description = "seconds to wait"))
            )]
            TooMany(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 409 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// The object's state forbids it.
            #[response(status = 409, description = "conflict with the object's state")]
            Conflict(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 413 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// The body is too large.
            #[response(status = 413, description = "body over the limit")]
            TooLarge(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 415 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// Not JSON.
            #[response(status = 415, description = "not application/json")]
            UnsupportedMediaType(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 500 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// A fault of the service.
            #[response(status = 500, description = "a fault of the service")]
            Fault(ErrorBody),
        ] $($rest)*);
    };
    (@munch $doc:tt $name:ident [$($done:tt)*] 503 $($rest:tt)*) => {
        error_set!(@munch $doc $name [$($done)*
            /// Not ready, or the object's actor is restarting.
            #[response(
                status = 503,
                description = "the journal is still being replayed, or the object is restarting"
            )]
            Unavailable(ErrorBody),
        ] $($rest)*);
    };
}

error_set!(
    /// A list of a tenant's objects.
    ListErrors = 400
);
error_set!(
    /// Reading (or acting on) one object, or listing those under one.
    ReadErrors = 400 404
);
error_set!(
    /// Deleting one object.
    RemoveErrors = 400 404 409
);
error_set!(
    /// Acting on one object without a body, which its state may refuse.
    ActErrors = 400 404 409
);
error_set!(
    /// Creating an object with a JSON body.
    CreateErrors = 400 409 413 415
);
error_set!(
    /// Changing an object with a JSON body, or creating one under another.
    WriteErrors = 400 404 409 413 415
);

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error's code and message.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (`invalid_input`, `not_found`, `replayed`, ...).
    pub code: String,
    /// Human text.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, a snake_case `code` and a human `message`.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a kind of object.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The error, answered with `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 405 with `Allow`: the path is served, but not with this method.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this path answers {allow}"),
        );
        error.allow = Some(allow);
        error
    }

    /// 403: the token is known, but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error.retry_after = Some(retry_after);
        error
    }

    /// 503 while the journal is being replayed.
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the journal is still being replayed",
        )
    }

    /// 503: the service cannot take the request now (a retry may succeed).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(1)
    }

    /// The code, for metrics.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The code as a metric's label: no copy of a code the service spelled out.
    pub fn code_label(&self) -> Cow<'static, str> {
        self.code.clone()
    }

    /// The human text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, allow));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        })
    }
}

impl From<ActorError> for ApiError {
    fn from(error: ActorError) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Not a fault: the object's actor is restarting, its lease is changing hands, or
            // other nodes kept moving its stream past the retries; a retry soon may succeed.
            tracing::warn!(%error, "request answered unavailable");
            return ApiError::unavailable("the object cannot take this call now; try again");
        }
        if status.is_server_error() {
            // Faults are logged here, once, with their cause; the client gets no internals.
            tracing::error!(%error, "request failed");
            return ApiError::new(status, error.code(), "the service failed; try again");
        }
        let retry_after = match &error {
            ActorError::Rejected(rejection) => rejection.retry_after_seconds(),
            _ => None,
        };
        let mut api = ApiError::new(status, error.code(), error.to_string());
        api.retry_after = retry_after;
        api
    }
}

impl From<flotilla_actors::domain::Rejection> for ApiError {
    /// A refusal of the domain's, as its command would have answered it.
    fn from(rejection: flotilla_actors::domain::Rejection) -> Self {
        ActorError::from(rejection).into()
    }
}

impl From<flotilla_journal::Error> for ApiError {
    fn from(error: flotilla_journal::Error) -> Self {
        ActorError::Journal(error).into()
    }
}

/// Bad query strings as API errors.
pub fn query_error(error: actix_web::error::QueryPayloadError) -> actix_web::Error {
    ApiError::bad_request("invalid_query", error.to_string()).into()
}

/// Bad paths as API errors.
pub fn path_error(error: actix_web::error::PathError) -> actix_web::Error {
    ApiError::bad_request("invalid_path", error.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_other_nodes_keep_moving_or_a_lease_changing_hands_is_503_with_retry_after() {
        let moved = ActorError::Journal(flotilla_journal::Error::Conflict {
            stream: "grp_1".into(),
            expected: flotilla_journal::ExpectedVersion::Exact(3),
            actual: 4,
        });
        let not_owner = ActorError::NotOwner("grp_1".into());
        for error in [moved, not_owner, ActorError::Unavailable] {
            let api = ApiError::from(error);
            assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!((api.code(), api.retry_after), ("unavailable", Some(1)));
        }
        // A fault of the journal itself stays a 500, without its internals.
        let fault = ApiError::from(ActorError::Journal(flotilla_journal::Error::Closed));
        assert_eq!(fault.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(fault.message, "the service failed; try again");
    }
}
