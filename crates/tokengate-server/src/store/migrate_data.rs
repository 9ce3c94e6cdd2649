//! `tokengate migrate-data`: every row of every data table, from one
//! database into another (an embedded SQLite install into PostgreSQL above
//! all), in ONE transaction on the target.
//!
//! Only the list of tables is written here ([`TABLES`], parents before
//! children); their columns, primary keys and types are read from each
//! database's catalog. A column a future migration adds is therefore copied
//! without anyone remembering to add it here, and a table a future migration
//! adds is caught by the test that compares [`TABLES`] with the tables the
//! migrations create (`tests/integration/migrate_data.rs`).
//!
//! Rows are read from a consistent snapshot of the source (a read
//! transaction; `REPEATABLE READ` on PostgreSQL), in pages of 1,000 by
//! primary key, and each page is written by one `INSERT` (PostgreSQL: one
//! array per column through `UNNEST`; SQLite: a multi-row `VALUES`). Both
//! databases are first migrated to this version's schema. The target is
//! locked against other writers for the whole copy, so checking it is empty
//! and filling it cannot be interleaved with anyone else's writes; any
//! failure drops the target transaction, which leaves the target as it was.
//!
//! Values are moved by the target column's type, checked before the first
//! row moves: SQLite stores every integer alike, PostgreSQL wants the width
//! (or a boolean) its schema declares. Stored rows are copied as they are:
//! signing keys stay sealed under the master key (which this never needs),
//! refresh tokens stay hashes.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row as _, Sqlite, Transaction};

use super::{Pool, Store, StoreError};

/// Every data table, parents before children (`sessions` references
/// `users`, `refresh_tokens` references `sessions`): inserted in this order,
/// emptied in the reverse one. `_sqlx_migrations` is not data: each database
/// keeps its own.
pub const TABLES: &[&str] = &[
    "users",
    "sessions",
    "refresh_tokens",
    "signing_keys",
    "audit_events",
];

/// Rows per `INSERT` (and per page read).
const BATCH_ROWS: usize = 1000;

/// Bound parameters per SQLite `INSERT … VALUES` at most, below its limit
/// (32,766): a table wider than 30 columns gets smaller batches.
/// (PostgreSQL binds one array per column, whatever the batch.)
const MAX_PARAMETERS: usize = 30_000;

/// Which of the two URLs an error is about, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `--from`: the database copied from.
    From,
    /// `--to`: the database copied into.
    To,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::From => "--from",
            Side::To => "--to",
        })
    }
}

/// Why a copy was refused or failed. No message holds a URL (they may carry
/// passwords) or a copied value (they may be hashes or personal data).
/// Everything before [`MigrateDataError::Commit`] leaves the target's data
/// as it was.
#[derive(Debug, thiserror::Error)]
pub enum MigrateDataError {
    /// A URL is not one this command can open.
    #[error("{side}: {reason}")]
    Url {
        /// Which URL.
        side: Side,
        /// What is wrong with it.
        reason: String,
    },
    /// Both URLs name one database: the copy would delete its own source.
    #[error("--from and --to name the same database")]
    SameDatabase,
    /// The source SQLite file is not there (opening it would create an empty
    /// one, and copy nothing).
    #[error("--from: the SQLite database {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    /// Connecting to, or migrating, one of the databases failed.
    #[error("{side}: {source}")]
    Open {
        /// Which database.
        side: Side,
        /// The failure.
        source: StoreError,
    },
    /// The target holds data and `--force` was not given.
    #[error(
        "the target database is not empty ({table} has {rows} {}); nothing was copied: --force deletes its data first, in the same transaction as the copy",
        if *rows == 1 { "row" } else { "rows" }
    )]
    TargetNotEmpty {
        /// The first data table found holding rows.
        table: &'static str,
        /// How many.
        rows: i64,
    },
    /// A table's columns cannot be copied as they are (the two schemas
    /// differ, or a column type this command does not know).
    #[error("table {table}: {detail}; nothing was copied")]
    Schema {
        /// The table.
        table: &'static str,
        /// What does not fit.
        detail: String,
    },
    /// A stored value does not fit the target column (an integer out of a
    /// narrower range, a boolean that is neither 0 nor 1).
    #[error("table {table}, column {column}: {detail}; nothing was copied")]
    Value {
        /// The table.
        table: &'static str,
        /// The column.
        column: String,
        /// What does not fit (never the value itself).
        detail: &'static str,
    },
    /// Reading from the source or writing into the target failed (a
    /// constraint the target enforces, a lost connection).
    #[error("{side}: table {table}: {source}; nothing was copied")]
    Copy {
        /// Which database failed.
        side: Side,
        /// The table being copied.
        table: &'static str,
        /// The failure.
        source: StoreError,
    },
    /// Paging by primary key did not reach every row (a row whose primary
    /// key is NULL, which only SQLite allows): refused rather than lost.
    #[error(
        "table {table}: read {copied} of its {expected} rows (a NULL primary key?); nothing was copied"
    )]
    Incomplete {
        /// The table.
        table: &'static str,
        /// Rows read by primary key.
        copied: u64,
        /// Rows counted.
        expected: u64,
    },
    /// Beginning, locking or emptying the target, or a catalog query,
    /// failed.
    #[error("{side}: {source}; nothing was copied")]
    Database {
        /// Which database.
        side: Side,
        /// The failure.
        source: StoreError,
    },
    /// The final commit failed: PostgreSQL and SQLite then keep nothing of
    /// the copy, unless the connection broke after the commit was received.
    #[error("--to: committing the copy failed: {0}")]
    Commit(StoreError),
}

