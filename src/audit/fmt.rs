//! Numbers, amounts, shares and dates written the way a person reads them in the audit.
//!
//! Both the risk reasons ([`super::risk`]) and the HTML page ([`super::html`]) print numbers,
//! and they must print them alike, so the formatting lives here, below both, instead of one of
//! them borrowing it from the other. Everything returns plain text; escaping is the page's job.

use chrono::NaiveDate;

/// What a missing value shows as.
pub(crate) const NONE: &str = "–";

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount with two decimals and thousands separators.
pub(crate) fn money(x: f64) -> String {
    let cents = (x * 100.0).round() as i64;
    let sign = if cents < 0 { "-" } else { "" };
    format!(
        "{sign}¥{}.{:02}",
        thousands((cents / 100).abs()),
        (cents % 100).abs()
    )
}

/// A share (0.1234) as a percentage with one decimal (`12.3%`).
pub(crate) fn pct(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{:.1}%", v * 100.0),
        None => NONE.into(),
    }
}

/// `YYYY-MM-DD`.
pub(crate) fn date(d: Option<NaiveDate>) -> String {
    d.map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| NONE.into())
}

/// A distance rounded to the km, with separators (no unit).
pub(crate) fn round_km(km: f64) -> String {
    thousands(km.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
        assert_eq!(money(12345.5), "¥12,345.50");
        assert_eq!(money(0.0), "¥0.00");
        assert_eq!(pct(Some(0.1234)), "12.3%");
    }
}
