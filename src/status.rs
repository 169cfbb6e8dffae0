//! Status: what the checkpoint says, for people and for scripts.
//!
//! Read-only and lock-free (a WAL reader), so it works while another vmr is running: counts per
//! state, calls and billed calls per endpoint, the uncertain VINs (possibly billed, not
//! resubmitted unless asked), rejected rows with reasons, when the next poll is due, and how the
//! last run ended.

use crate::checkpoint::Conn;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::checkpoint::{self, CallCounts, CheckpointError, RejectedRow, WorkerRow};

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

/// One input file (batch) and how fresh its reports are.
#[derive(Debug, Serialize)]
pub(crate) struct BatchStatus {
    pub batch_id: String,
    pub input_file: String,
    /// RFC 3339 time the file was first ingested.
    pub first_seen_at: String,
    /// Accepted rows' VINs in the file (a VIN first read from another file counted too).
    pub vins: i64,
    /// Of those, VINs with a report (any version).
    pub with_report: i64,
    /// VINs with a report that is not due for refresh (all of `with_report` without
    /// `--refresh-older-than`).
    pub reports_current: i64,
    /// VINs a refresh under `--refresh-older-than` would buy again now: `done`, the latest
    /// report fetched longer ago than that; null without the option.
    pub due_for_refresh: Option<i64>,
    /// RFC 3339 time the oldest of the VINs' latest reports was fetched; null without reports.
    pub oldest_report_at: Option<String>,
    /// Its age in seconds, at the time of the status.
    pub oldest_report_age_secs: Option<i64>,
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
    /// `--refresh-older-than` as given to this status (`90d`), null without it.
    pub refresh_older_than: Option<String>,
    /// The input files, newest first: the first [`JSON_LIST`].
    pub batches: Vec<BatchStatus>,
    pub batches_total: i64,
    /// What the billed calls cost, every run and every purchase: null without `--price`.
    pub money: Option<crate::price::Spent>,
    /// The live workers of a PostgreSQL checkpoint; null for a state directory.
    pub workers: Option<Vec<WorkerRow>>,
}

/// An age as people say it: `90d`, `3d 4h`, `5h 12m`, `42s`.
fn age_text(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m {}s", secs % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) if secs.is_multiple_of(86_400) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
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
    conn: &Conn,
    path: &str,
    writer_running: bool,
    refresh_older_than: Option<std::time::Duration>,
) -> Result<Status, CheckpointError> {
    let states = checkpoint::state_counts(conn)?;
    let calls = checkpoint::call_counts(conn)?;
    let workers = checkpoint::live_workers(conn)?;
    let (uncertain, uncertain_total) = checkpoint::uncertain_vins(conn, writer_running, JSON_LIST)?;
    let (billed_unusable, billed_unusable_total) =
        checkpoint::billed_unusable_vins(conn, JSON_LIST)?;
    let input = checkpoint::input_totals(conn)?;
    let (reports_stored, _) = checkpoint::reports_stored(conn)?;
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
        rejected: checkpoint::rejected_rows(conn, JSON_LIST)?,
        list_limit: JSON_LIST,
        full_lists: FULL_LISTS,
        duplicates: input.duplicates,
        check_digit_warnings: input.check_digit_warnings,
        next_poll_due: checkpoint::next_poll_due(conn)?.map(rfc3339),
        last_run: checkpoint::last_run(conn)?.map(|r| LastRun {
            command: r.command,
            started_at: rfc3339(r.started_at),
            ended_at: r.ended_at.map(rfc3339),
            exit_code: r.exit_code,
            outcome: r.outcome,
        }),
        refresh_older_than: refresh_older_than.map(|d| age_text(d.as_secs())),
        batches: batches(conn, refresh_older_than, crate::api::now_ms())?,
        batches_total: input.batches,
        money: None,
        workers,
    })
}

/// The first [`JSON_LIST`] input files, newest first, with the freshness of their reports at
/// `now` (ms); `refresh` is `--refresh-older-than`, when given.
fn batches(
    conn: &Conn,
    refresh: Option<std::time::Duration>,
    now: i64,
) -> Result<Vec<BatchStatus>, CheckpointError> {
    let mut out = Vec::new();
    for b in checkpoint::batches(conn, JSON_LIST)? {
        let (id, input_file, first_seen) = (b.id, b.input_file, b.first_seen_at);
        let fresh = checkpoint::batch_freshness(conn, &id)?;
        let (vins, with_report, oldest) = (fresh.vins, fresh.with_report, fresh.oldest);
        let due = match refresh {
            Some(age) => {
                let rebuy = checkpoint::Rebuy {
                    batch: Some(id.clone()),
                    refresh_before: Some(now.saturating_sub(age.as_millis() as i64)),
                    ..checkpoint::Rebuy::default()
                };
                Some(checkpoint::rebuy_counts(conn, &rebuy)?.refresh)
            }
            None => None,
        };
        out.push(BatchStatus {
            batch_id: id,
            input_file,
            first_seen_at: rfc3339(first_seen),
            vins,
            with_report,
            reports_current: with_report - due.unwrap_or(0),
            due_for_refresh: due,
            oldest_report_at: oldest.map(rfc3339),
            oldest_report_age_secs: oldest.map(|t| ((now - t) / 1000).max(0)),
        });
    }
    Ok(out)
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
    pub(crate) fn render(&self) -> String {
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
        self.render_batches(&mut o);
        if let Some(t) = &self.next_poll_due {
            o.push_str(&format!("next poll due: {t}\n"));
        }
        if let Some(ws) = &self.workers {
            o.push_str(&format!("workers: {} live\n", ws.len()));
            for w in ws {
                o.push_str(&format!(
                    "  worker {} on {} pid {}: {}, rate {}, {} VINs claimed, heartbeat {} ago{}\n",
                    w.id,
                    w.host,
                    w.pid,
                    w.command,
                    w.rate,
                    w.claimed,
                    age_text((w.heartbeat_age_ms.max(0) / 1000) as u64),
                    w.run_id
                        .as_deref()
                        .map(|r| format!(", budget of run {r}"))
                        .unwrap_or_default()
                ));
            }
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

    /// Per input file: its VINs, reports, how many are due for refresh, the oldest report.
    fn render_batches(&self, o: &mut String) {
        for b in self.batches.iter().take(LIST) {
            o.push_str(&format!(
                "input {} (first read {}): {} VINs, {} with a report",
                b.input_file, b.first_seen_at, b.vins, b.with_report
            ));
            if let (Some(due), Some(age)) = (b.due_for_refresh, &self.refresh_older_than) {
                o.push_str(&format!(
                    ", {} current, {due} due for refresh (older than {age})",
                    b.reports_current
                ));
            }
            if let Some(secs) = b.oldest_report_age_secs {
                o.push_str(&format!("; oldest report {} old", age_text(secs as u64)));
            }
            o.push('\n');
        }
        if self.batches_total > LIST as i64 {
            o.push_str(&format!(
                "  … and {} more input files (vmr status --json lists {JSON_LIST})\n",
                self.batches_total - LIST as i64
            ));
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
