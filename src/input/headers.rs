//! Which row is the header and which of its columns hold the VIN and the licence-photo URL.
//!
//! Fleet lists arrive with headers typed by people: `License Img Url`, `license_img_url`,
//! `ＶＩＮ码`, `车辆识别代码`. A header is compared after [`fold`]ing (full-width forms to
//! ASCII, case, spaces, `_`, `-` and word order aside) against one table of synonyms per column,
//! [`VIN_HEADERS`] and [`IMAGE_HEADERS`], the only place they are written (the README lists
//! them). The table is ordered most specific first: when two columns match, the one whose
//! synonym comes first is read and a warning names both; two columns matching the same synonym
//! are an error, since nothing says which one is meant. A sheet may carry title rows above its
//! header, so [`find_header`] looks at the first [`HEADER_SEARCH_ROWS`] rows.

use super::problem::shown;
use super::{InputError, InputOptions, normalize_vin, vin_problem};

/// Rows looked at for the header when title rows come first.
pub(crate) const HEADER_SEARCH_ROWS: usize = 10;

/// Names of the VIN column, most specific first (compared [`fold`]ed).
pub const VIN_HEADERS: &[&str] = &[
    "vin",
    "vin no",
    "vin number",
    "vin code",
    "vin码",
    "vin号",
    "vin号码",
    "车架号",
    "车架号码",
    "车辆识别代号",
    "车辆识别代码",
    "车辆识别号",
    "车辆识别码",
    "车辆vin码",
    "车辆识别号码",
];

/// Names of the licence-photo URL column, most specific first (compared [`fold`]ed).
pub const IMAGE_HEADERS: &[&str] = &[
    "licenseImgUrl",
    "license image url",
    "license photo url",
    "license url",
    "license img",
    "license image",
    "license photo",
    "image url",
    "img url",
    "photo url",
    "行驶证图片地址",
    "行驶证照片地址",
    "行驶证图片链接",
    "行驶证照片链接",
    "行驶证图片url",
    "行驶证照片url",
    "行驶证图片",
    "行驶证照片",
    "行驶证地址",
    "行驶证链接",
    "行驶证url",
    "行驶证",
];

/// A header's comparable forms: its words in order, run together (`licenseimgurl`), and its
/// words sorted, space-separated (`img license url`), so that spacing, case, `_`/`-`,
/// camelCase and word order do not matter. Full-width letters, digits and spaces (what a
/// Chinese input method types) count as their ASCII forms, and `licence` as `license`. Words
/// are split at anything that is neither a letter nor a digit, at a lower-case letter followed
/// by a capital, and between ASCII and other scripts (`VIN码` is `vin` and `码`).
pub(crate) fn fold(header: &str) -> (String, String) {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev: Option<char> = None;
    for c in header.chars() {
        let c = match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        };
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev = None;
            continue;
        }
        let boundary = prev.is_some_and(|p| {
            (p.is_lowercase() && c.is_uppercase()) || (p.is_ascii() != c.is_ascii())
        });
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.extend(c.to_lowercase());
        prev = Some(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    for w in &mut words {
        if w == "licence" {
            *w = "license".into();
        }
    }
    let joined = words.concat().replace("licence", "license");
    words.sort();
    (joined, words.join(" "))
}

/// The rank (index in `table`) of the most specific synonym `header` matches.
fn rank(header: &str, table: &[&str]) -> Option<usize> {
    let (joined, sorted) = fold(header);
    if joined.is_empty() {
        return None;
    }
    table.iter().position(|name| {
        let (j, s) = fold(name);
        j == joined || s == sorted
    })
}

/// What one header row says about one of the two columns.
#[derive(Debug)]
enum Found {
    /// Read this column; the warning names another that matched a less specific synonym.
    Column(usize, Option<String>),
    Missing,
    /// Two columns match equally well.
    Tie(usize, usize),
}

