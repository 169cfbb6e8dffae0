//! The state directory on disk: its lock (one writing vmr at a time), the owner-only modes of
//! every file in it, creating the SQLite checkpoint, and backups.

use super::schema::{configure, migrate};
use super::{CheckpointError, open_reader};
use rusqlite::Connection;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The path of the database inside a state directory.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("checkpoint.sqlite")
}

/// The held lock on a state directory; released when dropped (and by the kernel if the process
/// dies, so a dead holder never blocks).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, CheckpointError> {
        let io = |source| CheckpointError::Io {
            dir: dir.to_owned(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let lock_path = dir.join("lock");
        let mut file = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        set_private(&lock_path).map_err(io)?;
        // A reader (`vmr status`) holds a shared lock for an instant to see whether a vmr runs;
        // a writer starting at that instant waits it out instead of failing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let locked = loop {
            match file.try_lock() {
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(CheckpointError::Locked {
                    dir: dir.to_owned(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

/// Mode of the state directory: only its owner may list or enter it.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Mode of every checkpoint file (database, `-wal`, `-shm`, lock) and of a backup: the reports
/// bought are personal data (VINs, maintenance history), readable by their owner only.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its missing parents) with the state directory's mode, whatever the umask;
/// an existing directory is left as it is (it may be a mount point that is not ours to change).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    match builder.create(dir) {
        Ok(()) => {}
        // Another vmr created it between the check and here.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask can only narrow the mode given at creation; set it explicitly all the same.
    #[cfg(unix)]
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE))?;
    Ok(())
}

/// Options that create a file with the checkpoint files' mode (the umask may narrow it).
pub(crate) fn private_file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    o
}

/// Sets `path` to the checkpoint files' mode (owner read and write only).
pub(crate) fn set_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE),
    )?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The database with its `-wal` and `-shm` companions.
pub(crate) fn db_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [db.to_owned(), with("-wal"), with("-shm")]
}

/// Sets the database and its `-wal` and `-shm` (those present) to owner-only, so a state
/// directory written by an older vmr, or under a loose umask, is tightened when opened for
/// writing.
pub(super) fn tighten_db_files(db: &Path) -> std::io::Result<()> {
    for f in db_files(db) {
        match set_private(&f) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Whether a vmr process holds the state directory now. Checked with a shared lock taken and
/// released at once, so a reader never blocks a writer for longer than that instant.
pub(crate) fn writer_running(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join("lock")) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Locks `state_dir` (creating it), and opens its checkpoint for writing (creating it), migrated
/// to [`SCHEMA_VERSION`], every file owner-only.
pub(crate) fn create_locked(state_dir: &Path) -> Result<(DirLock, Connection), CheckpointError> {
    let lock = DirLock::acquire(state_dir)?;
    let path = db_path(state_dir);
    let open_err = |source| CheckpointError::Open {
        path: path.clone(),
        source,
    };
    let io = |source| CheckpointError::Io {
        dir: state_dir.to_owned(),
        source,
    };
    // Created empty with the private mode before SQLite opens it (an empty file is an empty
    // database): SQLite gives the `-wal` and `-shm` it creates the database file's mode.
    private_file_options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut conn = Connection::open(&path).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    migrate(&mut conn, &path)?;
    tighten_db_files(&path).map_err(io)?;
    Ok((lock, conn))
}

/// What [`backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The size of the backup file, in bytes.
    pub bytes: u64,
    /// The VINs in the backup.
    pub vins: i64,
    /// The reports in the backup (every version of every VIN's).
    pub reports: i64,
}

/// Writes a consistent copy of the checkpoint in `state_dir` to `dest` with SQLite's
/// `VACUUM INTO`, from a read connection: it takes no lock on the state directory, so it runs
/// while another vmr writes, and the copy is the checkpoint as of one instant (a WAL read
/// snapshot), compacted. `dest` must not exist; the copy is created owner-only (`0600`) and
/// fsynced. On failure nothing is left at `dest`.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<Backup, CheckpointError> {
    let conn = open_reader(&db_path(state_dir))?;
    let io = |source| CheckpointError::Io {
        dir: dest.to_owned(),
        source,
    };
    let Some(dest_str) = dest.to_str() else {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the backup path is not valid UTF-8",
        )));
    };
    // Created empty (VACUUM INTO accepts an empty file) and owner-only before a byte is written;
    // `create_new` refuses an existing path without a window for a race.
    match private_file_options()
        .write(true)
        .create_new(true)
        .open(dest)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CheckpointError::BackupExists(dest.to_owned()));
        }
        Err(e) => return Err(io(e)),
    }
    let written = (|| {
        set_private(dest).map_err(io)?;
        conn.execute("VACUUM INTO ?1", [dest_str])?;
        File::open(dest).and_then(|f| f.sync_all()).map_err(io)?;
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        if let Ok(d) = File::open(parent) {
            // Makes the new directory entry durable; not every filesystem allows it.
            let _ = d.sync_all();
        }
        let copy = open_reader(dest)?;
        let (vins, reports) = copy.query_row(
            "SELECT (SELECT count(*) FROM vins), (SELECT count(*) FROM reports)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let bytes = fs::metadata(dest).map_err(io)?.len();
        Ok(Backup {
            bytes,
            vins,
            reports,
        })
    })();
    if written.is_err() {
        let _ = fs::remove_file(dest);
    }
    written
}
