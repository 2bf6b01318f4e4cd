//! Herald's one error type for requests and background work, and its one
//! conversion to a gRPC status.
//!
//! Client faults carry a precise code and a message naming the field and the
//! rule. What a message echoes of the request is bounded: values are quoted
//! through [`quote`] (at most [`MAX_QUOTED_CHARS`] characters and their
//! length), and the conversion to a status caps every message at
//! [`MAX_STATUS_MESSAGE_BYTES`] (keeping its start, which names the field,
//! and its end, which usually states the rule), because the message travels
//! in the `grpc-message` trailer and clients refuse large header blocks (a
//! 1 MB echo reached them as RESOURCE_EXHAUSTED instead of the real code). Everything else (`Database`, `Internal`) keeps its cause and the
//! place where it entered Herald, is logged here with both, and leaves the
//! server as an opaque `INTERNAL`, so that no database detail reaches a
//! caller; except a database error that means nothing can be stored now
//! (connection lost, disk full, file unwritable), which leaves as
//! `UNAVAILABLE` or `RESOURCE_EXHAUSTED` with a fixed message saying so. Failures to start are not requests and have their own plain error
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

/// At most this many characters of a caller's value are quoted in an error.
pub const MAX_QUOTED_CHARS: usize = 100;
/// At most this many bytes of message leave in a status.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;
/// Of a longer message, this many bytes of its start and of its end are kept.
const KEPT_HEAD_BYTES: usize = 640;
const KEPT_TAIL_BYTES: usize = 320;

/// A caller's value as an error message quotes it: in double quotes with
/// escapes, cut after [`MAX_QUOTED_CHARS`] characters with a note of its
/// whole length.
pub fn quote(value: &str) -> String {
    // Fast path: a value of few bytes has few characters.
    if value.len() <= MAX_QUOTED_CHARS || value.chars().count() <= MAX_QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{head:?}… ({} characters)", value.chars().count())
}

/// `message` within [`MAX_STATUS_MESSAGE_BYTES`]: a longer one keeps its
/// start and its end, cut at character boundaries, and says how much of
/// the middle was left out.
pub fn bounded(message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        return message;
    }
    let mut head_end = KEPT_HEAD_BYTES;
    while !message.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = message.len() - KEPT_TAIL_BYTES;
    while !message.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{}…[{} bytes left out]…{}",
        &message[..head_end],
        tail_start - head_end,
        &message[tail_start..]
    )
}

impl Error {
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(format!("{field}: {rule}"))
    }

    /// `what` `id` does not exist; the id is [`quote`]d.
    pub fn not_found(what: &str, id: &str) -> Self {
        Error::NotFound(format!("{what} {} not found", quote(id)))
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

/// The message of every INTERNAL status Herald itself answers: no detail
/// leaves (the grpc layer tells these apart from tonic's own INTERNAL
/// answers to requests it could not decode).
pub const INTERNAL_MESSAGE: &str = "internal error";

/// What a call that met the database unreachable is told (UNAVAILABLE).
pub const LOST_DATABASE_MESSAGE: &str = "the database is unreachable: this call may not have \
     been stored; retry later (a publish retried with the same idempotency_key is stored once)";

/// What a call that met the database's disk full is told (RESOURCE_EXHAUSTED).
pub const DISK_FULL_MESSAGE: &str = "the database's disk is full: nothing was stored; \
     retry once space is freed (a publish retried with the same idempotency_key is stored once)";
/// What a call that met SQLite unable to write is told (UNAVAILABLE).
pub const CANNOT_WRITE_MESSAGE: &str = "the database file cannot be written (read-only or an \
     I/O error): nothing was stored; retry once it is writable (a publish retried with the \
     same idempotency_key is stored once)";

/// Whether a database error says that nothing can be stored now, whatever
/// the statement (the database is unreachable, its disk is full, its file
/// cannot be written), and what the caller is told: the code and message.
/// Anything else is a statement's own failure, answered INTERNAL.
fn unusable(error: &sea_orm::DbErr) -> Option<(Code, &'static str)> {
    if lost_connection(error) {
        return Some((Code::Unavailable, LOST_DATABASE_MESSAGE));
    }
    let database = sqlx_error(error)?.as_database_error()?;
    let code = database.code()?;
    if database
        .try_downcast_ref::<sea_orm::SqlxSqliteError>()
        .is_none()
    {
        // PostgreSQL's disk_full.
        return (code == "53100").then_some((Code::ResourceExhausted, DISK_FULL_MESSAGE));
    }
    // SQLite's result codes (the primary code is the low byte): FULL 13;
    // READONLY 8, IOERR 10, CANTOPEN 14.
    match code.parse::<i32>().ok()? & 0xff {
        13 => Some((Code::ResourceExhausted, DISK_FULL_MESSAGE)),
        8 | 10 | 14 => Some((Code::Unavailable, CANNOT_WRITE_MESSAGE)),
        _ => None,
    }
}

fn sqlx_error(error: &sea_orm::DbErr) -> Option<&sea_orm::sqlx::Error> {
    use sea_orm::{DbErr, RuntimeErr};
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            Some(error)
        }
        _ => None,
    }
}

