//! A database of its own for one benchmark run: a SQLite file in a
//! temporary directory, or a PostgreSQL database `<prefix>_<ulid>` made on
//! the server of `postgres_url` and dropped by [`FreshDatabase::drop_it`].
//! Shared by the examples with `#[path]` (not an example itself).

use sea_orm::ConnectionTrait;

pub struct FreshDatabase {
    pub url: String,
    /// The PostgreSQL database's name, to drop it.
    postgres: Option<(String, String)>,
    _temp_dir: tempfile::TempDir,
}

impl FreshDatabase {
    /// `postgres_url` is `None` for SQLite.
    pub async fn create(prefix: &str, postgres_url: Option<&str>) -> FreshDatabase {
        let temp_dir = tempfile::tempdir().expect("temporary directory");
        let Some(postgres_url) = postgres_url else {
            return FreshDatabase {
                url: format!("sqlite://{}", temp_dir.path().join("herald.db").display()),
                postgres: None,
                _temp_dir: temp_dir,
            };
        };
        let name = format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase());
        let admin = sea_orm::Database::connect(postgres_url)
            .await
            .expect("connect to --postgres-url");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the benchmark database");
        let _ = admin.close().await;
        let base = postgres_url
            .rsplit_once('/')
            .map_or(postgres_url, |(base, _)| base);
        FreshDatabase {
            url: format!("{base}/{name}"),
            postgres: Some((postgres_url.to_owned(), name)),
            _temp_dir: temp_dir,
        }
    }

    /// Drops the PostgreSQL database (a SQLite file goes with its directory).
    pub async fn drop_it(self) {
        if let Some((postgres_url, name)) = self.postgres
            && let Ok(admin) = sea_orm::Database::connect(&postgres_url).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
    }
}
