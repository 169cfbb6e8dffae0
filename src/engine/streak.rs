//! Telling an account or vendor problem from a VIN's: the two streaks a run watches.
//!
//! One 400 is usually the VIN's (a bad image URL), but a run of them with no real answer in
//! between points at the sign, the secret or the clock, which would fail every VIN of the batch
//! for nothing. Likewise one 500 is a blip, but many calls in a row with no usable answer is a
//! maintenance window. [`Streaks`] sees every call's outcome in the order calls land and says
//! when the run must stop, and which VINs a lone 400 has really failed.

use std::sync::Mutex;

use crate::api::Outcome;

/// What the streaks conclude from one call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to do.
    Carry,
    /// A real answer came after lone 400s: these VINs' 400s were their own; fail them.
    FailParked(Vec<i64>),
    /// `n` 400s in a row: stop the run, the credentials or clock are wrong.
    BadCredentials { streak: u32 },
    /// `n` calls in a row without a usable answer: stop the run, the vendor is unavailable.
    Unavailable { streak: u32 },
}

#[derive(Default)]
struct Inner {
    bad_requests: u32,
    no_answer: u32,
    /// VINs whose generate got a 400 and went back to the queue, awaiting a verdict.
    parked: Vec<i64>,
    tripped: bool,
}

/// The run's two streaks (shared by all its tasks).
pub(crate) struct Streaks {
    bad_request_limit: u32,
    unavailable_after: u32,
    inner: Mutex<Inner>,
}

impl Streaks {
    pub(crate) fn new(bad_request_limit: u32, unavailable_after: u32) -> Streaks {
        Streaks {
            bad_request_limit: bad_request_limit.max(1),
            unavailable_after: unavailable_after.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one landed call's outcome (`code` is the vendor code of a 2xx answer).
    pub(crate) fn observe(&self, outcome: &Outcome, code: Option<i64>) -> Verdict {
        let mut s = self.inner();
        if outcome.is_transient() {
            s.no_answer += 1;
            if s.no_answer >= self.unavailable_after {
                return Verdict::Unavailable {
                    streak: s.no_answer,
                };
            }
            return Verdict::Carry;
        }
        s.no_answer = 0;
        if matches!(outcome, Outcome::BadRequest { .. }) {
            s.bad_requests += 1;
            if s.bad_requests >= self.bad_request_limit {
                // The streak's VINs stay queued: their 400s were the account's, not theirs.
                s.tripped = true;
                s.parked.clear();
                return Verdict::BadCredentials {
                    streak: s.bad_requests,
                };
            }
            return Verdict::Carry;
        }
        if outcome.is_vendor_verdict(code) {
            s.bad_requests = 0;
            if !s.parked.is_empty() && !s.tripped {
                return Verdict::FailParked(std::mem::take(&mut s.parked));
            }
        }
        Verdict::Carry
    }

    /// Parks a VIN whose generate got a 400 (already back in the queue) until a later real
    /// answer shows the 400 was the VIN's own.
    pub(crate) fn park(&self, vin_id: i64) {
        let mut s = self.inner();
        if !s.tripped {
            s.parked.push(vin_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::outcome::Delivery;

    fn bad() -> Outcome {
        Outcome::BadRequest {
            message: "签名错误".into(),
        }
    }
    fn ok() -> Outcome {
        Outcome::Accepted {
            request_id: "r".into(),
        }
    }
    fn down() -> Outcome {
        Outcome::Transient {
            http_status: Some(503),
            code: None,
            detail: "HTTP 503".into(),
            delivery: Delivery::NotBilled,
            retry_after: None,
        }
    }

    #[test]
    fn a_run_of_400s_trips_and_keeps_the_vins_queued() {
        let s = Streaks::new(5, 20);
        for i in 0..4 {
            assert_eq!(s.observe(&bad(), Some(400)), Verdict::Carry);
            s.park(i);
        }
        assert_eq!(
            s.observe(&bad(), Some(400)),
            Verdict::BadCredentials { streak: 5 }
        );
        s.park(4);
        // A late success after the trip fails nobody.
        assert_eq!(s.observe(&ok(), Some(200)), Verdict::Carry);
    }

    #[test]
    fn a_lone_400_fails_its_vin_once_a_later_call_succeeds() {
        let s = Streaks::new(5, 20);
        assert_eq!(s.observe(&bad(), Some(400)), Verdict::Carry);
        s.park(7);
        // Transient faults and other codes neither fail it nor end the streak.
        assert_eq!(s.observe(&down(), None), Verdict::Carry);
        let f999 = Outcome::Fail {
            code: 999,
            message: String::new(),
        };
        assert_eq!(s.observe(&f999, Some(999)), Verdict::Carry);
        assert_eq!(s.observe(&ok(), Some(200)), Verdict::FailParked(vec![7]));
        // The streak restarted: four more 400s do not trip it.
        for _ in 0..4 {
            assert_eq!(s.observe(&bad(), Some(400)), Verdict::Carry);
        }
        let nr = Outcome::NotReady {
            message: String::new(),
        };
        assert_eq!(s.observe(&nr, Some(701)), Verdict::Carry);
        for _ in 0..4 {
            assert_eq!(s.observe(&bad(), Some(400)), Verdict::Carry);
        }
    }

    #[test]
    fn calls_without_an_answer_in_a_row_mean_the_vendor_is_down() {
        let s = Streaks::new(5, 3);
        assert_eq!(s.observe(&down(), None), Verdict::Carry);
        assert_eq!(s.observe(&down(), None), Verdict::Carry);
        assert_eq!(s.observe(&ok(), Some(200)), Verdict::Carry);
        assert_eq!(s.observe(&down(), None), Verdict::Carry);
        assert_eq!(s.observe(&down(), None), Verdict::Carry);
        assert_eq!(s.observe(&down(), None), Verdict::Unavailable { streak: 3 });
    }
}
