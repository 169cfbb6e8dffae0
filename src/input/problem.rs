//! Why a row is rejected, as a value rather than a sentence.
//!
//! A rejected row is recorded with one sentence a person understands ("VIN \"LSVAB1234\" has 9
//! characters, needs 17"), and ingest's summary groups rejections by kind. Each problem here
//! renders both from the same data: [`RowProblem`]'s `Display` quotes the offending value, and
//! [`RowProblem::kind`] writes the same sentence with the value left out, so nothing has to
//! parse a message back.

use std::fmt;

/// Why a VIN cannot be bought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VinProblem {
    /// The VIN cell is empty (or blank).
    Empty,
    /// Not 17 characters.
    Length {
        /// The VIN as checked (trimmed and upper-cased).
        vin: String,
        /// Its length, in characters.
        len: usize,
    },
    /// I, O or Q, which VINs never use.
    ForbiddenLetter {
        /// The VIN as checked (trimmed and upper-cased).
        vin: String,
        /// The first such letter.
        letter: char,
        /// Where it stands, counting characters from 1.
        position: usize,
    },
    /// Anything but digits and A-Z.
    BadCharacter {
        /// The VIN as checked (trimmed and upper-cased).
        vin: String,
        /// The first such character.
        ch: char,
        /// Where it stands, counting characters from 1.
        position: usize,
    },
}

/// What is wrong with an image URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    /// The URL cell is empty (or blank).
    Empty,
    /// The URL holds a space or a control character.
    Blank,
    /// An http(s) URL without a host.
    NoHost,
    /// Not an absolute http or https URL.
    NotHttp,
}

/// Why a row is rejected (never sent, never billed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowProblem {
    /// The VIN cannot be bought.
    Vin(VinProblem),
    /// The licence image URL is not usable.
    Url {
        /// The header of the image URL column.
        field: String,
        /// The URL, trimmed.
        url: String,
        /// What is wrong with it.
        problem: UrlProblem,
    },
    /// A text row whose number of fields differs from the header's.
    FieldCount {
        /// The row's fields.
        fields: usize,
        /// The header's columns.
        headers: usize,
    },
    /// A text row that is not valid UTF-8.
    NotUtf8 {
        /// The header of the first column that is not, when the header has one there.
        column: Option<String>,
    },
    /// The VIN or URL cell holds bytes that are not valid in the input's encoding.
    BadBytes {
        /// The cell's column header.
        column: String,
        /// The input's encoding.
        encoding: &'static str,
    },
    /// A quote left open swallowed the lines after it into this row.
    UnclosedQuote {
        /// The line where the row starts.
        first: u64,
        /// The last line it swallowed.
        last: u64,
        /// The header of the column the open quote is in.
        column: String,
    },
    /// A NUL byte (or character) in a cell: a damaged file, and text PostgreSQL cannot store.
    Nul {
        /// The cell's column header (`#N`, its position from 1, past the header's end).
        column: String,
    },
    /// A spreadsheet's VIN cell holds a number, date or other value instead of text.
    VinNotText {
        /// The cell's value, shown as text.
        value: String,
        /// What it is: `number`, `date`, `boolean` or `error value`.
        kind: &'static str,
    },
    /// The row grew past the record-size limit; nothing after it was read.
    TooLong {
        /// The record-size limit, in MiB.
        limit_mib: u64,
    },
    /// The file could not be read past this row.
    Unreadable {
        /// The read error, in words.
        error: String,
    },
}

/// A value quoted for a message, cut after 100 characters.
pub(crate) fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 100;
    match value.char_indices().nth(MAX_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
    }
}

/// What a quoted value becomes in a problem's kind.
const ELIDED: &str = "\"…\"";

impl VinProblem {
    fn write(&self, f: &mut impl fmt::Write, quote: &dyn Fn(&str) -> String) -> fmt::Result {
        match self {
            VinProblem::Empty => f.write_str("VIN is empty"),
            VinProblem::Length { vin, len } => {
                let plural = if *len == 1 { "" } else { "s" };
                write!(
                    f,
                    "VIN {} has {len} character{plural}, needs 17",
                    quote(vin)
                )
            }
            VinProblem::ForbiddenLetter {
                vin,
                letter,
                position,
            } => write!(
                f,
                "VIN {} contains '{letter}' at position {position}; VINs never use I, O or Q",
                quote(vin)
            ),
            VinProblem::BadCharacter { vin, ch, position } => write!(
                f,
                "VIN {} contains {ch:?} at position {position}; VINs use only digits and the letters A-Z",
                quote(vin)
            ),
        }
    }
}

