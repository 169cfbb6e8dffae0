//! The life of one VIN, as docs/design.md ("One VIN's life") draws it, in one type with one
//! transition function.
//!
//! Every state change in the checkpoint goes through [`State::check`], so an illegal move (a
//! `done` VIN polled again, a `rejected` row sent) is an error and never a silent write.

use std::fmt;
use std::str::FromStr;

/// Where one VIN is in its life, as the checkpoint's `state` column keeps it (in lower case).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Read from the input, not yet sent.
    Queued,
    /// A generate call is (or was) in flight; written before the request leaves.
    Submitting,
    /// A generate whose answer never arrived (the process died mid-call, a read timeout, a
    /// reset, a 2xx body that cannot be read): the vendor may have billed it. Sent again only
    /// with `--resubmit-uncertain`, or settled by `vmr resolve`.
    Uncertain,
    /// Generate succeeded; the report is to be fetched with get.
    Pending,
    /// The report is stored.
    Done,
    /// The vendor refused the VIN (a lone 400, 702, 703, 999), its billed answer held no
    /// usable report (`billed_unusable`), or a person abandoned it (`vmr resolve --abandon`).
    Failed,
    /// The report was not ready before the poll deadline.
    Expired,
    /// Bad input: never sent, never billed.
    Rejected,
}

pub(crate) const ALL: [State; 8] = [
    State::Queued,
    State::Submitting,
    State::Uncertain,
    State::Pending,
    State::Done,
    State::Failed,
    State::Expired,
    State::Rejected,
];

/// The `message` prefix of a `failed` VIN whose billed answer held no usable report (docs/design.md,
/// "Money rules", rule 7): the engine writes it, the re-buy queries, status and export look for it.
pub(crate) const BILLED_UNUSABLE: &str = "billed_unusable";

/// The SQL condition on `vins` that holds for a VIN failed as [`BILLED_UNUSABLE`].
pub(crate) fn billed_unusable_sql() -> String {
    format!(
        "state = 'failed' AND failure = '{}'",
        Failure::BilledUnusable.as_str()
    )
}

/// Why a `failed` VIN failed, as the checkpoint's `failure` column keeps it. Its message says
/// the same in words (a billed answer without a report starts with [`BILLED_UNUSABLE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The vendor refused the VIN: its code (a lone 400, 702, 703, 999...) is the VIN's code.
    #[default]
    Vendor,
    /// A billed answer held no usable report (never bought a third time).
    BilledUnusable,
    /// A person gave it up (`vmr resolve --abandon`).
    Abandoned,
}

impl Failure {
    /// The name the checkpoint's `failure` column keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Vendor => "vendor",
            Failure::BilledUnusable => BILLED_UNUSABLE,
            Failure::Abandoned => "abandoned",
        }
    }
}

/// An attempted move the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal state change for VIN {vin}: {from} -> {to}")]
pub struct IllegalTransition {
    /// The VIN.
    pub vin: String,
    /// The state it is in.
    pub from: State,
    /// The state it was to move to.
    pub to: State,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Submitting => "submitting",
            State::Uncertain => "uncertain",
            State::Pending => "pending",
            State::Done => "done",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Rejected => "rejected",
        }
    }

    /// No further work will happen for a VIN in a final state.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            State::Done | State::Failed | State::Expired | State::Rejected
        )
    }

    /// Whether a new purchase of the VIN may start from here (a refresh of a `done` VIN, a retry
    /// of a `failed` or `expired` one). This is not a move of the purchase: that one stays as it
    /// ended, and the new purchase starts at `queued` (docs/design.md, "Purchases and versions").
    /// Never from a purchase still under way, nor for a rejected row.
    pub(crate) fn can_rebuy(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Expired)
    }

    /// Whether `self -> to` is a legal move.
    pub(crate) fn can_go(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Queued, Submitting)
                | (Uncertain, Submitting)
                // `vmr resolve`: the vendor's statement says not billed, billed (with the
                // requestId to fetch), or the person gives the VIN up.
                | (Uncertain, Queued)
                | (Uncertain, Pending)
                | (Uncertain, Failed)
                // A lone 400 is the VIN's fault once a later call of the run succeeds.
                | (Queued, Failed)
                // Not billed (retries used up, a stop before sending, a 400): back in the queue.
                | (Submitting, Queued)
                | (Submitting, Pending)
                | (Submitting, Done)
                | (Submitting, Failed)
                | (Submitting, Uncertain)
                | (Pending, Done)
                | (Pending, Failed)
                | (Pending, Expired)
                // `vmr poll --retry-expired`: the report already paid for is asked for again by
                // its requestId (a 701 costs nothing), instead of bought again.
                | (Expired, Pending)
        )
    }

    /// Checks a move for `vin`.
    pub(crate) fn check(self, to: State, vin: &str) -> Result<(), IllegalTransition> {
        if self.can_go(to) {
            Ok(())
        } else {
            Err(IllegalTransition {
                vin: vin.to_owned(),
                from: self,
                to,
            })
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown VIN state {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    #[test]
    fn legal_and_illegal_transitions() {
        let legal = [
            (Queued, Submitting),
            (Uncertain, Submitting),
            (Uncertain, Queued),
            (Uncertain, Pending),
            (Uncertain, Failed),
            (Queued, Failed),
            (Submitting, Queued),
            (Submitting, Pending),
            (Submitting, Done),
            (Submitting, Failed),
            (Submitting, Uncertain),
            (Pending, Done),
            (Pending, Failed),
            (Pending, Expired),
            (Expired, Pending),
        ];
        for from in ALL {
            for to in ALL {
                let want = legal.contains(&(from, to));
                assert_eq!(from.can_go(to), want, "{from} -> {to}");
                assert_eq!(from.check(to, "V").is_ok(), want);
            }
        }
    }

    #[test]
    fn final_states_have_no_way_out_but_asking_an_expired_report_again() {
        for s in ALL.into_iter().filter(|s| s.is_final()) {
            for to in ALL {
                assert_eq!(s.can_go(to), (s, to) == (Expired, Pending), "{s} -> {to}");
            }
        }
    }

    #[test]
    fn only_finished_purchases_may_be_bought_again() {
        let rebuyable: Vec<State> = ALL.into_iter().filter(|s| s.can_rebuy()).collect();
        assert_eq!(rebuyable, vec![Done, Failed, Expired]);
    }

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(s.as_str().parse::<State>(), Ok(s));
        }
        assert!("nope".parse::<State>().is_err());
    }
}