/// The column `option` names (its text compared as written, case aside, then [`fold`]ed), or
/// the best synonym match.
fn find(headers: &[String], wanted: Option<&str>, table: &[&str], what: &str) -> Found {
    if let Some(name) = wanted {
        let name = name.trim();
        if let Some(i) = headers.iter().position(|h| h.eq_ignore_ascii_case(name)) {
            return Found::Column(i, None);
        }
        let folded = fold(name);
        return match headers.iter().position(|h| fold(h) == folded) {
            Some(i) => Found::Column(i, None),
            None => Found::Missing,
        };
    }
    let mut ranked: Vec<(usize, usize)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| rank(h, table).map(|r| (r, i)))
        .collect();
    ranked.sort();
    match ranked.as_slice() {
        [] => Found::Missing,
        [(r0, a), (r1, b), ..] if r0 == r1 => Found::Tie(*a, *b),
        [(_, a), (_, b), ..] => Found::Column(
            *a,
            Some(format!(
                "columns {} and {} both look like the {what}; {} is read (the more specific name), pass --{}-column to read the other",
                shown(&headers[*a]),
                shown(&headers[*b]),
                shown(&headers[*a]),
                if what == "VIN" { "vin" } else { "image" },
            )),
        ),
        [(_, a)] => Found::Column(*a, None),
    }
}

/// The header row and its two columns.
#[derive(Debug)]
pub(crate) struct Header {
    pub names: Vec<String>,
    pub vin: usize,
    pub image: usize,
    /// Warnings and explanations for ingest's summary.
    pub notes: Vec<String>,
}

/// One row offered to [`find_header`]: its line and its cells as text, or why they are not
/// text (a header line that is not valid in the file's encoding).
pub(crate) type Candidate = (u64, Result<Vec<String>, InputError>);

/// Finds the header among the first [`HEADER_SEARCH_ROWS`] rows that `next_row` gives (`None`
/// at the end of the input): the first row where both columns are found. The search stops at a
/// row that holds a valid VIN, since data has begun. When no row qualifies, the error is about
/// the first row, as if it were the header: it names the missing column, or says the file has
/// no header line or is not separated as it seems.
pub(crate) fn find_header(
    file: &str,
    opts: &InputOptions,
    mut next_row: impl FnMut() -> Result<Option<Candidate>, InputError>,
) -> Result<Header, InputError> {
    let mut first: Option<Candidate> = None;
    for _ in 0..HEADER_SEARCH_ROWS {
        let Some((line, cells)) = next_row()? else {
            break;
        };
        if let Ok(names) = &cells {
            let (vin, image) = find_columns(names, opts);
            if let (Found::Tie(a, b), _) | (_, Found::Tie(a, b)) = (&vin, &image) {
                return Err(InputError::AmbiguousColumn {
                    file: file.to_owned(),
                    line,
                    first: names[*a].clone(),
                    second: names[*b].clone(),
                });
            }
            if let (Found::Column(v, vn), Found::Column(i, inote)) = (vin, image) {
                let mut notes: Vec<String> = vn.into_iter().chain(inote).collect();
                if line > 1 {
                    notes.insert(
                        0,
                        format!(
                            "header found on line {line}; the rows above it were skipped as titles"
                        ),
                    );
                }
                return Ok(Header {
                    names: names.clone(),
                    vin: v,
                    image: i,
                    notes,
                });
            }
        }
        let data_begun = cells
            .as_ref()
            .is_ok_and(|c| c.iter().any(|h| vin_problem(&normalize_vin(h)).is_none()));
        if first.is_none() {
            first = Some((line, cells));
        }
        if data_begun {
            break;
        }
    }
    let Some((_, cells)) = first else {
        return Err(InputError::Empty {
            file: file.to_owned(),
        });
    };
    Err(no_header(file, &cells?, opts))
}

/// The VIN column and the licence image column among `names` (named by the options, else by
/// the synonym tables).
fn find_columns(names: &[String], opts: &InputOptions) -> (Found, Found) {
    (
        find(names, opts.vin_column.as_deref(), VIN_HEADERS, "VIN"),
        find(
            names,
            opts.image_column.as_deref(),
            IMAGE_HEADERS,
            "licence image URL",
        ),
    )
}

