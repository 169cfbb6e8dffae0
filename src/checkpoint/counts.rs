//! Counts over the checkpoint (VINs per state, calls per endpoint) and the account it is bound
//! to.

use super::{Checkpoint, CheckpointError, Conn, State, p, state};
use serde::Serialize;
use std::collections::BTreeMap;

/// Number of VINs per state (every state present, zero included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct StateCounts(BTreeMap<State, i64>);

impl StateCounts {
    pub(crate) fn get(&self, state: State) -> i64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    /// VINs in any of `states`.
    pub(crate) fn sum(&self, states: &[State]) -> i64 {
        states.iter().map(|s| self.get(*s)).sum()
    }

    /// VINs with work left (not in a final state).
    pub(crate) fn open(&self) -> i64 {
        self.0
            .iter()
            .filter(|(s, _)| !s.is_final())
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn total(&self) -> i64 {
        self.0.values().sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (State, i64)> + '_ {
        self.0.iter().map(|(s, n)| (*s, *n))
    }
}

pub(crate) fn state_counts(conn: &Conn) -> Result<StateCounts, CheckpointError> {
    let mut out: BTreeMap<State, i64> = state::ALL.iter().map(|s| (*s, 0)).collect();
    let rows = conn.query_map(
        "SELECT state, count(*) FROM vins GROUP BY state",
        p![],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
    )?;
    for (s, n) in rows {
        let s: State = s.parse().map_err(CheckpointError::Commit)?;
        out.insert(s, n);
    }
    Ok(StateCounts(out))
}

/// A live worker of a PostgreSQL checkpoint (`reaping::live`), as `vmr status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerRow {
    pub id: i64,
    pub host: String,
    pub pid: i64,
    pub command: String,
    pub run_id: Option<String>,
    pub rate: i64,
    pub started_at_ms: i64,
    pub heartbeat_age_ms: i64,
    /// VINs it holds claimed now.
    pub claimed: i64,
}

/// Calls made and billed, per endpoint.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct CallCounts {
    pub calls: i64,
    pub billed: i64,
    /// Sent, but no usable answer came back: may have been billed.
    pub unknown_outcome: i64,
    pub not_sent: i64,
}

pub(crate) fn call_counts(conn: &Conn) -> Result<BTreeMap<String, CallCounts>, CheckpointError> {
    let mut out = BTreeMap::new();
    for ep in ["generate", "get"] {
        out.insert(ep.to_owned(), CallCounts::default());
    }
    let rows = conn.query_map(
        "SELECT endpoint, count(*), CAST(sum(billed) AS BIGINT),
            CAST(sum(CASE WHEN delivery = 'unknown' THEN 1 ELSE 0 END) AS BIGINT),
            CAST(sum(CASE WHEN delivery = 'not_sent' THEN 1 ELSE 0 END) AS BIGINT)
         FROM calls GROUP BY endpoint",
        p![],
        |r| {
            Ok((
                r.get::<String>(0)?,
                CallCounts {
                    calls: r.get(1)?,
                    billed: r.get::<Option<i64>>(2)?.unwrap_or(0),
                    unknown_outcome: r.get::<Option<i64>>(3)?.unwrap_or(0),
                    not_sent: r.get::<Option<i64>>(4)?.unwrap_or(0),
                },
            ))
        },
    )?;
    for (ep, c) in rows {
        out.insert(ep, c);
    }
    Ok(out)
}

/// The vendor account the checkpoint belongs to, once bound.
pub(crate) fn account(conn: &Conn) -> Result<Option<String>, CheckpointError> {
    conn.query_opt("SELECT value FROM meta WHERE key = 'account'", p![], |r| {
        r.get(0)
    })
}

/// Whether any vendor call was ever recorded.
pub(crate) fn has_calls(conn: &Conn) -> Result<bool, CheckpointError> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM calls)", p![], |r| r.get(0))
}

impl Checkpoint {
    /// Binds the checkpoint to `account` (idempotent).
    pub(crate) fn bind_account(&self, account: &str) -> Result<(), CheckpointError> {
        let account = account.to_owned();
        self.writer.write_blocking(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('account', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                p![account],
            )?;
            Ok(())
        })
    }
}
