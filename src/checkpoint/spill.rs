//! The spill: answers that may have been billed, kept on local disk while the checkpoint's
//! database cannot be written, and replayed into it before anything else once it can.
//!
//! A PostgreSQL checkpoint can go away under a running worker (a failover, a restart, a
//! terminated connection). The writer then writes every update that carries a billed or possibly
//! billed answer to a file of its own in the spill directory, fsynced (file and directory), before
//! it tries to reconnect: a billed body is never only in memory. Whoever reaches the database
//! next with the same spill directory (this writer once it reconnects, or the next start of any
//! worker) replays the files in the order they were written, each in its own transaction, and
//! removes a file only after its transaction committed. Replay is idempotent: every call has its
//! own id (`calls.uid`), and a call already in the call log is not written again. A replayed
//! answer moves its VIN only while the VIN is still where the call left it (see
//! `update::replay_fits`); else it only joins the call log, as a fenced answer does.

// Only a PostgreSQL checkpoint's writer spills (a state directory's writer shares its disk).
#![cfg_attr(not(feature = "pg"), allow(dead_code))]

use super::update::{Applied, Fence, Mode, apply_update};
use super::{CheckpointError, Conn, Update};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory a checkpoint's spilled answers go to, one per checkpoint under the spill root.
#[derive(Debug, Clone)]
pub(crate) struct Spill {
    dir: PathBuf,
}

/// One spilled update, as its file holds it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The checkpoint it belongs to, as [`Spill::new`]'s key names it.
    checkpoint: String,
    update: Update,
    fence: Option<Fence>,
    spilled_at_ms: i64,
}

/// Whether an update carries something paid for, or possibly paid for: a billed or unknown
/// answer, or a report. Only those are spilled; the rest cost nothing to lose.
pub(crate) fn worth_keeping(u: &Update) -> bool {
    u.report.is_some()
        || u.call.as_ref().is_some_and(|c| {
            matches!(
                c.class,
                crate::api::Delivery::Billed | crate::api::Delivery::Unknown
            )
        })
}

/// A new call id, unique across processes, hosts and runs: the time in ms, then 80 random bits,
/// in 32 hex digits. Time first, so ids made one after the other sort near each other and the
/// call log's unique index grows at its end (random ids would touch a random page per call).
pub fn new_call_uid() -> String {
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    format!("{:012x}{random:020x}", crate::api::now_ms().max(0))
}

impl Spill {
    /// The spill of the checkpoint `key` (its place, as shown to users) under `root`.
    pub(crate) fn new(root: &Path, key: &str) -> Spill {
        let name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Spill {
            dir: root.join(name),
        }
    }

