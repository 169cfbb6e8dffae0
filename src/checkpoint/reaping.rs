//! Finding the workers of a PostgreSQL checkpoint that are gone, and settling what they held:
//! which machine and process a worker is, the workers of this machine whose process died, the
//! claims that lapsed, and the live workers as `vmr status` lists them.

use super::db::Conn;
use super::workers::{DB_NOW, LAPSED};
use super::{CheckpointError, p};

/// This machine's name, as `status` shows a worker's host.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What makes a PID meaningful: this kernel's boot and this process's PID namespace. Two
/// workers with the same key see the same processes. Where the boot id cannot be read (off
/// Linux), a random key of this process's own: no other worker shares it, so none is ever
/// reaped by PID from here (a dead one's claims lapse with its lease instead).
pub(super) fn local_key() -> String {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        if boot.trim().is_empty() {
            return format!("process {:032x}", rand::random::<u128>());
        }
        let ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!("{} {ns}", boot.trim())
    })
    .clone()
}

/// Whether a process with this PID runs (or may: one we cannot ask about counts as running).
fn running(pid: i64) -> bool {
    u32::try_from(pid)
        .ok()
        .and_then(crate::sys::process_alive)
        .unwrap_or(true)
}

/// The workers registered from this machine whose process is gone (killed, crashed).
pub(crate) fn dead_here(c: &Conn) -> Result<Vec<i64>, CheckpointError> {
    let here: Vec<(i64, i64)> = c.query_map(
        "SELECT id, pid FROM workers WHERE local_key = ?1",
        p![local_key()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let me = i64::from(std::process::id());
    Ok(here
        .into_iter()
        .filter(|&(_, pid)| pid != me && !running(pid))
        .map(|(id, _)| id)
        .collect())
}

/// Ends the workers of this machine whose process is gone (killed, crashed): their claims lapse
/// now instead of at the end of their lease, and [`sweep`] (or the recovery at open) settles
/// them. Returns how many it found.
pub(crate) fn reap_dead_here(c: &Conn) -> Result<usize, CheckpointError> {
    let dead = dead_here(c)?;
    for &id in &dead {
        c.execute(
            "UPDATE vins SET claim_until = 0 WHERE claimed_by = ?1",
            p![id],
        )?;
        c.execute("DELETE FROM workers WHERE id = ?1", p![id])?;
        tracing::info!(
            worker = id,
            "a worker on this machine is gone; its claims are settled now"
        );
    }
    Ok(dead.len())
}

/// Settles the claims that have lapsed: a `submitting` VIN becomes `uncertain`, any other is
/// freed. Returns the VINs made uncertain. Never waits for a row another transaction holds.
pub(crate) fn sweep(c: &Conn) -> Result<Vec<String>, CheckpointError> {
    let uncertain: Vec<String> = c.query_map(
        &format!(
            "UPDATE vins SET state = 'uncertain', message = ?1, claimed_by = NULL, claim_until = NULL
             WHERE id IN (SELECT id FROM vins WHERE claimed_by IS NOT NULL AND claim_until < {DB_NOW}
                AND state = 'submitting' FOR UPDATE SKIP LOCKED)
             RETURNING vin"
        ),
        p![LAPSED],
        |r| r.get(0),
    )?;
    c.execute(
        &format!(
            "UPDATE vins SET claimed_by = NULL, claim_until = NULL
             WHERE id IN (SELECT id FROM vins WHERE claimed_by IS NOT NULL AND claim_until < {DB_NOW}
                AND state <> 'submitting' FOR UPDATE SKIP LOCKED)"
        ),
        p![],
    )?;
    if !uncertain.is_empty() {
        tracing::warn!(
            count = uncertain.len(),
            "a worker's claims lapsed while its generates were in flight: those VINs are now uncertain (the vendor may have billed them)"
        );
    }
    Ok(uncertain)
}

/// The live workers of the checkpoint (heartbeat within their lease), oldest first.
pub(crate) fn live(c: &Conn) -> Result<Vec<super::WorkerRow>, CheckpointError> {
    let dead = dead_here(c)?;
    let mut rows = c.query_map(
        &format!(
            "SELECT w.id, w.host, w.pid, w.command, w.run_id, w.rate, w.started_at,
                {DB_NOW} - w.heartbeat_at,
                (SELECT count(*) FROM vins v WHERE v.claimed_by = w.id AND v.claim_until IS NOT NULL)
             FROM workers w WHERE w.heartbeat_at >= {DB_NOW} - w.lease_ms ORDER BY w.id"
        ),
        p![],
        |r| {
            Ok(super::WorkerRow {
                id: r.get(0)?,
                host: r.get(1)?,
                pid: r.get(2)?,
                command: r.get(3)?,
                run_id: r.get(4)?,
                rate: r.get(5)?,
                started_at_ms: r.get(6)?,
                heartbeat_age_ms: r.get(7)?,
                claimed: r.get(8)?,
            })
        },
    )?;
    rows.retain(|w| !dead.contains(&w.id));
    Ok(rows)
}

/// SQL true for a `vins` row whose claim no live worker holds (none, lapsed, or its worker's
/// process on this machine gone): a `submitting` VIN so is uncertain.
pub(crate) fn unheld_sql(c: &Conn) -> Result<String, CheckpointError> {
    let dead = dead_here(c)?;
    let mut cond = format!("(claimed_by IS NULL OR claim_until IS NULL OR claim_until < {DB_NOW}");
    if !dead.is_empty() {
        let ids: Vec<String> = dead.iter().map(i64::to_string).collect();
        cond.push_str(&format!(" OR claimed_by IN ({})", ids.join(", ")));
    }
    cond.push(')');
    Ok(cond)
}
