//! A real PostgreSQL server for the tests: started once per test binary from the machine's
//! PostgreSQL binaries (Debian's `postgresql` package; `.ci/run` installs it), in a private data
//! directory, listening on 127.0.0.1 on an ephemeral port with password (SCRAM) authentication.
//! It runs as the `postgres` user when the tests run as root (PostgreSQL refuses root), and it
//! dies with the test binary (parent-death signal). Each test takes its own database.
//!
//! Where no server can be started (no binaries), the tests that need one print a loud line and
//! return, except under `CI=true`, where they fail.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser the tests connect as, and its password.
pub(crate) const USER: &str = "vmr";
pub(crate) const PASSWORD: &str = "pw-for-tests-only-7d1f";

pub(crate) struct PgServer {
    pub port: u16,
    data: PathBuf,
    /// What starting it again takes: its binaries, base directory, settings and user.
    bin: PathBuf,
    base: PathBuf,
    settings: Vec<String>,
    ids: Option<(u32, u32)>,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The shared server, or `None` (after one loud line) where none can be started outside CI.
pub(crate) fn server() -> Option<&'static PgServer> {
    match SERVER.get_or_init(start) {
        Ok(s) => Some(s),
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no PostgreSQL server could be started: {why}");
            }
            eprintln!(
                "SKIPPED: no PostgreSQL server could be started ({why}); install Debian's postgresql package to run this test"
            );
            None
        }
    }
}

impl PgServer {
    /// A new empty database, and its URL (without the password; tests give it in PGPASSWORD).
    pub(crate) fn new_database(&self, tag: &str) -> String {
        let name = format!(
            "t_{}_{}_{}",
            tag,
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = self.client("postgres");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// A client on `db` (a database name).
    pub(crate) fn client(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(USER)
            .password(PASSWORD)
            .dbname(db)
            .connect(postgres::NoTls)
            .expect("connect to the test PostgreSQL")
    }

    /// A client on the database of `url` (one [`PgServer::new_database`] gave).
    pub(crate) fn client_for(&self, url: &str) -> postgres::Client {
        let db = url
            .rsplit('/')
            .next()
            .and_then(|s| s.split('?').next())
            .expect("database in URL");
        self.client(db)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Ends every session on the database `db` but the caller's (`pg_terminate_backend`);
    /// returns how many were ended.
    pub(crate) fn terminate_sessions(&self, db: &str) -> i64 {
        let mut c = self.client("postgres");
        c.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .expect("terminate sessions")
        .len() as i64
    }

    /// Stops the server as an operator would: a fast shutdown (every session ended, the
    /// transactions in flight rolled back).
    pub(crate) fn stop(&self) {
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .current_dir(&self.base)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut stop, self.ids);
        let status = stop.status().expect("pg_ctl stop runs");
        assert!(status.success(), "pg_ctl stop: {status}");
    }

    /// Starts the stopped server again on the same port, and waits until it accepts
    /// connections.
    pub(crate) fn start(&self) {
        spawn_server(
            &self.bin,
            &self.data,
            self.port,
            &self.base,
            &self.settings,
            self.ids,
        )
        .expect("postgres starts again");
        wait_ready(self.port, &self.base).expect("postgres accepts connections again");
    }

    /// [`PgServer::stop`], then [`PgServer::start`]. Returns how long it was down.
    pub(crate) fn restart(&self) -> Duration {
        let began = Instant::now();
        self.stop();
        self.start();
        began.elapsed()
    }
}

/// The directory of `initdb` and `postgres`.
fn bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("VMR_TEST_PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

/// The uid and gid to run PostgreSQL as: ours, or `postgres`'s when we are root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("name");
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no postgres user to run the server as".into());
    }
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn as_user(cmd: &mut Command, ids: Option<(u32, u32)>) {
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // Set after the uid change, which clears it: the server gets SIGQUIT (immediate
            // shutdown) when the thread that started it, which lives as long as the test
            // binary, ends.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
}

pub(crate) fn chown(path: &Path, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for postgres");
    }
}

/// Removes data directories of earlier test binaries that are gone.
fn clean_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("vmr-test-")
            && let Some((_, pid)) = name.rsplit_once('-')
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

fn start() -> Result<PgServer, String> {
    start_in("vmr-test-pg", |_, _| Ok(Vec::new()))
}

/// A server of its own for one test, in `vmr-test-<tag>-<pid>` under the temporary directory:
/// `setup` gets its base directory (before initdb's data directory is made in it) and the ids
/// the server runs as, and returns more `-c name=value` settings.
pub(crate) fn start_own(
    tag: &str,
    setup: impl FnOnce(&Path, Option<(u32, u32)>) -> Result<Vec<String>, String>,
) -> Result<PgServer, String> {
    start_in(&format!("vmr-test-{tag}"), setup)
}

fn start_in(
    prefix: &str,
    setup: impl FnOnce(&Path, Option<(u32, u32)>) -> Result<Vec<String>, String>,
) -> Result<PgServer, String> {
    let bin = bindir().ok_or("no PostgreSQL binaries under /usr/lib/postgresql")?;
    let ids = run_as()?;
    let root = std::env::temp_dir();
    clean_stale(&root);
    let base = root.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    chown(&base, ids);
    let data = base.join("data");
    let pwfile = base.join("pw");
    std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
    chown(&pwfile, ids);
    let mut init = Command::new(bin.join("initdb"));
    init.arg("-D")
        .arg(&data)
        .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut init, ids);
    let out = init.output().map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let settings = setup(&base, ids)?;
    let port = free_port();
    spawn_server(&bin, &data, port, &base, &settings, ids)?;
    wait_ready(port, &base)?;
    Ok(PgServer {
        port,
        data,
        bin,
        base,
        settings,
        ids,
    })
}

/// Starts `postgres` on `data`, listening on 127.0.0.1:`port`, its log appended to
/// `server.log` in `base`.
fn spawn_server(
    bin: &Path,
    data: &Path,
    port: u16,
    base: &Path,
    settings: &[String],
    ids: Option<(u32, u32)>,
) -> Result<(), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("server.log"))
        .map_err(|e| e.to_string())?;
    let mut server = Command::new(bin.join("postgres"));
    server
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(base)
        .args(["-c", "listen_addresses=127.0.0.1"])
        // A test server: durability is not what is tested here.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
        .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
        .current_dir(base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    as_user(&mut server, ids);
    // Started from a thread that never ends, so the parent-death signal fires only when the
    // test binary exits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let child = server.spawn();
            let ok = child.is_ok();
            let _ = tx.send(child.map(|_| ()).map_err(|e| e.to_string()));
            if ok {
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("postgres: {e}"))
}

/// Waits until the server on `port` answers (a minute at most).
fn wait_ready(port: u16, base: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user(USER)
            .password(PASSWORD)
            .dbname("postgres")
            .connect(postgres::NoTls);
        match c {
            Ok(_) => return Ok(()),
            // It answered (a server that takes only TLS refuses this plain connection), and not
            // with "the database system is starting up".
            Err(e)
                if e.as_db_error().is_some_and(|d| {
                    *d.code() != postgres::error::SqlState::CANNOT_CONNECT_NOW
                }) =>
            {
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(base.join("server.log")).unwrap_or_default();
                return Err(format!("server did not accept connections: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
