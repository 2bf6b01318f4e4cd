//! SQLite: the tables every published event touches (events, idempotency
//! keys, deliveries, attempts) lose their foreign keys, as they did on
//! PostgreSQL in `m20261130_000002_hot_tables_lean`.
//!
//! With the cascades in place on SQLite only, a delete that forgot a child
//! table passed every SQLite test and left orphans on PostgreSQL, and a delete
//! racing a publish behaved differently on each database. Now both have one
//! schema, and Herald's explicit deletes (`storage::history`) are the only
//! thing that removes these rows on either.
//!
//! SQLite cannot drop a foreign key, so each table is rebuilt: created afresh
//! under a temporary name, filled with every row, the old one dropped, the
//! new one renamed, its indexes recreated under their old names. Herald's
//! connections run with `foreign_keys = ON`, and dropping a table deletes its
//! rows first, which would cascade into any child that still references it;
//! children are therefore rebuilt before their parents (attempts, deliveries,
//! idempotency keys, events), so that when a parent is dropped nothing
//! references it any more. `PRAGMA foreign_keys` cannot be changed inside a
//! transaction, and sea-orm-migration runs a migration in one where asked
//! (here, so that a failure leaves the schema as it was); the order makes
//! turning it off unnecessary.
//!
//! PostgreSQL: nothing to do.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One rebuilt table, as `m20261129_000001_initial` created it on SQLite.
struct HotTable {
    name: &'static str,
    /// The columns and the primary key.
    columns: &'static str,
    /// The foreign keys this migration drops and `down` restores.
    foreign_keys: &'static str,
    /// The rows those foreign keys allow: `down` copies only these (with the
    /// cascades in place, the others would have been deleted with their
    /// parent).
    with_parents: &'static str,
    /// (name, columns) of its indexes.
    indexes: &'static [(&'static str, &'static str)],
}