/// Whether a database error says the database could not be reached (as
/// opposed to a statement it refused): the connection failed, broke, or
/// none could be had in time.
fn lost_connection(error: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, sqlx};
    if matches!(error, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    match sqlx_error(error) {
        Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => true,
        // PostgreSQL's classes 08 (connection exception) and 57P (shut
        // down by its operator, or starting up).
        Some(sqlx::Error::Database(error)) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let (code, message) = match error {
            Error::InvalidArgument(message) => (Code::InvalidArgument, message),
            Error::NotFound(message) => (Code::NotFound, message),
            Error::AlreadyExists(message) => (Code::AlreadyExists, message),
            Error::FailedPrecondition(message) => (Code::FailedPrecondition, message),
            Error::Unauthenticated(message) => (Code::Unauthenticated, message),
            Error::PermissionDenied(message) => (Code::PermissionDenied, message),
            Error::ResourceExhausted(message) => (Code::ResourceExhausted, message),
            Error::Unavailable(message) => (Code::Unavailable, message),
            Error::Database { ref source, .. } if let Some((code, message)) = unusable(source) => {
                tracing::warn!(error = %chain(&error), "a call met the database unable to store");
                (code, message.to_owned())
            }
            Error::Database { .. } | Error::Internal { .. } => {
                tracing::error!(error = %chain(&error), "internal error answered as INTERNAL");
                return Status::internal(INTERNAL_MESSAGE);
            }
        };
        Status::new(code, bounded(message))
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

    #[test]
    fn quoted_values_are_cut_with_their_length() {
        assert_eq!(quote("acme"), "\"acme\"");
        assert_eq!(quote(&"x".repeat(100)), format!("{:?}", "x".repeat(100)));
        let long = "é".repeat(1_000_000);
        let quoted = quote(&long);
        assert_eq!(
            quoted,
            format!("{:?}… (1000000 characters)", "é".repeat(100))
        );
        let status = Status::from(Error::not_found("consumer", &long));
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().starts_with("consumer \"éé"),
            "{}",
            status.message()
        );
        assert!(status.message().ends_with("(1000000 characters) not found"));
    }

    #[test]
    fn status_messages_are_bounded_keeping_field_and_rule() {
        let echo = "ü".repeat(600_000);
        let status = Status::from(Error::invalid(
            "event_type",
            format!("{echo:?} is not a valid event type: use lowercase segments"),
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        let message = status.message();
        assert!(
            message.len() <= MAX_STATUS_MESSAGE_BYTES,
            "{}",
            message.len()
        );
        assert!(message.starts_with("event_type: \"üü"), "{message}");
        assert!(message.ends_with("is not a valid event type: use lowercase segments"));
        assert!(message.contains("bytes left out]"), "{message}");
        // Short messages are left alone.
        let short = Status::from(Error::invalid("url", "is required"));
        assert_eq!(short.message(), "url: is required");
    }
}
