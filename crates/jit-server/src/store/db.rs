//! The database seam: one small interface ([`Database`], [`Conn`]) with two
//! implementations, SQLite ([`Sqlite`]) and PostgreSQL
//! ([`super::postgres::Postgres`]). The store's SQL is written once, with
//! `?` placeholders and types both engines share (`TEXT`, 64-bit integers);
//! each implementation binds values and maps errors.
//!
//! Timestamps are stored as fixed-width RFC 3339 UTC text with microseconds
//! (`2026-01-02T03:04:05.123456Z`), so text order is time order in both
//! engines (PostgreSQL columns use the byte-order collation `"C"`).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::ValueRef;

use super::StoreError;

/// A value bound to a placeholder. Typed even when null, because PostgreSQL
/// checks parameter types.
#[derive(Debug, Clone)]
pub enum P {
    /// Text or NULL text.
    T(Option<String>),
    /// 64-bit integer or NULL.
    I(Option<i64>),
}

impl From<&str> for P {
    fn from(s: &str) -> P {
        P::T(Some(s.to_string()))
    }
}
impl From<String> for P {
    fn from(s: String) -> P {
        P::T(Some(s))
    }
}
impl From<&String> for P {
    fn from(s: &String) -> P {
        P::T(Some(s.clone()))
    }
}
impl From<Option<String>> for P {
    fn from(s: Option<String>) -> P {
        P::T(s)
    }
}
impl From<i64> for P {
    fn from(i: i64) -> P {
        P::I(Some(i))
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Int(i64),
    Text(String),
}

impl V {
    /// The text, or an error naming what was found.
    pub fn text(&self) -> Result<String, StoreError> {
        match self {
            V::Text(s) => Ok(s.clone()),
            other => Err(StoreError::Corrupt(format!("expected text, got {other:?}"))),
        }
    }
    /// The text, `None` for NULL.
    pub fn opt_text(&self) -> Result<Option<String>, StoreError> {
        match self {
            V::Null => Ok(None),
            V::Text(s) => Ok(Some(s.clone())),
            other => Err(StoreError::Corrupt(format!("expected text, got {other:?}"))),
        }
    }
    /// The integer, or an error naming what was found.
    pub fn int(&self) -> Result<i64, StoreError> {
        match self {
            V::Int(i) => Ok(*i),
            other => Err(StoreError::Corrupt(format!(
                "expected integer, got {other:?}"
            ))),
        }
    }
}

/// One row: values in the order of the `SELECT` list.
pub type Row = Vec<V>;

/// The SQL engine behind a [`Conn`], for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One connection (or a transaction on it).
pub trait Conn {
    /// Runs one statement; returns the number of rows changed.
    fn exec(&mut self, sql: &str, params: &[P]) -> Result<u64, StoreError>;
    /// Runs one query and returns all its rows.
    fn query(&mut self, sql: &str, params: &[P]) -> Result<Vec<Row>, StoreError>;
    /// Runs several statements without parameters (migrations, `BEGIN`).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
}

/// A database: connections for reads and for writes.
pub trait Database: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// A connection for reads. Reads never wait for a write to finish
    /// (SQLite WAL readers; PostgreSQL MVCC).
    fn reader(&self) -> Result<Box<dyn Conn + '_>, StoreError>;
    /// A connection for one write transaction. SQLite has one (writes are
    /// serialised in-process); PostgreSQL hands out pooled connections and
    /// serialises with row locks and an advisory lock on the audit chain.
    fn writer(&self) -> Result<Box<dyn Conn + '_>, StoreError>;
    /// Follows audit appends of every process on the database (this one
    /// included): calls `f(Some(announced))` for each announcement and
    /// `f(None)` about once a second; stops when `f` returns false.
    /// `alive_as`: this process's claims owner name, whose liveness it
    /// holds while it follows (PostgreSQL: see `postgres`'s module doc;
    /// `f(Some(seq 0))` also when another process died). Engines with one
    /// process (SQLite) return false and never call `f`.
    fn follow(&self, alive_as: Option<&str>, f: Follower) -> bool {
        let _ = (alive_as, f);
        false
    }
    /// What this process adds to its announcements so that its own
    /// listener can tell them from other processes' ([`Announced::own`]);
    /// `None` where nothing is announced.
    fn origin(&self) -> Option<&str> {
        None
    }
}

