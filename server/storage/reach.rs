//! Reaching PostgreSQL at start, with an answer an operator can act on.
//!
//! The pool retries a failing connection until its acquire timeout and then
//! says only `pool timed out while waiting for an open connection`: 30 s of
//! silence, no host, no cause. So before the pools are built, one
//! connection is tried alone, for at most [`PROBE_TIMEOUT`], and a failure
//! names where it tried, what it was told, and what usually fixes it.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::Connection;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};

use super::OpenError;

/// How long the first connection may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Connects once and closes; the error says where and why.
pub async fn probe_postgres(url: &str) -> Result<(), OpenError> {
    let options = PgConnectOptions::from_str(url).map_err(|err| OpenError::Unreachable {
        target: "--database-url".to_owned(),
        cause: err.to_string(),
        hint: String::new(),
    })?;
    let place = Place::of(&options);
    let attempt = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&options)).await;
    match attempt {
        Ok(Ok(connection)) => {
            // Closing is a courtesy; the server drops it either way.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(place.unreachable(&err)),
        Err(_) => Err(OpenError::Unreachable {
            target: place.target(),
            cause: format!(
                "nothing answered within {}",
                humantime::format_duration(PROBE_TIMEOUT)
            ),
            hint:
                "; is the host reachable and the port open (a firewall drops, it does not refuse)?"
                    .to_owned(),
        }),
    }
}

/// Where a connection was tried, as the URL gave it.
struct Place {
    host: String,
    port: u16,
    user: String,
    database: String,
}

impl Place {
    fn of(options: &PgConnectOptions) -> Place {
        Place {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            user: options.get_username().to_owned(),
            database: options
                .get_database()
                .unwrap_or(options.get_username())
                .to_owned(),
        }
    }

    fn target(&self) -> String {
        format!(
            "{}:{} (database {:?}, user {:?})",
            self.host, self.port, self.database, self.user
        )
    }

    fn unreachable(&self, err: &sea_orm::sqlx::Error) -> OpenError {
        let code = err
            .as_database_error()
            .and_then(|db| db.code().map(|code| code.into_owned()));
        let cause = match err.as_database_error() {
            Some(db) => db.message().to_owned(),
            None => crate::error::chain(err),
        };
        OpenError::Unreachable {
            target: self.target(),
            hint: self.hint(code.as_deref(), &cause),
            cause,
        }
    }

    /// What usually fixes it, from the SQLSTATE or the I/O error.
    fn hint(&self, code: Option<&str>, cause: &str) -> String {
        let (host, port, user, database) = (&self.host, self.port, &self.user, &self.database);
        match code {
            // invalid_catalog_name
            Some("3D000") => {
                format!("; create it: createdb -h {host} -p {port} -U {user} {database}")
            }
            // invalid_authorization_specification: an unknown role, or
            // pg_hba.conf refusing this host or user.
            Some("28000") if cause.contains("role") => format!(
                "; create the role: createuser -h {host} -p {port} -U postgres --createdb {user}"
            ),
            Some("28000") => "; pg_hba.conf does not let this user in from this host".to_owned(),
            // invalid_password
            Some("28P01") => "; check the user and password in --database-url".to_owned(),
            Some(_) => String::new(),
            None if cause.contains("refused") => {
                format!("; is PostgreSQL running and listening on {host}:{port}?")
            }
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> Place {
        Place {
            host: "db.internal".into(),
            port: 5433,
            user: "herald".into(),
            database: "events".into(),
        }
    }

    #[test]
    fn each_common_failure_gets_the_fix_that_usually_works() {
        let place = place();
        assert_eq!(
            place.hint(Some("3D000"), "database \"events\" does not exist"),
            "; create it: createdb -h db.internal -p 5433 -U herald events"
        );
        assert!(
            place
                .hint(Some("28000"), "role \"herald\" does not exist")
                .contains("createuser -h db.internal -p 5433 -U postgres --createdb herald")
        );
        assert!(
            place
                .hint(Some("28000"), "no pg_hba.conf entry")
                .contains("pg_hba.conf")
        );
        assert!(
            place
                .hint(Some("28P01"), "password authentication failed")
                .contains("password")
        );
        assert!(
            place
                .hint(None, "Connection refused (os error 111)")
                .contains("db.internal:5433")
        );
        assert_eq!(place.hint(Some("53300"), "too many connections"), "");
    }

    #[test]
    fn the_target_names_host_port_database_and_user_never_a_password() {
        let options =
            PgConnectOptions::from_str("postgres://herald:s3cret@db.internal:5433/events")
                .expect("url");
        let target = Place::of(&options).target();
        assert_eq!(
            target,
            "db.internal:5433 (database \"events\", user \"herald\")"
        );
        assert!(!target.contains("s3cret"));
    }
}