    /// Where the files go.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Writes `u` (its call given an id first, if it had none) to a file of its own, durably:
    /// the file is fsynced, renamed into place and the directory fsynced before this returns.
    pub(crate) fn keep(&self, u: &mut Update, fence: Option<Fence>) -> std::io::Result<PathBuf> {
        if let Some(call) = &mut u.call
            && call.uid.is_none()
        {
            call.uid = Some(new_call_uid());
        }
        let uid = u
            .call
            .as_ref()
            .and_then(|c| c.uid.clone())
            .unwrap_or_else(new_call_uid);
        std::fs::create_dir_all(&self.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Report bodies are the customer's data: the owner's only.
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        let at = crate::api::now_ms();
        let record = Record {
            checkpoint: self.key(),
            update: u.clone(),
            fence,
            spilled_at_ms: at,
        };
        let path = self.dir.join(format!("{at:013}-{uid}.json"));
        let tmp = self.dir.join(format!(".{at:013}-{uid}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&record)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// The spilled files waiting, oldest first.
    fn waiting(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        files.sort();
        Ok(files)
    }

    /// Replays every waiting file into the checkpoint through `conn`, each in its own
    /// transaction, and removes it once committed. `me` is this process's worker id, if it is
    /// one: its own spilled answers keep their fence; another's (a worker gone) may land only
    /// where no other live worker holds the VIN. `answered(uid, result)` is told each replayed
    /// update's outcome, so a writer can answer the task still waiting for it. Returns how many
    /// were replayed; stops at the first error that means the database is gone again.
    pub(crate) fn replay(
        &self,
        conn: &Conn,
        me: Option<i64>,
        mut answered: impl FnMut(&str, Result<Applied, CheckpointError>),
    ) -> Result<usize, CheckpointError> {
        let files = self.waiting().map_err(|e| self.io_error(e))?;
        let mut replayed = 0;
        for path in files {
            let record: Record = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    self.set_aside(&path, &format!("unreadable: {e}"));
                    continue;
                }
            };
            if record.checkpoint != self.key() {
                self.set_aside(&path, "written for another checkpoint");
                continue;
            }
            let fence = record.fence.map(|f| match me {
                Some(id) if id == f.worker => f,
                // Its worker is gone: it may land only where no live worker holds the VIN.
                _ => Fence { own: false, ..f },
            });
            let uid = record
                .update
                .call
                .as_ref()
                .and_then(|c| c.uid.clone())
                .unwrap_or_default();
            conn.batch("BEGIN IMMEDIATE")?;
            let result = apply_update(conn, &record.update, fence, Mode::Replay);
            match result {
                Ok(applied) => {
                    if let Err(e) = conn.batch("COMMIT") {
                        let _ = conn.batch("ROLLBACK");
                        return Err(e);
                    }
                    if let Err(e) = remove_durably(&path) {
                        tracing::error!(file = %path.display(), error = %e, "a replayed answer's file could not be removed; replaying it again is harmless");
                    }
                    replayed += 1;
                    if let Applied::Fenced(vin) = &applied {
                        tracing::warn!(
                            vin = vin.as_str(),
                            "a spilled answer was replayed into the call log only (its VIN moved on)"
                        );
                    }
                    answered(&uid, Ok(applied));
                }
                Err(e) => {
                    let _ = conn.batch("ROLLBACK");
                    if e.is_outage() {
                        return Err(e);
                    }
                    if e.is_duplicate_call() {
                        // Another process replayed it first.
                        let _ = remove_durably(&path);
                        answered(&uid, Ok(Applied::Yes));
                        continue;
                    }
                    self.set_aside(&path, &e.to_string());
                    answered(&uid, Err(e));
                }
            }
        }
        if replayed > 0 {
            tracing::warn!(
                replayed,
                dir = %self.dir.display(),
                "answers kept on disk while the database was out of reach are now in the checkpoint"
            );
        }
        Ok(replayed)
    }

    /// Moves a file that cannot be replayed into `unreplayable/`, for a person to look at; it
    /// is never deleted.
    fn set_aside(&self, path: &Path, why: &str) {
        let aside = self.dir.join("unreplayable");
        let moved = std::fs::create_dir_all(&aside)
            .and_then(|_| std::fs::rename(path, aside.join(path.file_name().unwrap_or_default())));
        tracing::error!(
            file = %path.display(),
            why,
            moved_to = %aside.display(),
            moved = moved.is_ok(),
            "a spilled answer could not be replayed into the checkpoint; it is kept for a person to look at"
        );
    }

    fn io_error(&self, e: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            dir: self.dir.clone(),
            source: e,
        }
    }
}

fn remove_durably(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Delivery, Endpoint};
    use crate::checkpoint::{CallLog, ReportRow};

    fn billed(uid: Option<&str>) -> Update {
        Update {
            vin_id: 7,
            call: Some(CallLog {
                uid: uid.map(str::to_owned),
                endpoint: Endpoint::Get,
                request_id: Some("R1".into()),
                http_status: Some(200),
                code: Some(200),
                msg: Some("成功".into()),
                task_no: None,
                class: Delivery::Billed,
                started_at: 1,
                ended_at: 2,
                error: None,
                body: None,
            }),
            report: Some(ReportRow {
                request_id: Some("R1".into()),
                task_no: None,
                endpoint: Endpoint::Get,
                fetched_at: 2,
                body: vec![0xff, 0, b'{', 0x80],
            }),
            ..Update::default()
        }
    }

    #[test]
    fn a_kept_update_is_one_durable_file_with_its_bytes_and_an_id() {
        let t = tempfile::tempdir().expect("tempdir");
        let spill = Spill::new(t.path(), "postgres://db:5432/vmr?schema=a");
        assert!(
            spill.waiting().expect("empty").is_empty(),
            "no directory yet"
        );
        let mut u = billed(None);
        let path = spill.keep(&mut u, None).expect("kept");
        let uid = u
            .call
            .as_ref()
            .and_then(|c| c.uid.clone())
            .expect("an id given");
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()), "{uid}");
        // Time first: a later id sorts after an earlier one (a millisecond apart).
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_call_uid() > uid);
        assert!(path.to_string_lossy().ends_with(&format!("-{uid}.json")));
        assert_eq!(spill.waiting().expect("one"), vec![path.clone()]);
        let back: Record =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(
            back.update.report.expect("report").body,
            vec![0xff, 0, b'{', 0x80]
        );
        assert_eq!(back.update.call.and_then(|c| c.uid), Some(uid));
        // Ids given are kept; a second file sorts after the first.
        let mut second = billed(Some("feed"));
        let p2 = spill.keep(&mut second, None).expect("kept");
        assert_eq!(spill.waiting().expect("two").last(), Some(&p2));
    }

    #[test]
    fn only_answers_that_may_cost_money_are_spilled() {
        assert!(worth_keeping(&billed(None)));
        let mut u = billed(None);
        u.report = None;
        u.call.as_mut().expect("call").class = Delivery::Unknown;
        assert!(worth_keeping(&u));
        u.call.as_mut().expect("call").class = Delivery::NotBilled;
        assert!(!worth_keeping(&u));
        assert!(!worth_keeping(&Update::default()));
    }
}