/// How far a copy has come, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A table is about to be copied; it holds `rows` rows.
    Table {
        /// The table.
        table: &'static str,
        /// Its rows in the source.
        rows: u64,
    },
    /// `rows` more rows of the current table are in the target transaction.
    Rows(u64),
}

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Rows copied per table, in [`TABLES`] order.
    pub tables: Vec<(&'static str, u64)>,
    /// Rows the target held before and `--force` deleted.
    pub replaced: u64,
}

impl Copied {
    /// Rows copied into `table`.
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// Where a URL points, enough to tell two URLs for one database apart from
/// two databases.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Sqlite(PathBuf),
    Postgres {
        host: String,
        port: u16,
        database: String,
    },
}

impl Endpoint {
    fn parse(url: &str, side: Side) -> Result<Endpoint, MigrateDataError> {
        let refuse = |reason: &str| MigrateDataError::Url {
            side,
            reason: reason.to_owned(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // The driver's parse errors name the part that is wrong, never
            // the URL.
            let options = PgConnectOptions::from_str(url).map_err(|e| MigrateDataError::Url {
                side,
                reason: e.to_string(),
            })?;
            let host = options.get_socket().map_or_else(
                || options.get_host().to_owned(),
                |socket| socket.display().to_string(),
            );
            // PostgreSQL's default database is the user's name.
            let database = options
                .get_database()
                .unwrap_or(options.get_username())
                .to_owned();
            Ok(Endpoint::Postgres {
                host,
                port: options.get_port(),
                database,
            })
        } else if url.starts_with("sqlite:") {
            super::sqlite_file(url)
                .map(|path| Endpoint::Sqlite(path.to_path_buf()))
                .ok_or_else(|| refuse("an in-memory SQLite database cannot be copied from or to"))
        } else {
            Err(refuse("must be a sqlite:// or postgres:// URL"))
        }
    }

    fn same_database(&self, other: &Endpoint) -> bool {
        match (self, other) {
            (Endpoint::Sqlite(a), Endpoint::Sqlite(b)) => canonical(a) == canonical(b),
            _ => self == other,
        }
    }
}

/// The absolute path of a database file, resolving links; for a file not
/// yet created, its (resolved) directory and its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(resolved) = std::fs::canonicalize(path) {
        return resolved;
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Copies every data table from `from` into `to`; see the module doc.
///
/// Both databases are first migrated to this version's schema (the target
/// is created up to date; an older source is brought up to date, as
/// `tokengate serve` would on its next start; a source newer than this
/// version is refused by the migrator). The target must hold no rows unless
/// `force`, which deletes them in the same transaction as the copy.
pub async fn migrate_data(
    from: &str,
    to: &str,
    force: bool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Copied, MigrateDataError> {
    let source_at = Endpoint::parse(from, Side::From)?;
    let target_at = Endpoint::parse(to, Side::To)?;
    if source_at.same_database(&target_at) {
        return Err(MigrateDataError::SameDatabase);
    }
    // Connecting creates a missing SQLite file: a typo must not become an
    // empty source (and an empty copy).
    if let Endpoint::Sqlite(path) = &source_at
        && !path.is_file()
    {
        return Err(MigrateDataError::SourceMissing(path.clone()));
    }
    let source = Store::connect(from)
        .await
        .map_err(|source| MigrateDataError::Open {
            side: Side::From,
            source,
        })?;
    let target = match Store::connect(to).await {
        Ok(target) => target,
        Err(e) => {
            source.close().await;
            return Err(MigrateDataError::Open {
                side: Side::To,
                source: e,
            });
        }
    };
    let copied = source.copy_data_into(&target, force, progress).await;
    source.close().await;
    target.close().await;
    copied
}

/// How values of a column are read and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int16,
    Int32,
    Int64,
    Bool,
    Text,
    Real,
    Blob,
}

impl Kind {
    /// A SQLite declared type, by SQLite's own affinity rules (a column
    /// declared `INTEGER`, `BIGINT` or `INT` holds 64-bit integers alike).
    fn of_sqlite(declared: &str) -> Option<Kind> {
        let t = declared.to_ascii_uppercase();
        Some(if t.contains("INT") {
            Kind::Int64
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Kind::Text
        } else if t.contains("BLOB") {
            Kind::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Kind::Real
        } else if t.contains("BOOL") {
            Kind::Bool
        } else {
            return None;
        })
    }

