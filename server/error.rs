//! Herald's one error type for requests and background work, and its one
//! conversion to a gRPC status.
//!
//! Client faults carry a precise code and a message naming the field and the
//! rule. Everything else (`Database`, `Internal`) keeps its cause and the
//! place where it entered Herald, is logged here with both, and leaves the
//! server as an opaque `INTERNAL`, so that no database detail reaches a
//! caller. Failures to start are not requests and have their own plain error
//! (`serve::StartError`), with no gRPC code.

use std::panic::Location;

use tonic::{Code, Status};

/// Any error that can be the cause of an internal one.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// The database refused or failed a statement. Built by `?` on a
    /// `DbErr`, which records where that happened.
    #[error("database error at {location}: {source}")]
    Database {
        source: sea_orm::DbErr,
        location: &'static Location<'static>,
    },
    /// A broken invariant or a failure of something Herald relies on.
    #[error("{message} (at {location})")]
    Internal {
        message: String,
        source: Option<BoxError>,
        location: &'static Location<'static>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sea_orm::DbErr> for Error {
    #[track_caller]
    fn from(source: sea_orm::DbErr) -> Self {
        Error::Database {
            source,
            location: Location::caller(),
        }
    }
}

impl Error {
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(format!("{field}: {rule}"))
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Error::NotFound(format!("{what} {id:?} not found"))
    }

    /// An internal error with no underlying cause, located at the caller.
    #[track_caller]
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
            source: None,
            location: Location::caller(),
        }
    }

    /// An internal error caused by `source`, located at the caller.
    #[track_caller]
    pub fn internal_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(source.into()),
            location: Location::caller(),
        }
    }

    /// Whether the database refused a row because a unique key already holds it.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Error::Database { source, .. }
                if matches!(source.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
        )
    }
}

/// The error and every cause below it, as one line: what the log shows.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let line = next.to_string();
        // Many errors repeat their cause in their own text; say it once.
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = next.source();
    }
    text
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
            Error::Database { .. } | Error::Internal { .. } => {
                tracing::error!(error = %chain(&error), "internal error answered as INTERNAL");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails() -> Result<()> {
        Err(sea_orm::DbErr::Custom("disk on fire".into()))?;
        Ok(())
    }

    #[test]
    fn database_errors_keep_their_cause_and_where_they_entered() {
        let error = fails().expect_err("fails");
        let text = chain(&error);
        assert!(text.contains("disk on fire"), "{text}");
        assert!(text.contains("server/error.rs:"), "{text}");
    }

    #[test]
    fn internal_errors_keep_their_source() {
        let io = std::io::Error::other("socket gone");
        let error = Error::internal_from("cannot build the HTTP client", io);
        let text = chain(&error);
        assert!(
            text.starts_with("cannot build the HTTP client (at server/error.rs:"),
            "{text}"
        );
        assert!(text.ends_with(": socket gone"), "{text}");
        let status = Status::from(error);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error", "no detail leaves");
    }
}