/// One announcement seen by [`Database::follow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The newest audit sequence number written; `0`: "look again" (after
    /// a reconnect, or when waiting work became due everywhere).
    pub seq: i64,
    /// Announced by this process (the same store), not by another replica.
    pub own: bool,
}

/// Callback of [`Database::follow`].
pub type Follower = Box<dyn Fn(Option<Announced>) -> bool + Send + Sync>;

/// SQLite in one file: one writer connection behind a mutex, a pool of
/// reader connections (WAL lets them read while a write is in progress).
pub struct Sqlite {
    writer: Mutex<rusqlite::Connection>,
    readers: r2d2::Pool<SqliteManager>,
}

/// Opens reader connections for the pool.
pub struct SqliteManager {
    path: std::path::PathBuf,
}

impl r2d2::ManageConnection for SqliteManager {
    type Connection = rusqlite::Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        let c = rusqlite::Connection::open(&self.path)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        c.pragma_update(None, "query_only", true)?;
        Ok(c)
    }
    fn is_valid(&self, conn: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
        conn.execute_batch("SELECT 1")
    }
    fn has_broken(&self, _: &mut rusqlite::Connection) -> bool {
        false
    }
}

impl Sqlite {
    /// Opens an existing file read-only (`SQLITE_OPEN_READ_ONLY`): no
    /// file, folder, journal mode or schema change, for tools that only
    /// read (`jitd check-policy`). Errors: the file cannot be opened.
    pub fn open_read_only(path: &Path) -> Result<Sqlite, StoreError> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let readers = r2d2::Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            .connection_timeout(std::time::Duration::from_secs(30))
            .build(SqliteManager {
                path: path.to_path_buf(),
            })
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Sqlite {
            writer: Mutex::new(conn),
            readers,
        })
    }

    /// Opens (creating if needed) the file, in WAL mode with
    /// `synchronous=FULL`; `readers` reader connections.
    pub fn open(path: &Path, readers: u32) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Corrupt(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let readers = r2d2::Pool::builder()
            .max_size(readers)
            .min_idle(Some(1))
            .connection_timeout(std::time::Duration::from_secs(30))
            .build(SqliteManager {
                path: path.to_path_buf(),
            })
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Sqlite {
            writer: Mutex::new(conn),
            readers,
        })
    }
}

struct SqliteConn<C>(C);

fn sqlite_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Unique(e.to_string())
        }
        _ => StoreError::Db(e),
    }
}

fn sqlite_params(params: &[P]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|p| match p {
            P::T(Some(s)) => rusqlite::types::Value::Text(s.clone()),
            P::I(Some(i)) => rusqlite::types::Value::Integer(*i),
            P::T(None) | P::I(None) => rusqlite::types::Value::Null,
        })
        .collect()
}

impl<C: std::ops::DerefMut<Target = rusqlite::Connection>> Conn for SqliteConn<C> {
    fn exec(&mut self, sql: &str, params: &[P]) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(sqlite_params(params)))
            .map_err(sqlite_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[P]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let cols = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(sqlite_params(params)))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(cols);
            for i in 0..cols {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => V::Null,
                    ValueRef::Integer(i) => V::Int(i),
                    ValueRef::Real(f) => V::Int(f as i64),
                    ValueRef::Text(t) => V::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => V::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            out.push(row);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.0.execute_batch(sql).map_err(sqlite_err)
    }
}

struct Guard<'a>(std::sync::MutexGuard<'a, rusqlite::Connection>);
impl std::ops::Deref for Guard<'_> {
    type Target = rusqlite::Connection;
    fn deref(&self) -> &rusqlite::Connection {
        &self.0
    }
}
impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut rusqlite::Connection {
        &mut self.0
    }
}

impl Database for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn reader(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        let c = self
            .readers
            .get()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Box::new(SqliteConn(c)))
    }

    fn writer(&self) -> Result<Box<dyn Conn + '_>, StoreError> {
        // A panic while holding the lock cannot leave a half-written
        // transaction (it is rolled back), so the poison can be ignored.
        let g = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Box::new(SqliteConn(Guard(g))))
    }
}

/// Rewrites `?` placeholders as `$1, $2, …` (PostgreSQL), leaving quoted
/// literals alone.
pub fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut in_quote = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                in_quote = !in_quote;
                out.push(c);
            }
            '?' if !in_quote => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            super::numbered_placeholders("a = ? AND b = '?' AND c IN (?, ?)"),
            "a = $1 AND b = '?' AND c IN ($2, $3)"
        );
    }
}
