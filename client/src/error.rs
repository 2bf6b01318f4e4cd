//! The client's one error type.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

pub use tonic::Code;

/// What went wrong in a call to Herald.
///
/// Every variant maps to a gRPC [`Code`] through [`Error::code`], so callers
/// can branch on one thing whether the server refused the call or the client
/// gave up before an answer came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (or the transport underneath) answered with a gRPC status.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC status code, for example [`Code::NotFound`].
        code: Code,
        /// The server's message, meant for humans.
        message: String,
    },
    /// No answer came within the client's per-request timeout.
    #[error("no answer from Herald within {0:?}")]
    Timeout(Duration),
    /// The first connection to the server could not be made.
    #[error("cannot connect to {url}: {detail}")]
    Connect {
        /// The URL the client was given.
        url: String,
        /// The transport error and its causes, joined into one line.
        detail: String,
    },
    /// The client was configured with something it cannot use (a malformed
    /// URL, a token that is not a valid header value).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The gRPC code of this error. Client-side failures get the code a
    /// server would have used: [`Code::DeadlineExceeded`] for a timeout,
    /// [`Code::Unavailable`] for a failed connection and
    /// [`Code::InvalidArgument`] for bad configuration.
    pub fn code(&self) -> Code {
        match self {
            Error::Rpc { code, .. } => *code,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Connect { .. } => Code::Unavailable,
            Error::Config(_) => Code::InvalidArgument,
        }
    }

    /// The human-readable message: the server's for [`Error::Rpc`], this
    /// error's own text otherwise.
    pub fn message(&self) -> String {
        match self {
            Error::Rpc { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when the server answered `NOT_FOUND`.
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }

    /// True when the server answered `ALREADY_EXISTS`.
    pub fn is_already_exists(&self) -> bool {
        self.code() == Code::AlreadyExists
    }

    pub(crate) fn connect(url: &str, error: &tonic::transport::Error) -> Error {
        Error::Connect {
            url: url.to_owned(),
            detail: error_chain(error),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        // A status tonic made from a broken connection (not one the server
        // sent) carries the transport's error as its source; its own
        // message says only "transport error", and its code depends on
        // when the connection broke (UNKNOWN, CANCELLED). The server never
        // answered: that is UNAVAILABLE, with the cause spelled out — a
        // refused client certificate shows only this way.
        match std::error::Error::source(&status) {
            Some(source) => Error::Rpc {
                code: match status.code() {
                    Code::Unknown | Code::Cancelled => Code::Unavailable,
                    code => code,
                },
                message: format!("{}: {}", status.message(), error_chain(source)),
            },
            None => Error::Rpc {
                code: status.code(),
                message: status.message().to_owned(),
            },
        }
    }
}

/// A `Result` whose error is the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Joins an error and its sources: transport errors alone say only
/// "transport error", the useful part is in the causes. A cause that says
/// the same as the one before it (hyper's connector wraps its own error)
/// is left out.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut previous = text.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if line != previous {
            let _ = write!(text, ": {line}");
        }
        previous = line;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_keeps_its_code_and_message() {
        let error = Error::from(tonic::Status::not_found("api key key_1 not found"));
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), "api key key_1 not found");
        assert!(error.is_not_found());
        assert!(error.to_string().contains("NotFound"), "{error}");
    }

    #[test]
    fn repeated_causes_are_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("{text}")]
        struct Layer {
            text: &'static str,
            #[source]
            source: Option<Box<Layer>>,
        }
        let layer = |text, source: Option<Layer>| Layer {
            text,
            source: source.map(Box::new),
        };
        let io = layer("connection refused", None);
        let inner = layer("tcp connect error", Some(io));
        let outer = layer("tcp connect error", Some(inner));
        let top = layer("transport error", Some(outer));
        assert_eq!(
            error_chain(&top),
            "transport error: tcp connect error: connection refused"
        );
    }

    #[test]
    fn client_side_errors_have_codes_too() {
        assert_eq!(
            Error::Timeout(Duration::from_secs(1)).code(),
            Code::DeadlineExceeded
        );
        assert_eq!(Error::Config("x".into()).code(), Code::InvalidArgument);
    }
}