    /// A PostgreSQL `information_schema.columns.data_type`.
    fn of_postgres(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "smallint" => Kind::Int16,
            "integer" => Kind::Int32,
            "bigint" => Kind::Int64,
            "boolean" => Kind::Bool,
            "text" | "character varying" | "character" => Kind::Text,
            "double precision" => Kind::Real,
            "bytea" => Kind::Blob,
            _ => return None,
        })
    }

    /// The PostgreSQL type of a column of this kind (for the arrays of
    /// `UNNEST`).
    fn postgres_type(self) -> &'static str {
        match self {
            Kind::Int16 => "smallint",
            Kind::Int32 => "integer",
            Kind::Int64 => "bigint",
            Kind::Bool => "boolean",
            Kind::Text => "text",
            Kind::Real => "double precision",
            Kind::Blob => "bytea",
        }
    }

    /// Integers and booleans are one family: SQLite has no boolean, and
    /// stores PostgreSQL's as 0 and 1.
    fn converts_to(self, target: Kind) -> bool {
        let integral = |k: Kind| matches!(k, Kind::Int16 | Kind::Int32 | Kind::Int64 | Kind::Bool);
        self == target || (integral(self) && integral(target))
    }
}

/// A value read from the source.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Real(f64),
    Blob(Vec<u8>),
}

/// One column of a batch, as the target column takes its values: a batch
/// is kept by column because PostgreSQL takes each column as one array.
#[derive(Debug, PartialEq)]
enum Array {
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Real(Vec<Option<f64>>),
    Blob(Vec<Option<Vec<u8>>>),
}

