//! The checkpoint's tables in PostgreSQL: where they live, how vmr connects, their schema.
//!
//! A location is a `postgres://` URL whose `schema` query parameter (default `vmr`) names the
//! PostgreSQL schema that holds one checkpoint; two checkpoints (two vendor accounts, say) share
//! a database in two schemas. The password never comes from the command line, where `ps` shows
//! it: a URL given there with a password is refused; it comes from `PGPASSWORD`, or from the
//! password file (`PGPASSFILE`, default `~/.pgpass`) as libpq reads it. No error, log line or
//! summary shows it.

use super::tls::{SslMode, Tls};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::{SCHEMA_VERSION, pg_steps};

/// The tables with an identity column, whose sequence must follow ids copied in.
pub(crate) const IDENTITY_TABLES: &[&str] = &["vins", "calls", "runs", "resolutions"];

/// Why a PostgreSQL checkpoint could not be reached, opened or used. No variant holds the
/// password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The location is not a usable `postgres://` URL (or its schema name is not allowed).
    #[error("{0}")]
    Url(String),
    /// A URL given on the command line holds a password.
    #[error(
        "{shown}: a password in a URL given on the command line is refused (`ps` shows it to every user); put it in PGPASSWORD or a password file (PGPASSFILE, default ~/.pgpass, mode 0600)"
    )]
    PasswordInArgs {
        /// The location as shown to the user, without the password.
        shown: String,
    },
    /// The server could not be reached, or refused a statement.
    #[error("{shown}: {detail}")]
    Db {
        /// The location as shown to the user, without the password.
        shown: String,
        /// The server's code and message.
        detail: String,
    },
    /// The server could not be reached, or the connection to it was lost.
    #[error("{shown}: the database is out of reach: {detail}")]
    Unreachable {
        /// The location as shown to the user, without the password.
        shown: String,
        /// What the driver or the server said.
        detail: String,
    },
    /// The schema's vmr tables were written by a newer vmr; nothing was changed.
    #[error(
        "{shown}: its vmr tables have schema version {found}, newer than this vmr understands ({SCHEMA_VERSION}); upgrade vmr (nothing was changed)"
    )]
    TooNew {
        /// The location as shown to the user, without the password.
        shown: String,
        /// The schema version the tables hold.
        found: i64,
    },
    /// The schema holds no vmr tables.
    #[error("{shown}: no checkpoint there (schema {schema} has no vmr tables)")]
    Missing {
        /// The location as shown to the user, without the password.
        shown: String,
        /// The PostgreSQL schema named by the location.
        schema: String,
    },
}

impl PgError {
    /// Whether the database could not be reached, or went away (try again later: exit 75).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PgError::Unreachable { .. })
    }

    /// Errors of the user's making (exit 2), as opposed to a failing server.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            PgError::Url(_)
                | PgError::PasswordInArgs { .. }
                | PgError::TooNew { .. }
                | PgError::Missing { .. }
        )
    }
}

