//! Settling an uncertain VIN by hand, after reconciling with the vendor's statement.
//!
//! An `uncertain` VIN had a generate whose answer never arrived: the vendor may or may not have
//! billed it, and only its statement can say. Sending it again might buy it twice, so vmr never
//! does that on its own. `vmr resolve` records what the statement says instead: not billed (back
//! to the queue), billed under a requestId (pending: one get fetches the report already paid
//! for), or abandoned (final). Every resolution is kept in the checkpoint's `resolutions` table.

use crate::api::now_ms;
use crate::checkpoint::{Checkpoint, CheckpointError, Settled, Settlement, State};

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
pub(crate) fn resolve(
    ckpt: &Checkpoint,
    vin: &str,
    resolution: Resolution,
    note: Option<String>,
) -> Result<State, ResolveError> {
    let vin = vin.trim().to_uppercase();
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
    let to = resolution.target();
    let settlement = Settlement {
        action: resolution.action(),
        to,
        message,
        request_id: match resolution {
            Resolution::Billed { request_id } => Some(request_id),
            _ => None,
        },
        note,
        at: now_ms(),
    };
    match ckpt.settle_uncertain(vin.clone(), settlement)? {
        Settled::Moved => Ok(to),
        Settled::NoSuchVin => Err(ResolveError::NoSuchVin(vin)),
        Settled::NotUncertain(state) => Err(ResolveError::NotUncertain { vin, state }),
    }
}
