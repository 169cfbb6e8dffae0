//! The sandbox's books: what it billed, per VIN and endpoint, and the remaining balance.
//!
//! vmr's first promise is "never pay twice for a report", so tests need the vendor's side of the
//! account to compare against. Only code-200 answers are billed, including the ones the client
//! may never see or cannot use (late and unusable answers), which the ledger counts apart so a
//! test can tell, per VIN, what the client was charged for. Billing and the balance check happen
//! under one lock, so with a balance of N exactly N calls are billed however many clients race
//! for the last one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Billed calls for one VIN, per endpoint, and how many of them the client could not have seen
/// or used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VinLedger {
    /// Billed generates (late and unusable ones included).
    pub generate: u64,
    /// Billed gets (late ones included).
    pub get: u64,
    /// Billed generates answered only after the stall (`late_bill_rate`).
    pub late_generate: u64,
    /// Billed gets answered only after the stall (`late_bill_rate` with `late_bill_get`).
    pub late_get: u64,
    /// The requestIds of the late generates, in order: the tasks exist, so a get with one works.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub late_request_ids: Vec<String>,
    /// Billed generates answered with `data: {}` (`unusable_rate`): no requestId, no report.
    pub unusable: u64,
    /// Billed generates answered HTTP 504 by the gateway (`gateway_504_rate`).
    pub gateway_504_generate: u64,
    /// Billed gets answered HTTP 504 by the gateway (`gateway_504_rate`).
    pub gateway_504_get: u64,
}

/// A snapshot of the sandbox's books (`GET /__sandbox/ledger`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    /// Every billed call: `generate_billed + get_billed`.
    pub billed_total: u64,
    /// Billed generate calls.
    pub generate_billed: u64,
    /// Billed get calls.
    pub get_billed: u64,
    /// Every call that reached a vendor endpoint, whatever its answer (faults included).
    pub calls_total: u64,
    /// Calls answered with an injected fault (never billed).
    pub faults: u64,
    /// Billed calls whose answer was held for the stall (`late_bill_rate`); part of
    /// `billed_total`.
    pub late_billed: u64,
    /// Billed generates answered `data: {}` (`unusable_rate`); part of `billed_total`.
    pub unusable: u64,
    /// Calls answered HTTP 503/429 by the gateway (`gateway_error_rate`; never billed).
    pub gateway_errors: u64,
    /// Calls answered code 500 during an outage (never billed).
    pub outage_answers: u64,
    /// Calls answered HTTP 429 with `Retry-After` inside a throttle window (`throttle_every`;
    /// never billed).
    pub throttled: u64,
    /// The throttle windows in the order they opened: how many calls each refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub throttle_windows: Vec<u64>,
    /// Billed calls answered HTTP 504 by the gateway (`gateway_504_rate`); part of
    /// `billed_total`.
    pub gateway_504: u64,
    /// Billed answers whose body is not strict JSON (`raw_body_rate`); part of `billed_total`.
    pub raw_bodies: u64,
    /// Each billed VIN's own books, by VIN.
    pub per_vin: BTreeMap<String, VinLedger>,
}

pub use crate::api::Endpoint;

/// The ledger plus the remaining balance.
#[derive(Debug, Default)]
pub(crate) struct Books {
    pub ledger: Ledger,
    /// Billable calls left; `None` is unlimited.
    pub remaining: Option<u64>,
}

impl Books {
    pub(crate) fn new(balance: Option<u64>) -> Self {
        Books {
            ledger: Ledger::default(),
            remaining: balance,
        }
    }

    /// Whether the balance is used up (every call then answers 603).
    pub(crate) fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Bills one call for `vin`, or returns `false` (answer 603, bill nothing) when the balance
    /// is used up.
    pub(crate) fn try_bill(&mut self, endpoint: Endpoint, vin: &str) -> bool {
        match &mut self.remaining {
            Some(0) => return false,
            Some(n) => *n -= 1,
            None => {}
        }
        let l = &mut self.ledger;
        l.billed_total += 1;
        let per = l.per_vin.entry(vin.to_owned()).or_default();
        match endpoint {
            Endpoint::Generate => {
                l.generate_billed += 1;
                per.generate += 1;
            }
            Endpoint::Get => {
                l.get_billed += 1;
                per.get += 1;
            }
        }
        true
    }

    /// Records that the billed call for `vin` just made will be answered only after the stall.
    pub(crate) fn mark_late(&mut self, endpoint: Endpoint, vin: &str, request_id: Option<&str>) {
        let l = &mut self.ledger;
        l.late_billed += 1;
        let per = l.per_vin.entry(vin.to_owned()).or_default();
        match endpoint {
            Endpoint::Generate => {
                per.late_generate += 1;
                per.late_request_ids.extend(request_id.map(str::to_owned));
            }
            Endpoint::Get => per.late_get += 1,
        }
    }

    /// Records that the billed call for `vin` just made is answered HTTP 504.
    pub(crate) fn mark_504(&mut self, endpoint: Endpoint, vin: &str) {
        self.ledger.gateway_504 += 1;
        let per = self.ledger.per_vin.entry(vin.to_owned()).or_default();
        match endpoint {
            Endpoint::Generate => per.gateway_504_generate += 1,
            Endpoint::Get => per.gateway_504_get += 1,
        }
    }

    /// Records that the billed generate for `vin` just made is answered without a requestId.
    pub(crate) fn mark_unusable(&mut self, vin: &str) {
        self.ledger.unusable += 1;
        self.ledger
            .per_vin
            .entry(vin.to_owned())
            .or_default()
            .unusable += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_bills_exactly_n() {
        let mut b = Books::new(Some(2));
        assert!(b.try_bill(Endpoint::Generate, "A"));
        assert!(b.try_bill(Endpoint::Get, "A"));
        assert!(!b.try_bill(Endpoint::Get, "A"));
        assert!(b.exhausted());
        assert_eq!(b.ledger.billed_total, 2);
        assert_eq!(
            b.ledger.per_vin["A"],
            VinLedger {
                generate: 1,
                get: 1,
                ..VinLedger::default()
            }
        );
    }

    #[test]
    fn late_and_unusable_are_counted_per_vin() {
        let mut b = Books::new(None);
        assert!(b.try_bill(Endpoint::Generate, "A"));
        b.mark_late(Endpoint::Generate, "A", Some("r1"));
        assert!(b.try_bill(Endpoint::Generate, "B"));
        b.mark_unusable("B");
        assert!(b.try_bill(Endpoint::Get, "A"));
        b.mark_late(Endpoint::Get, "A", None);
        let l = &b.ledger;
        assert_eq!((l.billed_total, l.late_billed, l.unusable), (3, 2, 1));
        assert_eq!(l.per_vin["A"].late_generate, 1);
        assert_eq!(l.per_vin["A"].late_get, 1);
        assert_eq!(l.per_vin["A"].late_request_ids, ["r1"]);
        assert_eq!(l.per_vin["B"].unusable, 1);
        assert_eq!(l.per_vin["B"].late_generate, 0);
        let json = serde_json::to_string(l).expect("serializes");
        assert_eq!(serde_json::from_str::<Ledger>(&json).expect("parses"), *l);
    }
}