/// Where a checkpoint lives in PostgreSQL: the connection settings and the schema.
#[derive(Clone)]
pub struct PgLocation {
    config: postgres::Config,
    schema: String,
    shown: String,
    /// The TLS connector `sslmode` and `sslrootcert` call for, built once (root certificates
    /// read once); `None` for `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// Where the writer keeps billed answers while the database is out of reach
    /// (`--spill-dir`).
    spill_root: std::path::PathBuf,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Whether `s` names a PostgreSQL location rather than a directory.
pub fn is_pg_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl PgLocation {
    /// Parses a `postgres://user@host:port/db?schema=NAME&…` URL. `from_args`: it was given on
    /// the command line, so it may not hold a password. Missing parts come from libpq's
    /// variables (`PGUSER`, `PGHOST`, `PGPORT`, `PGDATABASE`), then its defaults.
    pub fn parse(s: &str, from_args: bool) -> Result<PgLocation, PgError> {
        let mut url = url::Url::parse(s).map_err(|e| {
            PgError::Url(format!(
                "{}: not a PostgreSQL URL: {e}",
                redact(s).unwrap_or_else(|| "the --state URL".into())
            ))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(PgError::Url(format!(
                "{}: not a postgres:// URL",
                redact(s).unwrap_or_default()
            )));
        }
        let has_password = url.password().is_some();
        let _ = url.set_password(None);
        let (mut schema, mut sslmode, mut sslrootcert) = (None, None, None);
        // `schema` is vmr's; `sslmode` and `sslrootcert` are read here (rust-postgres knows
        // only some of libpq's values), the rest is rust-postgres'.
        let rest: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                let slot = match k.as_ref() {
                    "schema" => &mut schema,
                    "sslmode" => &mut sslmode,
                    "sslrootcert" => &mut sslrootcert,
                    _ => return Some((k.into_owned(), v.into_owned())),
                };
                *slot = Some(v.into_owned());
                None
            })
            .collect();
        let schema = schema.unwrap_or_else(|| "vmr".to_owned());
        if !valid_schema(&schema) {
            return Err(PgError::Url(format!(
                "{url}: schema {schema:?} is not a plain lower-case name (letters, digits, _; at most 63)"
            )));
        }
        let mut bare = url.clone();
        bare.set_query(None);
        let shown = format!("{bare} (schema {schema})");
        if has_password && from_args {
            return Err(PgError::PasswordInArgs { shown });
        }
        let tls = Tls::from_settings(sslmode.as_deref(), sslrootcert.as_deref())
            .map_err(|e| PgError::Url(format!("{shown}: {e}")))?;
        if rest.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(rest);
        }
        // The URL as given (with its password, if the environment or a config file gave one).
        let mut with_password = url::Url::parse(s).expect("parsed above");
        with_password.set_query(url.query());
        let mut config = postgres::Config::from_str(with_password.as_str())
            .map_err(|e| PgError::Url(format!("{shown}: {e}")))?;
        apply_defaults(&mut config);
        if config.get_password().is_none()
            && let Some(pw) = password_for(&config)
        {
            config.password(pw);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A connection that goes silent (a partition, a failover that drops packets) is found
        // within about a minute, not after the system's two hours: keepalives after 30 s idle,
        // and unacknowledged data given up after 60 s. Values the URL sets win.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
            config.keepalives_idle(Duration::from_secs(30));
            config.keepalives_interval(Duration::from_secs(10));
            config.keepalives_retries(3);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(60));
        }
        config.application_name("vmr");
        config.ssl_mode(tls.protocol());
        let tls = match tls.mode {
            SslMode::Disable => None,
            _ => Some(
                tls.connector()
                    .map_err(|e| PgError::Url(format!("{shown}: {e}")))?,
            ),
        };
        Ok(PgLocation {
            config,
            schema,
            shown,
            tls,
            spill_root: "vmr-spill".into(),
        })
    }

    /// The location with `root` as its spill root (`--spill-dir`).
    pub fn with_spill_root(mut self, root: std::path::PathBuf) -> PgLocation {
        self.spill_root = root;
        self
    }

    /// This checkpoint's spill: a directory of its own under the spill root.
    pub(crate) fn spill(&self) -> super::spill::Spill {
        super::spill::Spill::new(&self.spill_root, &self.shown)
    }

    /// The PostgreSQL schema that holds the checkpoint (`vmr` unless the URL names one).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The schema name quoted for SQL.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.schema)
    }

    /// Opens a new connection to the location's database.
    pub fn connect(&self) -> Result<postgres::Client, PgError> {
        let connected = match &self.tls {
            None => super::db::blocking(|| self.config.connect(postgres::NoTls)),
            Some(tls) => super::db::blocking(|| self.config.connect(tls.clone())),
        };
        connected.map_err(|e| self.db_error(e))
    }

    /// A database error as the user sees it: the location (never the password) and the
    /// server's message.
    pub(crate) fn db_error(&self, e: postgres::Error) -> PgError {
        let (shown, detail) = (self.shown.clone(), message(&e));
        if is_lost(&e) {
            PgError::Unreachable { shown, detail }
        } else {
            PgError::Db { shown, detail }
        }
    }

    /// The schema version of the vmr tables in the location's schema: `None` when it has none.
    pub(crate) fn version(
        &self,
        c: &mut impl postgres::GenericClient,
    ) -> Result<Option<i64>, PgError> {
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'vmr_schema')",
                &[&self.schema],
            )
            .map_err(|e| self.db_error(e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let v: Option<i64> = c
            .query_one(
                &format!("SELECT max(version) FROM {}.vmr_schema", self.quoted()),
                &[],
            )
            .map_err(|e| self.db_error(e))?
            .get(0);
        Ok(Some(v.unwrap_or(0)))
    }

    /// Creates the schema and migrates its tables to [`SCHEMA_VERSION`] inside the caller's
    /// transaction, refusing tables newer than this build.
    pub(crate) fn migrate(&self, tx: &mut postgres::Transaction<'_>) -> Result<(), PgError> {
        let s = self.quoted();
        let err = |e| self.db_error(e);
        // One migrator at a time per schema (several workers start at once): a second vmr
        // waits, then sees the schema and its version.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("vmr-migrate {}", self.schema)],
        )
        .map_err(err)?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
            .map_err(err)?;
        let found = match self.version(tx)? {
            Some(v) => v,
            None => {
                tx.batch_execute(&format!(
                    "CREATE TABLE {s}.vmr_schema (version BIGINT NOT NULL, migrated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ))
                .map_err(err)?;
                0
            }
        };
        if found > SCHEMA_VERSION {
            return Err(PgError::TooNew {
                shown: self.shown.clone(),
                found,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        for sql in pg_steps(found, &s) {
            tx.batch_execute(&sql).map_err(err)?;
        }
        tx.execute(
            &format!("INSERT INTO {s}.vmr_schema (version) VALUES ($1)"),
            &[&SCHEMA_VERSION],
        )
        .map_err(err)?;
        Ok(())
    }

    /// Checks that the schema holds vmr tables this build reads, and migrates tables an older
    /// vmr wrote (in a transaction of their own), as a writer would: readers read this build's
    /// schema only.
    pub(crate) fn bring_current(&self, client: &mut postgres::Client) -> Result<(), PgError> {
        if self.check_readable(client)? < SCHEMA_VERSION {
            let mut tx = client.transaction().map_err(|e| self.db_error(e))?;
            self.migrate(&mut tx)?;
            tx.commit().map_err(|e| self.db_error(e))?;
        }
        Ok(())
    }

    /// Checks that the schema holds vmr tables this build reads; their version.
    pub(crate) fn check_readable(
        &self,
        c: &mut impl postgres::GenericClient,
    ) -> Result<i64, PgError> {
        match self.version(c)? {
            None => Err(PgError::Missing {
                shown: self.shown.clone(),
                schema: self.schema.clone(),
            }),
            Some(v) if v > SCHEMA_VERSION => Err(PgError::TooNew {
                shown: self.shown.clone(),
                found: v,
            }),
            Some(v) => Ok(v),
        }
    }
}

/// A connection to the checkpoint in `loc` for writing: the schema created or migrated, and
/// its tables first on the search path. Several vmr write to one schema at once: each VIN is
/// claimed by one of them at a time (`workers`).
pub(crate) fn open(loc: &PgLocation) -> Result<super::Conn, super::CheckpointError> {
    connect_with(
        loc,
        |client| {
            let mut tx = client.transaction().map_err(|e| loc.db_error(e))?;
            loc.migrate(&mut tx)?;
            Ok(tx.commit().map_err(|e| loc.db_error(e))?)
        },
        true,
    )
}

/// A new connection for writing to the checkpoint in `loc`, which this process has already
/// opened (migrated): the writer's after the database went away, and a worker's own.
pub(crate) fn reopen(loc: &PgLocation) -> Result<super::Conn, super::CheckpointError> {
    connect_with(loc, |_| Ok(()), true)
}

/// A connection to read the checkpoint in `loc`, which must exist (and not be newer than this
/// build). Tables an older vmr wrote are migrated first, as a writer would (readers read this
/// build's schema only).
pub(crate) fn open_reader(loc: &PgLocation) -> Result<super::Conn, super::CheckpointError> {
    connect_with(loc, |client| Ok(loc.bring_current(client)?), false)
}

/// How long one statement of a connection that writes may run before the server cancels it,
/// unless the URL's `options` set `statement_timeout`: a server that stalls (a lock held by a
/// paused process, a disk that hangs) is found, and the writer reconnects.
const STATEMENT_TIMEOUT: &str = "60s";

/// A connection to `loc` on which `first` has run, with the checkpoint's schema first on the
/// search path and `synchronous_commit` on; `writes`: a statement timeout too.
fn connect_with(
    loc: &PgLocation,
    first: impl FnOnce(&mut postgres::Client) -> Result<(), super::CheckpointError>,
    writes: bool,
) -> Result<super::Conn, super::CheckpointError> {
    let mut client = loc.connect()?;
    let timeout = if writes
        && !loc
            .config
            .get_options()
            .is_some_and(|o| o.contains("statement_timeout"))
    {
        format!("; SET statement_timeout TO '{STATEMENT_TIMEOUT}'")
    } else {
        String::new()
    };
    super::db::blocking(|| -> Result<(), super::CheckpointError> {
        first(&mut client)?;
        Ok(client
            // Every write that can cost money (a `submitting` marker, a billed answer, a
            // fence) is durable on the server when its commit returns, whatever the server's
            // own default; only a claim's release turns this off, on purpose (workers.rs). A
            // process paused inside a transaction (SIGSTOP, a partition) has its session ended
            // by the server after a minute, so its row locks never hold the other workers up
            // for longer.
            .batch_execute(&format!(
                "SET search_path TO {}; SET synchronous_commit TO on;
                 SET idle_in_transaction_session_timeout TO '60s'{timeout}",
                loc.quoted()
            ))
            .map_err(|e| loc.db_error(e))?)
    })?;
    Ok(super::Conn::Pg(Box::new(super::db::PgConn::new(client))))
}

/// Whether a vmr works the checkpoint now: any worker whose heartbeat is within its lease.
pub(crate) fn held(loc: &PgLocation) -> bool {
    open_reader(loc)
        .and_then(|c| super::reaping::live(&c))
        .is_ok_and(|w| !w.is_empty())
}

/// Whether `e` means the connection is gone or cannot be made (the server is down, restarting,
/// failing over, ended the session, or the network failed), rather than a statement refused:
/// a new connection may succeed where this one failed.
pub(crate) fn is_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exceptions. 57P01-57P03: the server shutting down, crashed or
        // starting. 25P03: a session idle in a transaction for too long, ended. 57014: a
        // statement cancelled (a statement timeout on a server that stalls).
        return code.starts_with("08")
            || matches!(code, "57P01" | "57P02" | "57P03" | "25P03" | "57014");
    }
    // No server error: the driver's own, an I/O error somewhere below it means the network.
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.is::<std::io::Error>() {
            return true;
        }
        src = inner.source();
    }
    false
}

/// A PostgreSQL error in words: the server's code and message, or the driver's error with its
/// causes (its own text alone is terse).
pub(crate) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `s` with any password taken out, when it parses as a URL.
fn redact(s: &str) -> Option<String> {
    let mut u = url::Url::parse(s).ok()?;
    let _ = u.set_password(None);
    u.set_query(None);
    Some(u.to_string())
}

/// libpq's environment defaults for what the URL leaves out.
fn apply_defaults(config: &mut postgres::Config) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) => {
                config.host(&h);
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty()
        && let Some(p) = env("PGPORT").and_then(|p| p.parse::<u16>().ok())
    {
        config.port(p);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none()
        && let Some(db) = env("PGDATABASE")
    {
        config.dbname(&db);
    }
}

/// The password for `config`'s first host: `PGPASSWORD`, else the first matching line of the
/// password file, read as libpq reads it (a file readable by group or others is ignored, with a
/// warning).
fn password_for(config: &postgres::Config) -> Option<String> {
    if let Some(pw) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
        return Some(pw);
    }
    let file = match std::env::var_os("PGPASSFILE") {
        Some(f) if !f.is_empty() => PathBuf::from(f),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&file).ok()?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; it is ignored (chmod 600 it)",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(_)) => "localhost".to_owned(),
        None => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_owned();
    let db = config
        .get_dbname()
        .map(str::to_owned)
        .unwrap_or_else(|| user.clone());
    pgpass_lookup(&text, [&host, &port, &db, &user])
}

