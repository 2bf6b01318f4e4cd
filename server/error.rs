//! Herald's one error type and its one conversion to a gRPC status.
//!
//! Client faults carry a precise code and a message naming the field and the
//! rule. Everything else is logged here, with its cause, and leaves the server
//! as an opaque `INTERNAL`, so that no database detail reaches a caller.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule; the message names the field and the rule.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(format!("{field}: {rule}"))
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Error::NotFound(format!("{what} {id:?} not found"))
    }

    /// Whether the database refused a row because a unique key already holds it.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Error::Database(err)
                if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
        )
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(message) => Status::invalid_argument(message),
            Error::NotFound(message) => Status::not_found(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::ResourceExhausted(message) => Status::resource_exhausted(message),
            Error::Unavailable(message) => Status::new(Code::Unavailable, message),
            Error::Database(err) => {
                tracing::error!(error = %err, "database error");
                Status::internal("internal error")
            }
            Error::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
