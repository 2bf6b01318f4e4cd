//! What raw SQL in Herald shares: parameters are written `$1`, `$2`, … on
//! both databases (PostgreSQL's syntax; sqlx binds SQLite's `$N` to the Nth
//! value too, and a number may appear twice), lists travel as one JSON
//! parameter, and row sets as one JSON array of objects, so that a
//! statement's text never depends on how many values it carries (a fixed
//! text is parsed and planned once per connection).

use sea_orm::{DatabaseBackend, Statement, Value};

use crate::error::{Error, Result};

/// The two SQL dialects Herald speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn of(backend: DatabaseBackend) -> Dialect {
        match backend {
            DatabaseBackend::Postgres => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    pub fn backend(self) -> DatabaseBackend {
        match self {
            Dialect::Postgres => DatabaseBackend::Postgres,
            Dialect::Sqlite => DatabaseBackend::Sqlite,
        }
    }

    /// The elements of the JSON list parameter `$n`, as a one-column
    /// subquery (for `… IN (…)`).
    pub fn json_ids(self, n: u8) -> String {
        match self {
            Dialect::Postgres => format!("SELECT json_array_elements_text(${n}::json)"),
            Dialect::Sqlite => format!("SELECT value FROM json_each(${n})"),
        }
    }

    /// The rows of the JSON array parameter `$n` as a table `alias` with
    /// `columns`: `json_to_recordset` on PostgreSQL, `json_each` taken apart
    /// on SQLite.
    pub fn json_rows(self, n: u8, alias: &str, columns: &[Column]) -> String {
        match self {
            Dialect::Postgres => {
                let typed: Vec<String> = columns
                    .iter()
                    .map(|column| format!("{} {}", column.name, column.postgres_type))
                    .collect();
                format!(
                    "json_to_recordset(${n}::json) AS {alias}({})",
                    typed.join(", ")
                )
            }
            Dialect::Sqlite => {
                let extracted: Vec<String> = columns
                    .iter()
                    .map(|column| format!("json_extract(value, '$.{0}') AS {0}", column.name))
                    .collect();
                format!(
                    "(SELECT {} FROM json_each(${n})) AS {alias}",
                    extracted.join(", ")
                )
            }
        }
    }
}

/// A column of a row type that travels as JSON, with its PostgreSQL type
/// (for `json_to_recordset`; SQLite takes the JSON values as they are).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub postgres_type: &'static str,
}

/// `name, name, …` of a column list.
pub fn names(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|column| column.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement written with `$N` parameters, for either database.
pub fn statement(backend: DatabaseBackend, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(backend, sql, values)
}

/// A value as JSON text: a JSON column (metadata, headers, filters) or a
/// JSON parameter (id lists, row sets).
#[track_caller]
pub fn json_text(value: &(impl serde::Serialize + ?Sized)) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|err| Error::internal_from("cannot serialise a value as JSON", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [Column; 2] = [
        Column {
            name: "id",
            postgres_type: "text",
        },
        Column {
            name: "created_at",
            postgres_type: "bigint",
        },
    ];

    #[test]
    fn json_rows_name_every_column_once_per_dialect() {
        assert_eq!(
            Dialect::Postgres.json_rows(2, "r", &COLUMNS),
            "json_to_recordset($2::json) AS r(id text, created_at bigint)"
        );
        assert_eq!(
            Dialect::Sqlite.json_rows(1, "r", &COLUMNS),
            "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.created_at') AS created_at FROM json_each($1)) AS r"
        );
        assert_eq!(names(&COLUMNS), "id, created_at");
    }
}