/// The password of the first line of a libpq password file matching `host:port:db:user`
/// (`*` matches anything; `\:` and `\\` are escapes).
fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return fields.pop();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_matches_like_libpq() {
        let file = "# comment\n\
                    other:5432:*:vmr:nope\n\
                    db.example:5432:fleet:vmr:s\\:cret\\\\x\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(file, ["db.example", "5432", "fleet", "vmr"]).as_deref(),
            Some("s:cret\\x")
        );
        assert_eq!(
            pgpass_lookup(file, ["db.example", "5433", "fleet", "vmr"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("a:b:c\n", ["a", "b", "c", "d"]), None);
    }

    #[test]
    fn a_password_on_the_command_line_is_refused_and_never_shown() {
        let e = PgLocation::parse("postgres://vmr:hunter2@db:5432/fleet", true).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, PgError::PasswordInArgs { .. }), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("postgres://vmr@db:5432/fleet"), "{text}");
        // From the environment or a config file it is accepted, and still never shown.
        let loc = PgLocation::parse("postgres://vmr:hunter2@db:5432/fleet", false).unwrap();
        assert!(!format!("{loc} {loc:?}").contains("hunter2"));
        assert_eq!(loc.config.get_password(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn the_schema_parameter_names_the_namespace() {
        let loc = PgLocation::parse(
            "postgresql://vmr@db/fleet?schema=team_a&sslmode=disable",
            true,
        )
        .unwrap();
        assert_eq!(loc.schema(), "team_a");
        assert_eq!(loc.config.get_dbname(), Some("fleet"));
        assert_eq!(
            PgLocation::parse("postgres://vmr@db/fleet", true)
                .unwrap()
                .schema(),
            "vmr"
        );
        for bad in ["Team", "a-b", "1x", "x\"; drop"] {
            let url = format!("postgres://vmr@db/fleet?schema={bad}");
            assert!(
                matches!(PgLocation::parse(&url, true), Err(PgError::Url(_))),
                "{bad}"
            );
        }
    }
}