impl Array {
    fn new(kind: Kind, capacity: usize) -> Array {
        match kind {
            Kind::Int16 => Array::I16(Vec::with_capacity(capacity)),
            Kind::Int32 => Array::I32(Vec::with_capacity(capacity)),
            Kind::Int64 => Array::I64(Vec::with_capacity(capacity)),
            Kind::Bool => Array::Bool(Vec::with_capacity(capacity)),
            Kind::Text => Array::Text(Vec::with_capacity(capacity)),
            Kind::Real => Array::Real(Vec::with_capacity(capacity)),
            Kind::Blob => Array::Blob(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `value` as this column takes it; why not, if it does not fit
    /// (never the value itself: it may be a hash or an email).
    fn push(&mut self, value: Value) -> Result<(), &'static str> {
        const RANGE: &str = "an integer out of the target column's range";
        const OTHER: &str = "a value of another type than the column's";
        let int = |v: &Value| match v {
            Value::Null => Ok(None),
            Value::Int(i) => Ok(Some(*i)),
            Value::Bool(b) => Ok(Some(i64::from(*b))),
            _ => Err(OTHER),
        };
        match self {
            Array::I16(column) => column.push(
                int(&value)?
                    .map(|i| i16::try_from(i).map_err(|_| RANGE))
                    .transpose()?,
            ),
            Array::I32(column) => column.push(
                int(&value)?
                    .map(|i| i32::try_from(i).map_err(|_| RANGE))
                    .transpose()?,
            ),
            Array::I64(column) => column.push(int(&value)?),
            Array::Bool(column) => column.push(match int(&value)? {
                None => None,
                Some(0) => Some(false),
                Some(1) => Some(true),
                Some(_) => return Err("a boolean stored as neither 0 nor 1"),
            }),
            Array::Text(column) => column.push(match value {
                Value::Null => None,
                Value::Text(s) => Some(s),
                _ => return Err(OTHER),
            }),
            Array::Real(column) => column.push(match value {
                Value::Null => None,
                Value::Real(r) => Some(r),
                _ => return Err(OTHER),
            }),
            Array::Blob(column) => column.push(match value {
                Value::Null => None,
                Value::Blob(b) => Some(b),
                _ => return Err(OTHER),
            }),
        }
        Ok(())
    }
}

/// `"name"`: an identifier quoted for both dialects.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column as its catalog describes it.
struct CatalogColumn {
    name: String,
    declared: String,
    primary_key: bool,
}

/// A column to copy.
struct Column {
    name: String,
    source: Kind,
    target: Kind,
}

/// How one table is copied, worked out before any row moves.
struct Plan {
    table: &'static str,
    /// In the target's order.
    columns: Vec<Column>,
    /// Index in `columns` of the single-column primary key pages are keyed by.
    key: usize,
    /// Rows per page and per `INSERT`.
    batch: usize,
    select_first: String,
    select_after: String,
    /// PostgreSQL: `INSERT … SELECT * FROM UNNEST($1, …)`, one array per column.
    insert_unnest: String,
    /// SQLite: `INSERT INTO … (…) ` before the `VALUES` rows.
    insert_values: String,
}

/// One open transaction, on either backend.
enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$tx` bound to the concrete transaction, once per
/// backend (as `with_pool!` does for pools).
macro_rules! with_tx {
    ($self:expr, $tx:ident => $body:expr) => {
        match $self {
            Tx::Sqlite($tx) => $body,
            Tx::Postgres($tx) => $body,
        }
    };
}

/// Reads column `$i` of `$row` as `$kind`.
macro_rules! read_value {
    ($row:expr, $i:expr, $kind:expr) => {
        match $kind {
            Kind::Int16 => $row
                .try_get::<Option<i16>, _>($i)?
                .map(|v| Value::Int(i64::from(v))),
            Kind::Int32 => $row
                .try_get::<Option<i32>, _>($i)?
                .map(|v| Value::Int(i64::from(v))),
            Kind::Int64 => $row.try_get::<Option<i64>, _>($i)?.map(Value::Int),
            Kind::Bool => $row.try_get::<Option<bool>, _>($i)?.map(Value::Bool),
            Kind::Text => $row.try_get::<Option<String>, _>($i)?.map(Value::Text),
            Kind::Real => $row.try_get::<Option<f64>, _>($i)?.map(Value::Real),
            Kind::Blob => $row.try_get::<Option<Vec<u8>>, _>($i)?.map(Value::Blob),
        }
        .unwrap_or(Value::Null)
    };
}

impl Tx {
    /// A read transaction: every page comes from one snapshot, whatever a
    /// still-running server writes meanwhile.
    async fn begin_read(store: &Store) -> Result<Tx, sqlx::Error> {
        Ok(match &store.pool {
            // In WAL mode a read transaction sees one snapshot, from its
            // first read to its end.
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    /// The copy's transaction, holding off every other writer of the data
    /// tables until it ends: nobody writes between the emptiness check and
    /// the commit.
    async fn begin_write(store: &Store) -> Result<Tx, sqlx::Error> {
        Ok(match &store.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let tables: Vec<String> = TABLES.iter().map(|t| quoted(t)).collect();
                // Readers (a plain SELECT) may go on; writers wait.
                sqlx::query(AssertSqlSafe(format!(
                    "LOCK TABLE {} IN EXCLUSIVE MODE",
                    tables.join(", ")
                )))
                .execute(&mut *tx)
                .await?;
                Tx::Postgres(tx)
            }
        })
    }

    /// The columns of `table`, in their order; empty if there is no such
    /// table.
    async fn columns(&mut self, table: &str) -> Result<Vec<CatalogColumn>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlx::query(
                "SELECT name, type, pk FROM pragma_table_info($1) ORDER BY cid",
            )
            .bind(table)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| {
                Ok(CatalogColumn {
                    name: r.try_get("name")?,
                    declared: r.try_get("type")?,
                    primary_key: r.try_get::<i64, _>("pk")? > 0,
                })
            })
            .collect(),
            Tx::Postgres(tx) => sqlx::query(
                "SELECT CAST(c.column_name AS TEXT) AS name, CAST(c.data_type AS TEXT) AS declared, \
                 EXISTS (SELECT 1 FROM information_schema.table_constraints t \
                   JOIN information_schema.key_column_usage k ON k.constraint_schema = t.constraint_schema \
                   AND k.constraint_name = t.constraint_name AND k.table_name = t.table_name \
                   WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = c.table_schema \
                   AND t.table_name = c.table_name AND k.column_name = c.column_name) AS primary_key \
                 FROM information_schema.columns c \
                 WHERE c.table_schema = current_schema() AND c.table_name = $1 ORDER BY c.ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| {
                Ok(CatalogColumn {
                    name: r.try_get("name")?,
                    declared: r.try_get("declared")?,
                    primary_key: r.try_get("primary_key")?,
                })
            })
            .collect(),
        }
    }

    fn kind(&self, declared: &str) -> Option<Kind> {
        match self {
            Tx::Sqlite(_) => Kind::of_sqlite(declared),
            Tx::Postgres(_) => Kind::of_postgres(declared),
        }
    }

    async fn count(&mut self, table: &str) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT COUNT(*) FROM {}", quoted(table));
        Ok(
            with_tx!(self, tx => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
            .fetch_one(&mut **tx)
            .await?),
        )
    }

    async fn delete_all(&mut self, table: &str) -> Result<(), sqlx::Error> {
        let sql = format!("DELETE FROM {}", quoted(table));
        with_tx!(self, tx => {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut **tx).await?;
        });
        Ok(())
    }

    /// The next page of `plan`'s rows, after the primary key `after`.
    async fn page(
        &mut self,
        plan: &Plan,
        after: Option<&Value>,
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        let rows = with_tx!(self, tx => {
            let rows = match after {
                None => sqlx::query(AssertSqlSafe(plan.select_first.clone()))
                    .fetch_all(&mut **tx)
                    .await?,
                Some(key) => {
                    let query = sqlx::query(AssertSqlSafe(plan.select_after.clone()));
                    let query = match key {
                        Value::Int(i) => query.bind(*i),
                        Value::Text(s) => query.bind(s.clone()),
                        Value::Bool(b) => query.bind(*b),
                        Value::Real(r) => query.bind(*r),
                        Value::Blob(b) => query.bind(b.clone()),
                        Value::Null => query.bind(None::<i64>),
                    };
                    query.fetch_all(&mut **tx).await?
                }
            };
            rows.iter()
                .map(|row| {
                    plan.columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| Ok(read_value!(row, i, c.source)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// One `INSERT` of a batch of `rows` rows: on PostgreSQL each column
    /// as one array (`UNNEST`), several times faster than thousands of
    /// parameters; on SQLite, a multi-row `VALUES`.
    async fn insert(
        &mut self,
        plan: &Plan,
        mut columns: Vec<Array>,
        rows: usize,
    ) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => {
                let mut insert = sqlx::query(AssertSqlSafe(plan.insert_unnest.clone()));
                for column in columns {
                    insert = match column {
                        Array::I16(v) => insert.bind(v),
                        Array::I32(v) => insert.bind(v),
                        Array::I64(v) => insert.bind(v),
                        Array::Bool(v) => insert.bind(v),
                        Array::Text(v) => insert.bind(v),
                        Array::Real(v) => insert.bind(v),
                        Array::Blob(v) => insert.bind(v),
                    };
                }
                insert.execute(&mut **tx).await?;
            }
            Tx::Sqlite(tx) => {
                let mut insert = QueryBuilder::new(plan.insert_values.as_str());
                // Every column holds exactly `rows` values (a row is pushed
                // whole or the copy fails), so `get` always finds one.
                insert.push_values(0..rows, |mut values, row| {
                    for column in &mut columns {
                        match column {
                            Array::I16(v) => values.push_bind(v.get(row).copied().flatten()),
                            Array::I32(v) => values.push_bind(v.get(row).copied().flatten()),
                            Array::I64(v) => values.push_bind(v.get(row).copied().flatten()),
                            Array::Bool(v) => values.push_bind(v.get(row).copied().flatten()),
                            Array::Text(v) => {
                                values.push_bind(v.get_mut(row).and_then(Option::take))
                            }
                            Array::Real(v) => values.push_bind(v.get(row).copied().flatten()),
                            Array::Blob(v) => {
                                values.push_bind(v.get_mut(row).and_then(Option::take))
                            }
                        };
                    }
                });
                insert.build().execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Moves PostgreSQL's sequences (`audit_events.id`) past the copied ids,
    /// or the next insert would draw an id the copy already used. SQLite's
    /// AUTOINCREMENT follows the largest id inserted on its own.
    async fn advance_sequences(&mut self, plan: &Plan) -> Result<(), sqlx::Error> {
        let Tx::Postgres(tx) = self else {
            return Ok(());
        };
        for column in &plan.columns {
            let sequence: Option<String> =
                sqlx::query_scalar("SELECT pg_get_serial_sequence($1, $2)")
                    .bind(quoted(plan.table))
                    .bind(&column.name)
                    .fetch_one(&mut **tx)
                    .await?;
            if let Some(sequence) = sequence {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT setval(CAST($1 AS regclass), COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)",
                    column = quoted(&column.name),
                    table = quoted(plan.table),
                )))
                .bind(sequence)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        with_tx!(self, tx => tx.commit().await)
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        with_tx!(self, tx => tx.rollback().await)
    }
}

/// How `table` is copied from `source` into `target`: the same columns on
/// both sides (both are at this version's schema; anything else is
/// refused), each of a kind this copy knows and can convert, and a
/// single-column primary key to page by.
async fn plan(
    table: &'static str,
    source: &mut Tx,
    target: &mut Tx,
) -> Result<Plan, MigrateDataError> {
    let schema = |detail: String| MigrateDataError::Schema { table, detail };
    let catalog = |side: Side| {
        move |e: sqlx::Error| MigrateDataError::Database {
            side,
            source: e.into(),
        }
    };
    let source_columns = source.columns(table).await.map_err(catalog(Side::From))?;
    let target_columns = target.columns(table).await.map_err(catalog(Side::To))?;
    for (side, found) in [(Side::From, &source_columns), (Side::To, &target_columns)] {
        if found.is_empty() {
            return Err(schema(format!("not found in the {side} database")));
        }
    }
    let mut columns = Vec::new();
    let mut key = None;
    for t in &target_columns {
        let Some(s) = source_columns.iter().find(|s| s.name == t.name) else {
            return Err(schema(format!(
                "column {} is missing from the source",
                t.name
            )));
        };
        let unknown = |side: Side, declared: &str| {
            schema(format!(
                "column {} has a type this command cannot copy ({side}: {declared})",
                t.name
            ))
        };
        let source_kind = source
            .kind(&s.declared)
            .ok_or_else(|| unknown(Side::From, &s.declared))?;
        let target_kind = target
            .kind(&t.declared)
            .ok_or_else(|| unknown(Side::To, &t.declared))?;
        if !source_kind.converts_to(target_kind) {
            return Err(schema(format!(
                "column {} is {} in the source and {} in the target",
                t.name, s.declared, t.declared
            )));
        }
        if t.primary_key {
            key = match key {
                None => Some(columns.len()),
                Some(_) => return Err(schema("a primary key of several columns".to_owned())),
            };
        }
        columns.push(Column {
            name: t.name.clone(),
            source: source_kind,
            target: target_kind,
        });
    }
    if let Some(extra) = source_columns
        .iter()
        .find(|s| !target_columns.iter().any(|t| t.name == s.name))
    {
        return Err(schema(format!(
            "column {} is missing from the target",
            extra.name
        )));
    }
    let Some(key) = key else {
        return Err(schema("no primary key to copy it by".to_owned()));
    };
    let names: Vec<String> = columns.iter().map(|c| quoted(&c.name)).collect();
    let names = names.join(", ");
    let batch = BATCH_ROWS.min(MAX_PARAMETERS / columns.len()).max(1);
    let key_name = quoted(&columns[key].name);
    let from = quoted(table);
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("CAST(${} AS {}[])", i + 1, c.target.postgres_type()))
        .collect();
    Ok(Plan {
        table,
        select_first: format!("SELECT {names} FROM {from} ORDER BY {key_name} LIMIT {batch}"),
        select_after: format!(
            "SELECT {names} FROM {from} WHERE {key_name} > $1 ORDER BY {key_name} LIMIT {batch}"
        ),
        insert_unnest: format!(
            "INSERT INTO {from} ({names}) SELECT * FROM UNNEST({})",
            arrays.join(", ")
        ),
        insert_values: format!("INSERT INTO {from} ({names}) "),
        columns,
        key,
        batch,
    })
}

impl Store {
    /// Copies every data table of this store into `target` in one target
    /// transaction; see [`migrate_data`], which opens both stores.
    pub async fn copy_data_into(
        &self,
        target: &Store,
        force: bool,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Copied, MigrateDataError> {
        let database = |side: Side| {
            move |e: sqlx::Error| MigrateDataError::Database {
                side,
                source: e.into(),
            }
        };
        let mut into = Tx::begin_write(target).await.map_err(database(Side::To))?;
        let mut from = Tx::begin_read(self).await.map_err(database(Side::From))?;
        let result = copy(&mut from, &mut into, force, progress).await;
        // The source was only read; ending its snapshot cannot lose anything.
        let _ = from.rollback().await;
        let copied = result?;
        into.commit()
            .await
            .map_err(|e| MigrateDataError::Commit(e.into()))?;
        Ok(copied)
    }
}

/// The copy inside the two transactions. Returning early drops nothing
/// itself: the caller's target transaction rolls back when dropped.
async fn copy(
    from: &mut Tx,
    into: &mut Tx,
    force: bool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Copied, MigrateDataError> {
    // Every table is planned before any row moves: a schema that does not
    // fit is refused with the target untouched.
    let mut plans = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        plans.push(plan(table, from, into).await?);
    }
    let mut replaced = 0u64;
    for table in TABLES {
        let rows = into
            .count(table)
            .await
            .map_err(|e| MigrateDataError::Database {
                side: Side::To,
                source: e.into(),
            })?;
        if rows > 0 && !force {
            return Err(MigrateDataError::TargetNotEmpty { table, rows });
        }
        replaced += u64::try_from(rows).unwrap_or(0);
    }
    if replaced > 0 {
        for table in TABLES.iter().rev() {
            into.delete_all(table)
                .await
                .map_err(|e| MigrateDataError::Database {
                    side: Side::To,
                    source: e.into(),
                })?;
        }
    }
    let mut tables = Vec::with_capacity(plans.len());
    for plan in &plans {
        let failed = |side: Side| {
            move |e: sqlx::Error| MigrateDataError::Copy {
                side,
                table: plan.table,
                source: e.into(),
            }
        };
        let expected = from.count(plan.table).await.map_err(failed(Side::From))?;
        let expected = u64::try_from(expected).unwrap_or(0);
        progress(Progress::Table {
            table: plan.table,
            rows: expected,
        });
        let mut copied = 0u64;
        let mut after: Option<Value> = None;
        loop {
            let page = from
                .page(plan, after.as_ref())
                .await
                .map_err(failed(Side::From))?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.get(plan.key).cloned();
            let len = page.len();
            let mut batch: Vec<Array> = plan
                .columns
                .iter()
                .map(|c| Array::new(c.target, len))
                .collect();
            for row in page {
                for ((value, column), array) in row.into_iter().zip(&plan.columns).zip(&mut batch) {
                    array
                        .push(value)
                        .map_err(|detail| MigrateDataError::Value {
                            table: plan.table,
                            column: column.name.clone(),
                            detail,
                        })?;
                }
            }
            into.insert(plan, batch, len)
                .await
                .map_err(failed(Side::To))?;
            copied += len as u64;
            progress(Progress::Rows(len as u64));
            if len < plan.batch {
                break;
            }
        }
        if copied != expected {
            return Err(MigrateDataError::Incomplete {
                table: plan.table,
                copied,
                expected,
            });
        }
        into.advance_sequences(plan)
            .await
            .map_err(failed(Side::To))?;
        tables.push((plan.table, copied));
    }
    Ok(Copied { tables, replaced })
}

#[cfg(test)]
mod tests {
    use super::{Array, Endpoint, Kind, Side, Value};

    #[test]
    fn integers_narrow_only_within_range_and_booleans_are_0_or_1() {
        let pushed = |kind: Kind, values: Vec<Value>| {
            let mut array = Array::new(kind, values.len());
            values
                .into_iter()
                .try_for_each(|v| array.push(v))
                .map(|()| array)
        };
        assert_eq!(
            pushed(Kind::Int32, vec![Value::Int(7), Value::Null]),
            Ok(Array::I32(vec![Some(7), None]))
        );
        assert!(pushed(Kind::Int32, vec![Value::Int(i64::from(i32::MAX) + 1)]).is_err());
        assert_eq!(
            pushed(Kind::Bool, vec![Value::Int(1), Value::Int(0)]),
            Ok(Array::Bool(vec![Some(true), Some(false)]))
        );
        assert!(pushed(Kind::Bool, vec![Value::Int(2)]).is_err());
        assert_eq!(
            pushed(Kind::Int64, vec![Value::Bool(true)]),
            Ok(Array::I64(vec![Some(1)]))
        );
        assert!(pushed(Kind::Int64, vec![Value::Text("1".into())]).is_err());
        assert!(pushed(Kind::Text, vec![Value::Int(1)]).is_err());
    }

    #[test]
    fn declared_types_follow_each_dialect() {
        assert_eq!(Kind::of_sqlite("INTEGER"), Some(Kind::Int64));
        assert_eq!(Kind::of_sqlite("BIGINT"), Some(Kind::Int64));
        assert_eq!(Kind::of_sqlite("TEXT"), Some(Kind::Text));
        assert_eq!(Kind::of_sqlite("NUMERIC"), None);
        assert_eq!(Kind::of_postgres("integer"), Some(Kind::Int32));
        assert_eq!(Kind::of_postgres("bigint"), Some(Kind::Int64));
        assert_eq!(Kind::of_postgres("boolean"), Some(Kind::Bool));
        assert_eq!(Kind::of_postgres("jsonb"), None);
        assert!(Kind::Int64.converts_to(Kind::Bool));
        assert!(!Kind::Text.converts_to(Kind::Int64));
    }

    #[test]
    fn urls_name_their_database() {
        let pg = |url| Endpoint::parse(url, Side::To).ok();
        assert_eq!(
            pg("postgres://app:secret@db:5433/tg"),
            Some(Endpoint::Postgres {
                host: "db".into(),
                port: 5433,
                database: "tg".into()
            })
        );
        // One database, written two ways.
        let a = pg("postgres://app:one@db/tg").unwrap();
        let b = pg("postgresql://other@db:5432/tg?sslmode=prefer").unwrap();
        assert!(a.same_database(&b));
        assert!(!a.same_database(&pg("postgres://app@db/tg2").unwrap()));
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("x.db");
        let a = Endpoint::parse(&format!("sqlite://{}", file.display()), Side::From).unwrap();
        let b = Endpoint::parse(
            &format!("sqlite:{}/./x.db?mode=rwc", dir.path().display()),
            Side::To,
        )
        .unwrap();
        assert!(a.same_database(&b));
        for bad in ["mysql://db/tg", "sqlite::memory:", "tokengate.db"] {
            let e = Endpoint::parse(bad, Side::From).unwrap_err().to_string();
            assert!(e.starts_with("--from: "), "{e}");
        }
    }
}
