//! Status: what the checkpoint says, for people and for scripts.
//!
//! Read-only and lock-free (a WAL reader), so it works while another vmr is running: counts per
//! state, calls and billed calls per endpoint, the uncertain VINs (possibly billed, not
//! resubmitted unless asked), rejected rows with reasons, when the next poll is due, and how the
//! last run ended.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use std::collections::BTreeMap;

use crate::checkpoint::{self, CallCounts, CheckpointError};

const LIST: usize = 20;

#[derive(Debug, Serialize)]
pub(crate) struct RejectedRow {
    pub input_file: Option<String>,
    pub line: Option<i64>,
    pub vin: String,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LastRun {
    pub command: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub exit_code: Option<i64>,
    pub outcome: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub checkpoint: String,
    pub total_vins: i64,
    pub states: checkpoint::StateCounts,
    pub calls: BTreeMap<String, CallCounts>,
    pub billed_total: i64,
    pub unknown_outcome_total: i64,
    pub reports_stored: i64,
    /// The vendor account the state belongs to (`sandbox`, or origin and app id).
    pub account: Option<String>,
    /// VINs whose generate may have been billed without an answer: a person decides.
    pub uncertain: Vec<String>,
    /// VINs whose billed answer held no usable report (the body is kept in the checkpoint).
    pub billed_unusable: Vec<String>,
    pub rejected: Vec<RejectedRow>,
    pub rejected_total: i64,
    pub duplicates: i64,
    pub check_digit_warnings: i64,
    /// RFC 3339 time of the next due poll, when any VIN is pending.
    pub next_poll_due: Option<String>,
    pub last_run: Option<LastRun>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Reads the status. `writer_running` tells whether a vmr holds the state directory: when none
/// does, VINs still marked `submitting` were in flight when their process died, and are listed
/// as uncertain (the next run records them so).
pub(crate) fn read(
    conn: &Connection,
    path: &str,
    writer_running: bool,
) -> Result<Status, CheckpointError> {
    let states = checkpoint::state_counts(conn)?;
    let calls = checkpoint::call_counts(conn)?;
    let uncertain_states = if writer_running {
        "('uncertain')"
    } else {
        "('uncertain', 'submitting')"
    };
    let uncertain = vins_where(conn, &format!("state IN {uncertain_states}"))?;
    let billed_unusable = vins_where(
        conn,
        &format!(
            "state = 'failed' AND substr(message, 1, {}) = '{}'",
            crate::engine::BILLED_UNUSABLE.len(),
            crate::engine::BILLED_UNUSABLE
        ),
    )?;
    let (duplicates, check_digit_warnings): (i64, i64) = conn.query_row(
        "SELECT coalesce(sum(duplicates), 0), coalesce(sum(check_digit_warnings), 0) FROM batches",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let reports_stored: i64 = conn.query_row("SELECT count(*) FROM reports", [], |r| r.get(0))?;
    Ok(Status {
        checkpoint: path.to_owned(),
        total_vins: states.total(),
        rejected_total: states.get(checkpoint::State::Rejected),
        billed_total: calls.values().map(|c| c.billed).sum(),
        unknown_outcome_total: calls.values().map(|c| c.unknown_outcome).sum(),
        states,
        calls,
        reports_stored,
        account: checkpoint::account(conn)?,
        uncertain,
        billed_unusable,
        rejected: rejected_rows(conn)?,
        duplicates,
        check_digit_warnings,
        next_poll_due: checkpoint::next_poll_due(conn)?.map(rfc3339),
        last_run: last_run(conn)?,
    })
}

/// The VINs matching `condition`, in the order they were read.
fn vins_where(conn: &Connection, condition: &str) -> Result<Vec<String>, CheckpointError> {
    Ok(conn
        .prepare(&format!(
            "SELECT vin FROM vins WHERE {condition} ORDER BY id"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// The first rejected rows, with their reasons.
fn rejected_rows(conn: &Connection) -> Result<Vec<RejectedRow>, CheckpointError> {
    Ok(conn
        .prepare(&format!(
            "SELECT input_file, input_line, vin, message FROM vins WHERE state = 'rejected' ORDER BY id LIMIT {LIST}"
        ))?
        .query_map([], |r| {
            Ok(RejectedRow {
                input_file: r.get(0)?,
                line: r.get(1)?,
                vin: r.get(2)?,
                reason: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

fn last_run(conn: &Connection) -> Result<Option<LastRun>, CheckpointError> {
    Ok(conn
        .query_row(
            "SELECT command, started_at, ended_at, exit_code, outcome FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                Ok(LastRun {
                    command: r.get(0)?,
                    started_at: rfc3339(r.get(1)?),
                    ended_at: r.get::<_, Option<i64>>(2)?.map(rfc3339),
                    exit_code: r.get(3)?,
                    outcome: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// A list of VINs under a heading, the first [`LIST`] by name.
fn push_list(o: &mut String, heading: String, vins: &[String]) {
    o.push_str(&heading);
    for v in vins.iter().take(LIST) {
        o.push_str(&format!("  {v}\n"));
    }
    if vins.len() > LIST {
        o.push_str(&format!("  … and {} more\n", vins.len() - LIST));
    }
}

impl Status {
    pub fn render(&self) -> String {
        let mut o = format!("checkpoint {}: {} VINs\n", self.checkpoint, self.total_vins);
        if let Some(a) = &self.account {
            o.push_str(&format!("vendor account: {a}\n"));
        }
        o.push_str("states:");
        for (s, n) in self.states.iter() {
            o.push_str(&format!("  {s} {n}"));
        }
        o.push('\n');
        self.render_calls(&mut o);
        self.render_money(&mut o);
        self.render_input(&mut o);
        if let Some(t) = &self.next_poll_due {
            o.push_str(&format!("next poll due: {t}\n"));
        }
        if let Some(r) = &self.last_run {
            o.push_str(&format!(
                "last run: {} started {}{}\n",
                r.command,
                r.started_at,
                match (&r.ended_at, r.exit_code, &r.outcome) {
                    (Some(e), Some(c), Some(out)) => format!(", ended {e}, exit {c}: {out}"),
                    _ => ", did not finish (still running or killed)".to_owned(),
                }
            ));
        }
        o
    }

    fn render_calls(&self, o: &mut String) {
        for (ep, c) in &self.calls {
            o.push_str(&format!(
                "{ep:>8}: {} calls, {} billed, {} unknown outcome, {} not sent\n",
                c.calls, c.billed, c.unknown_outcome, c.not_sent
            ));
        }
        o.push_str(&format!(
            "billed calls in all: {}; reports stored: {}\n",
            self.billed_total, self.reports_stored
        ));
        if self.unknown_outcome_total > 0 {
            o.push_str(&format!(
                "{} calls were sent without a usable answer and may have been billed: reconcile with the vendor's statement\n",
                self.unknown_outcome_total
            ));
        }
    }

    /// The VINs that need a person: uncertain ones, and billed answers without a report.
    fn render_money(&self, o: &mut String) {
        if !self.uncertain.is_empty() {
            // Every uncertain VIN is listed: each needs a decision.
            o.push_str(&format!(
                "{} uncertain VINs (a generate whose answer never arrived; the vendor may have billed it). Check the vendor's statement (`vmr export` writes every call to the calls table), then `vmr resolve --vin V --not-billed | --billed --request-id R | --abandon`, or send them again with --resubmit-uncertain:\n",
                self.uncertain.len()
            ));
            for v in &self.uncertain {
                o.push_str(&format!("  {v}\n"));
            }
        }
        if !self.billed_unusable.is_empty() {
            push_list(
                o,
                format!(
                    "{} VINs failed as billed_unusable (billed, but the answer held no usable report; its body is kept; not sent again automatically):\n",
                    self.billed_unusable.len()
                ),
                &self.billed_unusable,
            );
        }
    }

    fn render_input(&self, o: &mut String) {
        if self.duplicates > 0 || self.check_digit_warnings > 0 {
            o.push_str(&format!(
                "input: {} duplicate rows (bought once), {} check-digit warnings\n",
                self.duplicates, self.check_digit_warnings
            ));
        }
        if self.rejected_total == 0 {
            return;
        }
        o.push_str(&format!(
            "{} rejected rows (never sent):\n",
            self.rejected_total
        ));
        for r in &self.rejected {
            o.push_str(&format!(
                "  {} line {}: {}\n",
                r.input_file.as_deref().unwrap_or("?"),
                r.line.unwrap_or(0),
                r.reason.as_deref().unwrap_or("")
            ));
        }
        if self.rejected_total as usize > self.rejected.len() {
            o.push_str(&format!(
                "  … and {} more\n",
                self.rejected_total as usize - self.rejected.len()
            ));
        }
    }
}
