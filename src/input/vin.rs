//! The Vehicle Identification Number: how vmr normalizes one, decides whether it is worth
//! sending to the vendor, and checks its ISO 3779 check digit.
//!
//! A VIN that is not 17 characters of the VIN alphabet can never match a vehicle, so buying a
//! report for it only wastes money: `vin_problem` says why such a VIN is refused, in words a
//! person understands. The check digit (position 9) is mandatory in North America and China but
//! not elsewhere, so a mismatch is only a warning, reported by `check_digit_ok`.

pub(super) use super::problem::VinProblem;

/// Trims surrounding whitespace (including the full-width space Chinese keyboards type) and
/// upper-cases ASCII letters. Non-ASCII characters are left as they are, so `vin_problem` can
/// point at them.
pub fn normalize_vin(raw: &str) -> String {
    raw.trim().to_ascii_uppercase()
}

/// `None` when `vin` (already normalized) is 17 characters of the VIN alphabet: digits and the
/// letters A-Z except I, O and Q. Otherwise one sentence saying what is wrong.
pub fn vin_problem(vin: &str) -> Option<VinProblem> {
    // Nearly every VIN is fine: settle those on bytes, without decoding characters.
    if vin.len() == 17 && vin.bytes().all(is_vin_byte) {
        return None;
    }
    if vin.is_empty() {
        return Some(VinProblem::Empty);
    }
    let len = vin.chars().count();
    if len != 17 {
        return Some(VinProblem::Length {
            vin: vin.to_owned(),
            len,
        });
    }
    for (i, c) in vin.chars().enumerate() {
        let position = i + 1;
        match c {
            '0'..='9' | 'A'..='H' | 'J'..='N' | 'P' | 'R'..='Z' => {}
            'I' | 'O' | 'Q' => {
                return Some(VinProblem::ForbiddenLetter {
                    vin: vin.to_owned(),
                    letter: c,
                    position,
                });
            }
            _ => {
                return Some(VinProblem::BadCharacter {
                    vin: vin.to_owned(),
                    ch: c,
                    position,
                });
            }
        }
    }
    None
}

fn is_vin_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'H' | b'J'..=b'N' | b'P' | b'R'..=b'Z')
}

/// Numeric value of a VIN character in the check-digit sum (ISO 3779 Annex / 49 CFR 565.15).
fn transliterate(c: char) -> Option<u32> {
    Some(match c {
        '0'..='9' => c as u32 - '0' as u32,
        'A' | 'J' => 1,
        'B' | 'K' | 'S' => 2,
        'C' | 'L' | 'T' => 3,
        'D' | 'M' | 'U' => 4,
        'E' | 'N' | 'V' => 5,
        'F' | 'W' => 6,
        'G' | 'P' | 'X' => 7,
        'H' | 'Y' => 8,
        'R' | 'Z' => 9,
        _ => return None,
    })
}

const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];

/// The check digit position 9 should hold ('0'-'9' or 'X'), or `None` when `vin` is not a
/// well-formed VIN (see `vin_problem`). Position 9 itself has weight 0, so its current value
/// does not matter.
pub fn check_digit(vin: &str) -> Option<char> {
    if vin.len() != 17 || vin_problem(vin).is_some() {
        return None;
    }
    let mut sum = 0;
    for (b, weight) in vin.bytes().zip(WEIGHTS) {
        sum += transliterate(char::from(b))? * weight;
    }
    match sum % 11 {
        10 => Some('X'),
        d => char::from_digit(d, 10),
    }
}

/// Whether position 9 of a well-formed VIN holds its check digit. False for a malformed VIN.
pub fn check_digit_ok(vin: &str) -> bool {
    match check_digit(vin) {
        Some(expected) => vin.as_bytes()[8] == expected as u8,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vins_have_correct_check_digits() {
        for vin in [
            "1M8GDM9AXKP042788",
            "11111111111111111",
            "1HGCM82633A004352",
        ] {
            assert!(check_digit_ok(vin), "{vin}");
        }
        assert_eq!(check_digit("1M8GDM9AXKP042788"), Some('X'));
        assert!(!check_digit_ok("1M8GDM9A1KP042788"));
        assert!(!check_digit_ok("1HGCM82633A004353"));
    }

    fn said(vin: &str) -> Option<String> {
        vin_problem(vin).map(|p| p.to_string())
    }

    #[test]
    fn problems_are_sentences() {
        assert_eq!(said(""), Some("VIN is empty".into()));
        assert_eq!(
            said("LSVAB1234"),
            Some(r#"VIN "LSVAB1234" has 9 characters, needs 17"#.into())
        );
        assert_eq!(
            said("LSVAB12O41234567X"),
            Some(
                r#"VIN "LSVAB12O41234567X" contains 'O' at position 8; VINs never use I, O or Q"#
                    .into()
            )
        );
        assert_eq!(
            said("LSVAB-2341234567X"),
            Some(
                r#"VIN "LSVAB-2341234567X" contains '-' at position 6; VINs use only digits and the letters A-Z"#
                    .into()
            )
        );
        assert_eq!(vin_problem("1HGCM82633A004352"), None);
    }

    #[test]
    fn normalize_trims_and_upper_cases() {
        assert_eq!(normalize_vin("  lsvab\u{3000}"), "LSVAB");
    }
}