/// Parents first: `up` walks it backwards.
const TABLES: [HotTable; 4] = [
    HotTable {
        name: "events",
        columns: r#"
            "id" varchar(64) NOT NULL PRIMARY KEY,
            "consumer_id" varchar(64) NOT NULL,
            "event_type" varchar(256) NOT NULL,
            "payload" text NOT NULL,
            "idempotency_key" varchar(256) NULL,
            "callback_url" text NULL,
            "created_at" integer NOT NULL
        "#,
        foreign_keys: r#"FOREIGN KEY ("consumer_id") REFERENCES "consumers" ("id") ON DELETE CASCADE"#,
        with_parents: "consumer_id IN (SELECT id FROM consumers)",
        indexes: &[
            ("events_by_consumer", r#""consumer_id", "id""#),
            ("events_by_time", r#""created_at""#),
        ],
    },
    HotTable {
        name: "idempotency_keys",
        columns: r#"
            "consumer_id" varchar(64) NOT NULL,
            "key" varchar(256) NOT NULL,
            "event_id" varchar(64) NOT NULL,
            "payload_hash" varchar(64) NOT NULL,
            "created_at" integer NOT NULL,
            PRIMARY KEY ("consumer_id", "key")
        "#,
        foreign_keys: r#"FOREIGN KEY ("event_id") REFERENCES "events" ("id") ON DELETE CASCADE"#,
        with_parents: "event_id IN (SELECT id FROM events)",
        indexes: &[],
    },
    HotTable {
        name: "deliveries",
        columns: r#"
            "id" varchar(64) NOT NULL PRIMARY KEY,
            "event_id" varchar(64) NOT NULL,
            "endpoint_id" varchar(64) NULL,
            "url" text NULL,
            "status" varchar(16) NOT NULL,
            "attempt_count" integer NOT NULL,
            "next_attempt_at" integer NULL,
            "lease_owner" varchar(64) NULL,
            "lease_expires_at" integer NULL,
            "last_attempt_at" integer NULL,
            "created_at" integer NOT NULL,
            "updated_at" integer NOT NULL
        "#,
        foreign_keys: r#"
            FOREIGN KEY ("event_id") REFERENCES "events" ("id") ON DELETE CASCADE,
            FOREIGN KEY ("endpoint_id") REFERENCES "endpoints" ("id") ON DELETE CASCADE
        "#,
        with_parents: "event_id IN (SELECT id FROM events) \
                       AND (endpoint_id IS NULL OR endpoint_id IN (SELECT id FROM endpoints))",
        indexes: &[
            ("deliveries_due", r#""status", "next_attempt_at""#),
            ("deliveries_by_endpoint", r#""endpoint_id", "status", "id""#),
            ("deliveries_by_event", r#""event_id""#),
        ],
    },
    HotTable {
        name: "attempts",
        columns: r#"
            "id" varchar(64) NOT NULL PRIMARY KEY,
            "delivery_id" varchar(64) NOT NULL,
            "event_id" varchar(64) NOT NULL,
            "endpoint_id" varchar(64) NULL,
            "url" text NOT NULL,
            "attempted_at" integer NOT NULL,
            "duration_ms" integer NOT NULL,
            "status_code" integer NULL,
            "error_class" varchar(32) NULL,
            "response_body" text NOT NULL,
            "succeeded" boolean NOT NULL
        "#,
        foreign_keys: r#"FOREIGN KEY ("delivery_id") REFERENCES "deliveries" ("id") ON DELETE CASCADE"#,
        with_parents: "delivery_id IN (SELECT id FROM deliveries)",
        indexes: &[
            ("attempts_by_delivery", r#""delivery_id", "id""#),
            ("attempts_by_event", r#""event_id", "id""#),
            ("attempts_by_endpoint", r#""endpoint_id", "id""#),
        ],
    },
];

/// Replaces `table` by a copy with (or without) its foreign keys, keeping
/// the rows that `only` selects, or all of them.
async fn rebuild(
    db: &impl ConnectionTrait,
    table: &HotTable,
    with_foreign_keys: bool,
    only: Option<&str>,
) -> Result<(), DbErr> {
    let HotTable { name, columns, .. } = table;
    let rebuilt = format!("{name}_rebuilt");
    let definition = if with_foreign_keys {
        format!("{}, {}", columns.trim(), table.foreign_keys.trim())
    } else {
        columns.trim().to_owned()
    };
    let names: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            format!("SELECT name FROM pragma_table_info('{name}') ORDER BY cid"),
        ))
        .await?
        .into_iter()
        .map(|row| {
            row.try_get::<String>("", "name")
                .map(|name| format!("\"{name}\""))
        })
        .collect::<Result<_, _>>()?;
    let names = names.join(", ");
    let filter = only
        .map(|only| format!(" WHERE {only}"))
        .unwrap_or_default();
    db.execute_unprepared(&format!("CREATE TABLE \"{rebuilt}\" ( {definition} )"))
        .await?;
    db.execute_unprepared(&format!(
        "INSERT INTO \"{rebuilt}\" ({names}) SELECT {names} FROM \"{name}\"{filter}"
    ))
    .await?;
    db.execute_unprepared(&format!("DROP TABLE \"{name}\""))
        .await?;
    db.execute_unprepared(&format!("ALTER TABLE \"{rebuilt}\" RENAME TO \"{name}\""))
        .await?;
    for (index, indexed) in table.indexes {
        db.execute_unprepared(&format!(
            "CREATE INDEX \"{index}\" ON \"{name}\" ({indexed})"
        ))
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in TABLES.iter().rev() {
            rebuild(db, table, false, None).await?;
        }
        Ok(())
    }

    /// Parents first this time: a child rebuilt with its foreign key must
    /// find its parent's final table, and no old table that still has
    /// children with a foreign key is ever dropped.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in &TABLES {
            rebuild(db, table, true, Some(table.with_parents)).await?;
        }
        Ok(())
    }

    /// All four rebuilds or none: a migration cut short must not leave a
    /// table renamed away or half copied.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
