//! The subcommands that work on the database without a running server.

use crate::config::{DatabaseArgs, KeyCreateArgs, ScopeArg};
use crate::domain::api_key::{Scope, generate_token};
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
