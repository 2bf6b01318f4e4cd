//! The subcommands that work on the database without a running server.

use crate::config::{DatabaseArgs, KeyCreateArgs, ScopeArg};
use crate::domain::api_key::{Scope, generate_token};
use crate::error::{Error, Result};
use crate::storage::{Database, api_keys, consumers};

/// `herald migrate`.
pub async fn migrate(args: &DatabaseArgs) -> Result<()> {
    Database::open(&args.database_url).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// `herald key create`: prints the new token on stdout.
pub async fn create_key(args: &KeyCreateArgs) -> Result<String> {
    let db = Database::open(&args.database.database_url).await?;
    let scope = match args.scope {
        ScopeArg::Admin => Scope::Admin,
        ScopeArg::Publisher => Scope::Publisher,
        ScopeArg::Consumer => Scope::Consumer,
    };
    let consumer_id = match (scope, &args.consumer) {
        (Scope::Consumer, None) => {
            return Err(Error::invalid(
                "--consumer",
                "is required with --scope consumer",
            ));
        }
        (Scope::Consumer, Some(reference)) => Some(
            consumers::resolve(&db.conn, reference)
                .await?
                .ok_or_else(|| Error::not_found("consumer", reference))?
                .id,
        ),
        (_, Some(_)) => {
            return Err(Error::invalid(
                "--consumer",
                "is only allowed with --scope consumer",
            ));
        }
        (_, None) => None,
    };
    let token = generate_token();
    let row = api_keys::insert(&db.conn, &args.name, scope, consumer_id, &token).await?;
    tracing::info!(key_id = %row.id, scope = scope.as_str(), "api key created");
    Ok(token.token)
}
