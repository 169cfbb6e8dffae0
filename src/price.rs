//! Money: what billed calls cost, once the user gives a price per billed call (`--price`,
//! `VMR_PRICE`, `price` in vmr.toml; `currency` only labels it). Without a price vmr says
//! nothing about money.
//!
//! The vendor bills every code-200 answer the same, generate or get, so every count of billed
//! calls becomes an amount by one multiplication. `--max-spend` is turned into the number of
//! billed calls it pays for, and from there follows `--max-billed`'s admission rule exactly.

use serde::Serialize;

/// The price of one billed call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Price {
    /// Per billed call.
    pub per_call: f64,
    /// A label only (`CNY` unless set); nothing is converted.
    pub currency: String,
}

impl Price {
    /// Checks a price given by the user.
    pub(crate) fn new(per_call: f64, currency: Option<String>) -> Result<Price, String> {
        if !per_call.is_finite() || per_call <= 0.0 {
            return Err(format!(
                "--price {per_call} is not a price: give what one billed call costs, more than 0 (like 2.5)"
            ));
        }
        let currency = currency
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "CNY".to_owned());
        Ok(Price { per_call, currency })
    }

    /// What `calls` billed calls cost.
    pub fn cost(&self, calls: u64) -> f64 {
        calls as f64 * self.per_call
    }

    /// How many billed calls `amount` pays for (rounded down; a hair of float error forgiven).
    pub fn calls_for(&self, amount: f64) -> u64 {
        ((amount / self.per_call) + 1e-9).floor().max(0.0) as u64
    }

    /// An exact amount: `1,234.50 CNY`.
    pub fn amount(&self, x: f64) -> String {
        format!("{} {}", group(x, 2), self.currency)
    }

    /// An estimate, to the unit: `about 52,750 CNY`.
    pub fn about(&self, x: f64) -> String {
        format!("about {} {}", group(x, 0), self.currency)
    }

    /// The price per call as written in sentences: `2.50`, or more decimals when it has them.
    pub fn per_call_text(&self) -> String {
        let cents = self.per_call * 100.0;
        if (cents - cents.round()).abs() < 1e-9 {
            group(self.per_call, 2)
        } else {
            let s = format!("{:.6}", self.per_call);
            s.trim_end_matches('0').to_owned()
        }
    }
}

/// `x` with `decimals` decimals and a comma between thousands: `52,750.00`.
pub fn group(x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.abs());
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w.to_owned(), Some(f.to_owned())),
        None => (text.clone(), None),
    };
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(&f);
    }
    if x < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

/// A whole count with commas between thousands: `12,400`.
pub fn count(n: u64) -> String {
    group(n as f64, 0)
}

/// Billed calls and what they cost, as `vmr status --json` and the manifest report them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spent {
    /// The price of one billed call.
    pub price_per_call: f64,
    /// The price's currency label.
    pub currency: String,
    /// The calls billed.
    pub billed_calls: u64,
    /// `billed_calls` × the price.
    pub spent: f64,
    /// Calls sent without a usable answer, which the vendor may have billed.
    pub unknown_outcome_calls: u64,
    /// What those would cost if they were billed.
    pub possibly_spent: f64,
}

impl Spent {
    /// What `billed` billed calls and `unknown` calls of unknown outcome come to at `price`,
    /// rounded to the cent.
    pub fn of(price: &Price, billed: u64, unknown: u64) -> Spent {
        Spent {
            price_per_call: price.per_call,
            currency: price.currency.clone(),
            billed_calls: billed,
            spent: round2(price.cost(billed)),
            unknown_outcome_calls: unknown,
            possibly_spent: round2(price.cost(unknown)),
        }
    }
}

/// Rounded to the cent.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(p: f64) -> Price {
        Price::new(p, None).expect("a price")
    }

    #[test]
    fn amounts_read_as_people_write_them() {
        let p = cny(2.5);
        assert_eq!(p.amount(p.cost(21_100)), "52,750.00 CNY");
        assert_eq!(p.about(52_749.6), "about 52,750 CNY");
        assert_eq!(p.per_call_text(), "2.50");
        assert_eq!(cny(0.125).per_call_text(), "0.125");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(1_000.0, 0), "1,000");
        assert_eq!(group(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(group(-1_500.0, 0), "-1,500");
        assert_eq!(count(12_400), "12,400");
        assert_eq!(
            Price::new(1.0, Some("EUR".into()))
                .expect("price")
                .amount(3.0),
            "3.00 EUR"
        );
    }

    #[test]
    fn a_spend_limit_is_the_calls_it_pays_for() {
        let p = cny(2.5);
        assert_eq!(p.calls_for(100.0), 40);
        assert_eq!(p.calls_for(101.0), 40);
        assert_eq!(p.calls_for(2.4), 0);
        assert_eq!(cny(0.1).calls_for(0.3), 3, "0.3 / 0.1 is 3, not 2.999…");
    }

    #[test]
    fn a_price_must_be_positive() {
        assert!(Price::new(0.0, None).is_err());
        assert!(Price::new(-1.0, None).is_err());
        assert!(Price::new(f64::NAN, None).is_err());
    }
}
