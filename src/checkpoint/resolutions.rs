//! Settling an uncertain VIN by hand (`vmr resolve`): the move and its record in `resolutions`,
//! in one transaction.

use super::state::Failure;
use super::{Checkpoint, CheckpointError, State, p};

/// One settlement of an uncertain VIN, as the vendor's statement decided it.
#[derive(Debug, Clone)]
pub(crate) struct Settlement {
    /// `not_billed`, `billed` or `abandon`, as `resolutions.action` keeps it.
    pub action: &'static str,
    /// The state the VIN goes to.
    pub to: State,
    /// The VIN's new message.
    pub message: String,
    /// For a billed call, its requestId: the VIN is due a get at once.
    pub request_id: Option<String>,
    pub note: Option<String>,
    pub at: i64,
}

/// What [`Checkpoint::settle_uncertain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Moved from `uncertain`.
    Moved,
    /// No such VIN (or only a rejected row of it).
    NoSuchVin,
    /// The VIN is in this state, not `uncertain`: left as it is.
    NotUncertain(State),
}

impl Checkpoint {
    /// Moves `vin` from `uncertain` as `s` says and records the settlement, in one transaction.
    pub(crate) fn settle_uncertain(
        &self,
        vin: String,
        s: Settlement,
    ) -> Result<Settled, CheckpointError> {
        self.writer().write_blocking(move |c| {
            let row: Option<(i64, String)> = c.query_opt(
                "SELECT id, state FROM vins WHERE vin = ?1 AND state <> 'rejected'",
                p![vin],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some((id, state)) = row else {
                return Ok(Settled::NoSuchVin);
            };
            let state: State = state.parse().map_err(CheckpointError::Commit)?;
            if state != State::Uncertain {
                return Ok(Settled::NotUncertain(state));
            }
            state.check(s.to, &vin)?;
            let failure = (s.to == State::Failed).then_some(Failure::Abandoned.as_str());
            c.execute(
                "UPDATE vins SET state = ?2, message = ?3,
                    completed_at = CASE WHEN ?2 = 'failed' THEN ?4 ELSE completed_at END,
                    failure = ?5
                 WHERE id = ?1",
                p![id, s.to.as_str(), s.message, s.at, failure],
            )?;
            if let Some(rid) = &s.request_id {
                // Due at once; the poll timeout counts from this settlement, since the time of
                // the lost call's billing is not known.
                c.execute(
                    "UPDATE vins SET request_id = ?2, accepted_at = ?3, next_poll_at = ?3,
                        poll_interval_ms = NULL
                     WHERE id = ?1",
                    p![id, rid, s.at],
                )?;
            }
            c.execute(
                "INSERT INTO resolutions (vin_id, at, action, request_id, note, from_state, to_state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![
                    id,
                    s.at,
                    s.action,
                    s.request_id,
                    s.note,
                    state.as_str(),
                    s.to.as_str()
                ],
            )?;
            Ok(Settled::Moved)
        })
    }
}
