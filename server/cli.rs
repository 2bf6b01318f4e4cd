//! The subcommands that work on the database without a running server.

use crate::config::{DatabaseArgs, KeyCreateArgs, KeyListArgs, KeyRevokeArgs, ScopeArg};
use crate::domain::api_key::{Scope, generate_token};
use crate::domain::page::{MAX_PAGE_SIZE, PageRequest};
use crate::error::Error;
use crate::storage::{Database, OpenError, api_keys, consumers};

/// Why an offline subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Database(#[from] OpenError),
    /// A flag's value, or what the database says of it (an unknown consumer).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Failed(Error),
}

impl From<Error> for CliError {
    fn from(error: Error) -> CliError {
        match error {
            Error::InvalidArgument(message) | Error::NotFound(message) => {
                CliError::Invalid(message)
            }
            other => CliError::Failed(other),
        }
    }
}

/// `herald migrate`.
pub async fn migrate(args: &DatabaseArgs) -> Result<(), CliError> {
    Database::open(&args.database_url).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// `herald key create`: prints the new token on stdout.
pub async fn create_key(args: &KeyCreateArgs) -> Result<String, CliError> {
    let db = Database::open(&args.database.database_url).await?;
    let scope = match args.scope {
        ScopeArg::Admin => Scope::Admin,
        ScopeArg::Publisher => Scope::Publisher,
        ScopeArg::Consumer => Scope::Consumer,
    };
    let consumer_id = match (scope, &args.consumer) {
        (Scope::Consumer, None) => {
            return Err(Error::invalid("--consumer", "is required with --scope consumer").into());
        }
        (Scope::Consumer, Some(reference)) => Some(
            consumers::resolve(&db.conn, reference)
                .await?
                .ok_or_else(|| Error::not_found("consumer", reference))?
                .id,
        ),
        (_, Some(_)) => {
            return Err(
                Error::invalid("--consumer", "is only allowed with --scope consumer").into(),
            );
        }
        (_, None) => None,
    };
    let token = generate_token();
    let row = api_keys::insert(&db.conn, &args.name, scope, consumer_id, &token, None).await?;
    tracing::info!(key_id = %row.id, scope = scope.as_str(), "api key created");
    Ok(token.token)
}

/// `herald key list`: one line per key, under a header, columns separated
/// by tabs (for `column -t`, `cut` and `awk`).
pub async fn list_keys(args: &KeyListArgs) -> Result<String, CliError> {
    let db = Database::open(&args.database.database_url).await?;
    let mut text = String::from("ID\tSCOPE\tCONSUMER\tNAME\tCREATED\tEXPIRES\tREVOKED\n");
    let mut page = PageRequest {
        size: MAX_PAGE_SIZE,
        after: None,
    };
    loop {
        let rows = api_keys::list(&db.conn, &page, args.include_revoked).await?;
        let more = rows.len() as u64 > page.size;
        for row in rows.iter().take(MAX_PAGE_SIZE as usize) {
            let when = |at: Option<i64>| at.map_or_else(|| "-".to_owned(), timestamp);
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                row.id,
                row.scope,
                row.consumer_id.as_deref().unwrap_or("-"),
                // A tab or line break in a name would shift the columns.
                row.name.replace(['\t', '\n', '\r'], " "),
                timestamp(row.created_at),
                when(row.expires_at),
                when(row.revoked_at),
            ));
        }
        match (more, rows.get(MAX_PAGE_SIZE as usize - 1)) {
            (true, Some(last)) => page.after = Some(last.id.clone()),
            _ => return Ok(text),
        }
    }
}

/// `herald key revoke`: what became of the key, for the operator.
pub async fn revoke_key(args: &KeyRevokeArgs) -> Result<String, CliError> {
    let db = Database::open(&args.database.database_url).await?;
    let row = api_keys::get(&db.conn, &args.id)
        .await?
        .ok_or_else(|| Error::not_found("api key", &args.id))?;
    if let Some(at) = row.revoked_at {
        return Ok(format!(
            "{} was already revoked at {}",
            row.id,
            timestamp(at)
        ));
    }
    let row = api_keys::revoke(&db.conn, row).await?;
    // Running servers forget cached keys within 2 s anyway; on PostgreSQL
    // they are told at once.
    crate::wakeups::tell_once(&db, crate::wakeups::Notice::ApiKeys).await;
    tracing::info!(key_id = %row.id, "api key revoked");
    let mut said = format!("revoked {}", row.id);
    if row.scope == Scope::Admin.as_str() && api_keys::count_live_admin(&db.conn).await? == 0 {
        said.push_str("\nno live admin key is left: `herald key create --scope admin` makes one");
    }
    Ok(said)
}

/// Epoch milliseconds as RFC 3339, to the second, in UTC.
fn timestamp(millis: i64) -> String {
    humantime::format_rfc3339_seconds(crate::domain::time::system_time(millis)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_to_the_second() {
        assert_eq!(super::timestamp(1_767_323_045_678), "2026-01-02T03:04:05Z");
        assert_eq!(super::timestamp(-5), "1970-01-01T00:00:00Z");
    }
}
