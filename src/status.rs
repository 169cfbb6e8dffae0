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

/// Entries of a list that the text view shows.
const LIST: usize = 20;

/// Entries of a list that the status holds (and `--json` prints) at most.
pub(crate) const JSON_LIST: usize = 100;

/// The version of the shape of `vmr status --json` (docs/status.schema.json).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Where each list is found in full: the export's requests table has a row per VIN.
#[derive(Debug, Serialize)]
pub(crate) struct FullLists {
    pub uncertain: &'static str,
    pub billed_unusable: &'static str,
    pub rejected: &'static str,
}

const FULL_LISTS: FullLists = FullLists {
    uncertain: "vmr export: requests table, status = uncertain (or submitting, when no vmr is running)",
    billed_unusable: "vmr export: requests table, status = failed and message starting with billed_unusable",
    rejected: "vmr export: requests table, status = rejected",
};

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
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    pub checkpoint: String,
    pub total_vins: i64,
    pub states: checkpoint::StateCounts,
    pub calls: BTreeMap<String, CallCounts>,
    pub billed_total: i64,
    pub unknown_outcome_total: i64,
    pub reports_stored: i64,
    /// The vendor account the state belongs to (`sandbox`, or origin and app id).
    pub account: Option<String>,
    /// VINs whose generate may have been billed without an answer: a person decides. The first
    /// [`JSON_LIST`].
    pub uncertain: Vec<String>,
    pub uncertain_total: i64,
    /// VINs whose billed answer held no usable report (the body is kept in the checkpoint). The
    /// first [`JSON_LIST`].
    pub billed_unusable: Vec<String>,
    pub billed_unusable_total: i64,
    /// The first [`JSON_LIST`] rejected input rows.
    pub rejected: Vec<RejectedRow>,
    pub rejected_total: i64,
    /// The most entries a list holds.
    pub list_limit: usize,
    /// Where each list is found in full.
    pub full_lists: FullLists,
    pub duplicates: i64,
    pub check_digit_warnings: i64,
    /// RFC 3339 time of the next due poll, when any VIN is pending.
    pub next_poll_due: Option<String>,
    pub last_run: Option<LastRun>,
    /// What the billed calls cost, every run and every purchase: null without `--price`.
    pub money: Option<crate::price::Spent>,
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
    let (uncertain, uncertain_total) = vins_where(conn, &format!("state IN {uncertain_states}"))?;
    let (billed_unusable, billed_unusable_total) = vins_where(
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
        schema_version: SCHEMA_VERSION,
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
        uncertain_total,
        billed_unusable,
        billed_unusable_total,
        rejected: rejected_rows(conn)?,
        list_limit: JSON_LIST,
        full_lists: FULL_LISTS,
        duplicates,
        check_digit_warnings,
        next_poll_due: checkpoint::next_poll_due(conn)?.map(rfc3339),
        last_run: last_run(conn)?,
        money: None,
    })
}

/// The first [`JSON_LIST`] VINs matching `condition`, in the order they were read, and how many
/// match.
fn vins_where(conn: &Connection, condition: &str) -> Result<(Vec<String>, i64), CheckpointError> {
    let vins = conn
        .prepare(&format!(
            "SELECT vin FROM vins WHERE {condition} ORDER BY id LIMIT {JSON_LIST}"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let total = conn.query_row(
        &format!("SELECT count(*) FROM vins WHERE {condition}"),
        [],
        |r| r.get(0),
    )?;
    Ok((vins, total))
}

/// The first rejected rows, with their reasons.
fn rejected_rows(conn: &Connection) -> Result<Vec<RejectedRow>, CheckpointError> {
    Ok(conn
        .prepare(&format!(
            "SELECT input_file, input_line, vin, message FROM vins WHERE state = 'rejected' ORDER BY id LIMIT {JSON_LIST}"
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

/// A list under a heading: its first `shown` entries of `total`, then how many more and where
/// they are.
fn push_list(
    o: &mut String,
    heading: String,
    lines: impl Iterator<Item = String>,
    shown: usize,
    total: i64,
    full: &str,
) {
    o.push_str(&heading);
    let mut n = 0;
    for l in lines.take(shown) {
        o.push_str(&format!("  {l}\n"));
        n += 1;
    }
    if total > n as i64 {
        o.push_str(&format!(
            "  … and {} more (all of them: {full})\n",
            total - n as i64
        ));
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
        if let Some(m) = &self.money {
            let p = crate::price::Price {
                per_call: m.price_per_call,
                currency: m.currency.clone(),
            };
            o.push_str(&format!(
                "spent: {} ({} billed calls at {} per call)",
                p.amount(m.spent),
                crate::price::count(m.billed_calls),
                p.per_call_text()
            ));
            if m.unknown_outcome_calls > 0 {
                o.push_str(&format!(
                    ", and up to {} more if the {} calls without an answer were billed",
                    p.amount(m.possibly_spent),
                    crate::price::count(m.unknown_outcome_calls)
                ));
            }
            o.push('\n');
        }
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
        if self.uncertain_total > 0 {
            // Every uncertain VIN the status holds is listed: each needs a decision.
            push_list(
                o,
                format!(
                    "{} uncertain VINs (a generate whose answer never arrived; the vendor may have billed it). Check the vendor's statement (`vmr export` writes every call to the calls table), then `vmr resolve --vin V --not-billed | --billed --request-id R | --abandon`, or send them again with --resubmit-uncertain:\n",
                    self.uncertain_total
                ),
                self.uncertain.iter().cloned(),
                JSON_LIST,
                self.uncertain_total,
                self.full_lists.uncertain,
            );
        }
        if self.billed_unusable_total > 0 {
            push_list(
                o,
                format!(
                    "{} VINs failed as billed_unusable (billed, but the answer held no usable report; its body is kept; not sent again automatically):\n",
                    self.billed_unusable_total
                ),
                self.billed_unusable.iter().cloned(),
                LIST,
                self.billed_unusable_total,
                self.full_lists.billed_unusable,
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
        push_list(
            o,
            format!("{} rejected rows (never sent):\n", self.rejected_total),
            self.rejected.iter().map(|r| {
                format!(
                    "{} line {}: {}",
                    r.input_file.as_deref().unwrap_or("?"),
                    r.line.unwrap_or(0),
                    r.reason.as_deref().unwrap_or("")
                )
            }),
            LIST,
            self.rejected_total,
            self.full_lists.rejected,
        );
    }
}
