//! How this process shares its checkpoint and its vendor account with other vmr processes:
//! alone (a state directory, which one process holds at a time), or as one of the workers of a
//! PostgreSQL checkpoint, which claims its VINs, shares the account's token bucket and a
//! `--run-id`'s budget. The engine asks a [`Sharing`] and never which backend it runs on; the
//! PostgreSQL side is compiled in only with the `pg` feature.

use super::{CheckpointError, Claim, Place};
use std::time::Duration;

/// What a worker is started with.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "pg"), allow(dead_code))]
pub(crate) struct WorkerSpec {
    pub command: String,
    /// The vendor account: the key of the shared token bucket.
    pub account: String,
    pub rate: u32,
    pub burst: u32,
    /// `--timeout`: the longest one call may take.
    pub timeout: Duration,
    /// `--run-id` and the budget it shares.
    pub budget: Option<(String, u64)>,
}

/// How this process shares the checkpoint and the account (see the module's documentation).
#[derive(Clone, Default)]
pub(crate) enum Sharing {
    /// No other process writes the checkpoint or calls from it: nothing to claim or share.
    #[default]
    Alone,
    /// One of the workers of a PostgreSQL checkpoint.
    #[cfg(feature = "pg")]
    Worker(std::sync::Arc<super::workers::Worker>),
}

/// Whether a call for one VIN may leave now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "pg"), allow(dead_code))]
pub(crate) enum Lease {
    /// Yes: the VIN is this process's, for longer than a call takes.
    Holds,
    /// No: this worker cannot renew its claims in time (the database is out of reach, or
    /// another worker took it for dead), so it sends nothing more.
    WorkerLost,
    /// No: this worker's claim on the VIN lapsed (it was paused), another may hold it now.
    VinLost,
}

impl Sharing {
    /// Joins the checkpoint at `place` for a run: alone in a state directory; in PostgreSQL as
    /// a new worker, registered with its heartbeat running.
    pub(crate) fn join(place: &Place, spec: WorkerSpec) -> Result<Sharing, CheckpointError> {
        match place {
            Place::Dir(_) => {
                let _ = spec;
                Ok(Sharing::Alone)
            }
            #[cfg(feature = "pg")]
            Place::Pg(loc) => Ok(Sharing::Worker(super::workers::Worker::start(loc, spec)?)),
        }
    }

    /// What to add to this machine's clock to read the checkpoint's (ms): 0 alone; for a
    /// worker, the database's clock, so every worker keeps deadlines and due times on one.
    pub(crate) fn clock_offset_ms(&self) -> i64 {
        match self {
            Sharing::Alone => 0,
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.clock_offset_ms(),
        }
    }

    /// This process's worker id, when it is one.
    pub(crate) fn worker_id(&self) -> Option<i64> {
        match self {
            Sharing::Alone => None,
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => Some(w.id),
        }
    }

    /// The claim this process's pages take: `None` alone, where nothing is claimed.
    pub(crate) fn claim(&self) -> Option<Claim> {
        match self {
            Sharing::Alone => None,
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => Some(Claim {
                worker: w.id,
                lease_ms: w.lease_ms(),
            }),
        }
    }

    /// Whether a call for `vin_id` may leave now.
    pub(crate) fn lease(&self, vin_id: i64) -> Lease {
        match self {
            Sharing::Alone => {
                let _ = vin_id;
                Lease::Holds
            }
            #[cfg(feature = "pg")]
            Sharing::Worker(w) if !w.lease_holds() => Lease::WorkerLost,
            #[cfg(feature = "pg")]
            Sharing::Worker(w) if !w.holds(vin_id) => Lease::VinLost,
            #[cfg(feature = "pg")]
            Sharing::Worker(_) => Lease::Holds,
        }
    }

    /// Records the VINs a page has just claimed for this process.
    pub(crate) fn hold(&self, vin_ids: impl IntoIterator<Item = i64>) {
        match self {
            Sharing::Alone => {
                let _ = vin_ids;
            }
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.hold(vin_ids),
        }
    }

    /// Lets go of a VIN whose task has ended.
    pub(crate) fn release(&self, vin_id: i64) -> Result<(), CheckpointError> {
        match self {
            Sharing::Alone => {
                let _ = vin_id;
                Ok(())
            }
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.release(vin_id),
        }
    }

    /// Whether the run's budget is shared with other workers (`--run-id`).
    pub(crate) fn shares_budget(&self) -> bool {
        match self {
            Sharing::Alone => false,
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.shares_budget(),
        }
    }

    /// Reserves one call against the shared budget, keeping `pending` gets aside for a generate
    /// (or as many as the whole checkpoint has pending, when more); `false` when it is spent.
    pub(crate) fn reserve(&self, generate: bool, pending: u64) -> Result<bool, CheckpointError> {
        match self {
            Sharing::Alone => {
                let _ = (generate, pending);
                Ok(false)
            }
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => {
                let extra = if generate {
                    (pending as i64).max(w.pending())
                } else {
                    0
                };
                w.reserve(extra)
            }
        }
    }

    /// Gives back a reservation of the shared budget whose call cost nothing.
    pub(crate) fn unreserve(&self) -> Result<(), CheckpointError> {
        match self {
            Sharing::Alone => Ok(()),
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.unreserve(),
        }
    }

    /// Whether the account's token bucket is shared (in the database) rather than this
    /// process's own.
    pub(crate) fn shares_bucket(&self) -> bool {
        match self {
            Sharing::Alone => false,
            #[cfg(feature = "pg")]
            Sharing::Worker(_) => true,
        }
    }

    /// Takes a token from the shared bucket: `None` when the call may leave, else how long to
    /// wait first. Alone there is no shared bucket: always `None`.
    pub(crate) fn take_token(&self) -> Result<Option<Duration>, CheckpointError> {
        match self {
            Sharing::Alone => Ok(None),
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.take_token(),
        }
    }

    /// Puts the shared bucket into debt for `wait` (the vendor asked the account to wait), so
    /// every worker pauses.
    pub(crate) fn pause_bucket(&self, wait: Duration) -> Result<(), CheckpointError> {
        match self {
            Sharing::Alone => {
                let _ = wait;
                Ok(())
            }
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.pause_bucket(wait),
        }
    }

    /// Ends this process's share: its claims settled and (a worker) its row removed. Blocking.
    pub(crate) fn retire(&self) -> Result<(), CheckpointError> {
        match self {
            Sharing::Alone => Ok(()),
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => w.retire(),
        }
    }

    /// The fence a write for one VIN must pass: none alone; for a worker, its claim. `own`:
    /// the VIN is this worker's own task's (else no other live claim may hold it).
    pub(super) fn fence(&self, own: bool) -> Option<super::update::Fence> {
        match self {
            Sharing::Alone => {
                let _ = own;
                None
            }
            #[cfg(feature = "pg")]
            Sharing::Worker(w) => Some(super::update::Fence {
                worker: w.id,
                lease_ms: w.lease_ms(),
                own,
            }),
        }
    }
}
