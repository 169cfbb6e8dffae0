//! The sandbox's books: what it billed, per VIN and endpoint, and the remaining balance.
//!
//! vmr's first promise is "never pay twice for a report", so tests need the vendor's side of the
//! account to compare against. Only code-200 answers are billed. Billing and the balance check
//! happen under one lock, so with a balance of N exactly N calls are billed however many
//! clients race for the last one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Billed calls for one VIN, per endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VinLedger {
    pub generate: u64,
    pub get: u64,
}

/// A snapshot of the sandbox's books (`GET /__sandbox/ledger`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Every billed call: `generate_billed + get_billed`.
    pub billed_total: u64,
    pub generate_billed: u64,
    pub get_billed: u64,
    /// Every call that reached a vendor endpoint, whatever its answer (faults included).
    pub calls_total: u64,
    /// Calls answered with an injected fault (never billed).
    pub faults: u64,
    pub per_vin: BTreeMap<String, VinLedger>,
}

/// Which endpoint a call was made to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Generate,
    Get,
}

/// The ledger plus the remaining balance.
#[derive(Debug, Default)]
pub struct Books {
    pub ledger: Ledger,
    /// Billable calls left; `None` is unlimited.
    pub remaining: Option<u64>,
}

impl Books {
    pub fn new(balance: Option<u64>) -> Self {
        Books {
            ledger: Ledger::default(),
            remaining: balance,
        }
    }

    /// Whether the balance is used up (every call then answers 603).
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Bills one call for `vin`, or returns `false` (answer 603, bill nothing) when the balance
    /// is used up.
    pub fn try_bill(&mut self, endpoint: Endpoint, vin: &str) -> bool {
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
                get: 1
            }
        );
    }
}
