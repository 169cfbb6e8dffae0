//! Settling an uncertain VIN by hand, after reconciling with the vendor's statement.
//!
//! An `uncertain` VIN had a generate whose answer never arrived: the vendor may or may not have
//! billed it, and only its statement can say. Sending it again might buy it twice, so vmr never
//! does that on its own. `vmr resolve` records what the statement says instead: not billed (back
//! to the queue), billed under a requestId (pending: one get fetches the report already paid
//! for), or abandoned (final). Every resolution is kept in the checkpoint's `resolutions` table.

use crate::api::now_ms;
use crate::checkpoint::{Checkpoint, CheckpointError, State, p};

/// What the vendor's statement says about an uncertain VIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The lost call was not billed: send the VIN again with the next submit.
    NotBilled,
    /// The lost call was billed and issued this requestId: fetch its report with get.
    Billed { request_id: String },
    /// Give the VIN up for good.
    Abandon,
}

impl Resolution {
    fn action(&self) -> &'static str {
        match self {
            Resolution::NotBilled => "not_billed",
            Resolution::Billed { .. } => "billed",
            Resolution::Abandon => "abandon",
        }
    }

    fn target(&self) -> State {
        match self {
            Resolution::NotBilled => State::Queued,
            Resolution::Billed { .. } => State::Pending,
            Resolution::Abandon => State::Failed,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("VIN {0} is not in the checkpoint")]
    NoSuchVin(String),
    #[error(
        "VIN {vin} is {state}, not uncertain: only a VIN whose generate may have been billed without an answer is resolved by hand"
    )]
    NotUncertain { vin: String, state: State },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Records `resolution` for `vin` (trimmed, upper-cased) and moves it; returns the new state.
///
/// Long on purpose: the check, the move and its record are one transaction, written as one
/// closure for the checkpoint's writer.
pub(crate) fn resolve(
    ckpt: &Checkpoint,
    vin: &str,
    resolution: Resolution,
    note: Option<String>,
) -> Result<State, ResolveError> {
    let vin = vin.trim().to_uppercase();
    ckpt.writer().write_blocking({
        let vin = vin.clone();
        move |c| {
            let row: Option<(i64, String)> = c.query_opt(
                "SELECT id, state FROM vins WHERE vin = ?1 AND state <> 'rejected'",
                p![vin],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some((id, state)) = row else {
                return Ok(Err(ResolveError::NoSuchVin(vin)));
            };
            let state: State = state.parse().map_err(CheckpointError::Commit)?;
            if state != State::Uncertain {
                return Ok(Err(ResolveError::NotUncertain { vin, state }));
            }
            let to = resolution.target();
            state.check(to, &vin)?;
            let now = now_ms();
            let message = match (&resolution, &note) {
                (Resolution::NotBilled, _) => {
                    "resolved: not billed (vendor statement); queued to be sent again".to_owned()
                }
                (Resolution::Billed { request_id }, _) => format!(
                    "resolved: billed as requestId {request_id} (vendor statement); its report is fetched by the next poll"
                ),
                (Resolution::Abandon, Some(n)) => format!("abandoned: {n}"),
                (Resolution::Abandon, None) => "abandoned by hand after reconciliation".to_owned(),
            };
            c.execute(
                "UPDATE vins SET state = ?2, message = ?3,
                    completed_at = CASE WHEN ?2 = 'failed' THEN ?4 ELSE completed_at END
                 WHERE id = ?1",
                p![id, to.as_str(), message, now],
            )?;
            let mut request_id = None;
            if let Resolution::Billed { request_id: rid } = &resolution {
                // Due at once; the poll timeout counts from this settlement, since the time of
                // the lost call's billing is not known.
                c.execute(
                    "UPDATE vins SET request_id = ?2, accepted_at = ?3, next_poll_at = ?3,
                        poll_interval_ms = NULL
                     WHERE id = ?1",
                    p![id, rid, now],
                )?;
                request_id = Some(rid.clone());
            }
            c.execute(
                "INSERT INTO resolutions (vin_id, at, action, request_id, note, from_state, to_state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![
                    id,
                    now,
                    resolution.action(),
                    request_id,
                    note,
                    state.as_str(),
                    to.as_str()
                ],
            )?;
            Ok(Ok(to))
        }
    })?
}