/// Why `headers`, the first row, is not a header vmr can read.
fn no_header(file: &str, headers: &[String], opts: &InputOptions) -> InputError {
    let file = file.to_owned();
    let missing = |wanted: &Option<String>, option: &'static str| {
        wanted.as_ref().map(|name| InputError::ColumnNotFound {
            file: file.clone(),
            option,
            name: name.clone(),
            headers: header_list(headers),
        })
    };
    if let Some(v) = headers
        .iter()
        .find(|h| vin_problem(&normalize_vin(h)).is_none())
    {
        return InputError::NoHeader {
            file,
            first: shown(v),
        };
    }
    let (vin, image) = find_columns(headers, opts);
    match (vin, image) {
        (Found::Missing, _) if opts.vin_column.is_some() => {
            missing(&opts.vin_column, "--vin-column").expect("given")
        }
        (_, Found::Missing) if opts.image_column.is_some() => {
            missing(&opts.image_column, "--image-column").expect("given")
        }
        (Found::Missing, Found::Missing) if headers.len() == 1 => InputError::NotCsv {
            file,
            why: single_column_why(&headers[0]),
        },
        (Found::Missing, _) => InputError::NoVinColumn {
            file,
            headers: header_list(headers),
        },
        _ => InputError::NoImageColumn {
            file,
            headers: header_list(headers),
        },
    }
}

/// The headers for an error message, cut short when a sheet has dozens.
pub(crate) fn header_list(headers: &[String]) -> String {
    const MAX: usize = 12;
    let mut list = headers
        .iter()
        .take(MAX)
        .map(|h| if h.is_empty() { "\"\"" } else { h.as_str() })
        .collect::<Vec<_>>()
        .join(", ");
    if headers.len() > MAX {
        list.push_str(&format!(", ... ({} more)", headers.len() - MAX));
    }
    list
}

/// Why a one-column header is not taken for a table, with the likely cause.
fn single_column_why(header: &str) -> String {
    let shown = shown(header);
    for (sep, name) in [
        (';', "semicolons"),
        ('\t', "tabs"),
        ('|', "pipes"),
        (',', "commas"),
    ] {
        if header.contains(sep) {
            return format!(
                "its first line {shown} is separated by {name}, not by the --delimiter given"
            );
        }
    }
    format!("its first line {shown} has one column, neither a VIN nor a licence image URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spelling_case_spacing_and_word_order_do_not_matter() {
        for h in [
            "licenseImgUrl",
            "License Img Url",
            "license_img_url",
            "LICENSE-IMG-URL",
            "LICENSEIMGURL",
            " licence img url ",
            "Url Img License",
        ] {
            assert_eq!(rank(h, IMAGE_HEADERS), Some(0), "{h}");
        }
        assert_eq!(rank("License image URL", IMAGE_HEADERS), Some(1));
        for h in [
            "VIN",
            "ＶＩＮ",
            "vin",
            "V.I.N",
            "VIN*",
            "Vin No.",
            "VIN码",
            "ＶＩＮ码",
        ] {
            assert!(rank(h, VIN_HEADERS).is_some(), "{h}");
        }
        assert!(rank("车辆识别代码", VIN_HEADERS).is_some());
        assert!(rank("行驶证照片", IMAGE_HEADERS).is_some());
        assert_eq!(rank("plate", VIN_HEADERS), None);
        assert_eq!(rank("", VIN_HEADERS), None);
        assert_eq!(rank("vin_owner", VIN_HEADERS), None);
    }

    #[test]
    fn every_synonym_is_reachable_and_the_tables_do_not_overlap() {
        for (i, s) in VIN_HEADERS.iter().enumerate() {
            assert_eq!(rank(s, VIN_HEADERS), Some(i), "{s} is shadowed");
            assert_eq!(rank(s, IMAGE_HEADERS), None, "{s}");
        }
        for (i, s) in IMAGE_HEADERS.iter().enumerate() {
            assert_eq!(rank(s, IMAGE_HEADERS), Some(i), "{s} is shadowed");
            assert_eq!(rank(s, VIN_HEADERS), None, "{s}");
        }
    }

    #[test]
    fn the_more_specific_name_wins_with_a_warning_and_a_tie_is_an_error() {
        let h = names(&["行驶证", "licenseImgUrl"]);
        match find(&h, None, IMAGE_HEADERS, "licence image URL") {
            Found::Column(1, Some(w)) => {
                assert!(
                    w.contains("\"licenseImgUrl\"") && w.contains("\"行驶证\""),
                    "{w}"
                )
            }
            other => panic!("{other:?}"),
        }
        let h = names(&["License Img Url", "license_img_url"]);
        assert!(matches!(
            find(&h, None, IMAGE_HEADERS, "x"),
            Found::Tie(0, 1)
        ));
        let h = names(&["chassis", "vin"]);
        assert!(matches!(
            find(&h, Some("Chassis"), VIN_HEADERS, "VIN"),
            Found::Column(0, None)
        ));
    }
}