impl fmt::Display for VinProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &|v| shown(v))
    }
}

impl RowProblem {
    fn write(&self, f: &mut impl fmt::Write, quote: &dyn Fn(&str) -> String) -> fmt::Result {
        match self {
            RowProblem::Vin(p) => p.write(f, quote),
            RowProblem::Url {
                field,
                url,
                problem,
            } => match problem {
                UrlProblem::Empty => write!(f, "{field} is empty"),
                UrlProblem::Blank => write!(
                    f,
                    "{field} {} contains a space or control character",
                    quote(url)
                ),
                UrlProblem::NoHost => write!(f, "{field} {} has no host", quote(url)),
                UrlProblem::NotHttp => write!(f, "{field} {} is not an http(s) URL", quote(url)),
            },
            RowProblem::FieldCount { fields, headers } => {
                write!(f, "row has {fields} fields, header has {headers}")
            }
            RowProblem::NotUtf8 { column } => write!(
                f,
                "row is not valid UTF-8 (column {}); if Excel saved the file in Chinese, pass --encoding gbk",
                column.as_deref().map(quote).unwrap_or_default()
            ),
            RowProblem::BadBytes { column, encoding } => write!(
                f,
                "{column} has bytes that are not valid {encoding}; pass --encoding with the file's real encoding"
            ),
            RowProblem::UnclosedQuote {
                first,
                last,
                column,
            } => write!(
                f,
                "row spans lines {first}-{last} because a quote in column {} is never closed; close the quote so the rows it swallowed are read",
                quote(column)
            ),
            RowProblem::Nul { column } => write!(
                f,
                "row holds a NUL byte (column {}), so the file is damaged here; fix or remove the row",
                quote(column)
            ),
            RowProblem::VinNotText { value, kind } if *kind == "number" => write!(
                f,
                "VIN cell holds the number {}, not text: Excel keeps only 15 digits of a number, so the VIN may have changed; format the VIN column as Text and type it again",
                quote(value)
            ),
            RowProblem::VinNotText { value, kind } => write!(
                f,
                "VIN cell holds a {kind} ({}), not text; format the VIN column as Text and type it again",
                quote(value)
            ),
            RowProblem::TooLong { limit_mib } => write!(
                f,
                "a row longer than {limit_mib} MiB starts here, so reading stopped: a quote is probably never closed; close it and run again"
            ),
            RowProblem::Unreadable { error } => write!(
                f,
                "the file could not be read from here on ({error}); the rest of it was skipped"
            ),
        }
    }

    /// The sentence with its quoted values left out: rejections of one kind share it.
    pub(crate) fn kind(&self) -> String {
        let mut s = String::new();
        let _ = self.write(&mut s, &|_| ELIDED.to_owned());
        s
    }
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &|v| shown(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_as_a_sentence_and_groups_without_its_value() {
        let p = RowProblem::Vin(VinProblem::Length {
            vin: "LSVAB1234".into(),
            len: 9,
        });
        assert_eq!(
            p.to_string(),
            r#"VIN "LSVAB1234" has 9 characters, needs 17"#
        );
        assert_eq!(p.kind(), r#"VIN "…" has 9 characters, needs 17"#);
        let u = RowProblem::Url {
            field: "licenseImgUrl".into(),
            url: "ftp://x".into(),
            problem: UrlProblem::NotHttp,
        };
        assert_eq!(
            u.to_string(),
            r#"licenseImgUrl "ftp://x" is not an http(s) URL"#
        );
        assert_eq!(u.kind(), r#"licenseImgUrl "…" is not an http(s) URL"#);
    }

    #[test]
    fn long_values_are_cut_when_shown() {
        let long = "x".repeat(150);
        assert!(shown(&long).ends_with("\"..."));
        assert_eq!(shown(&long).chars().count(), 100 + 2 + 3);
    }
}
