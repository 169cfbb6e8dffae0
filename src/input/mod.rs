//! The input: where every VIN vmr may pay for comes from, and the first line of defence
//! against paying for garbage.
//!
//! An input is a text file (CSV, or separated by semicolons, tabs or pipes: [`text`]) or a
//! spreadsheet (xlsx, xlsm, xlsb, xls, ods: [`sheet`]), on disk, on stdin or in an object store
//! ([`source`] copies the last two to a private temporary file first). [`InputReader`] streams
//! one table of it (a file, or one sheet) row by row in bounded memory. Its header is found by
//! [`headers`], among the first rows when title rows come first.
//!
//! File-level problems (missing file, not a table, no VIN column, an ambiguous header, unknown
//! or undetectable encoding, a workbook too large to load) stop [`InputReader::open`] with an
//! [`InputError`] before anything is recorded. Row-level problems never stop the read: each row
//! comes back as an [`InputRow`] whose [`Verdict`] either accepts it or rejects it with a
//! sentence a person understands, and the checkpoint records it as such. That includes a NUL
//! byte anywhere in a row and a VIN typed into a number cell. Only a file that cannot be read
//! further (an I/O error, a runaway record) stops partway; the rows before it are recorded.
//! Duplicates are not this module's business; the checkpoint sees every batch and handles them.

mod headers;
mod sheet;
mod source;
mod text;
mod vin;

pub mod problem;

pub use headers::{IMAGE_HEADERS, VIN_HEADERS};
#[cfg(test)]
use problem::shown;
pub use problem::{RowProblem, UrlProblem, VinProblem};
pub use source::{Fetch, Fetched, Input};
pub use text::parse_delimiter;
pub use vin::{check_digit, check_digit_ok, normalize_vin, vin_problem};

use std::borrow::Cow;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use sheet::{Cell, Kind, SheetRow, SheetRows};
use text::{Next, TextRows};

/// What the user may say about the input; everything left `None` is detected.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// Header of the VIN column (`--vin-column`), matched case-insensitively.
    pub vin_column: Option<String>,
    /// Header of the licence-photo URL column (`--image-column`), matched case-insensitively.
    pub image_column: Option<String>,
    /// `utf-8`, `gbk`, `gb18030` (or another WHATWG label); `None` detects it. A byte-order
    /// mark in the file always wins. Text inputs only.
    pub encoding: Option<String>,
    /// The sheet of a workbook (`--sheet`): a name, a position (1 is the first) or `*` for
    /// every sheet; `None` reads the first. Ignored for text inputs.
    pub sheet: Option<String>,
    /// The separator of a text input (`--delimiter`); `None` sniffs it. Ignored for
    /// spreadsheets.
    pub delimiter: Option<u8>,
    /// How an input given as a URL (`s3://bucket/key`) is copied into a local file: the
    /// object-store client the lake output uses, handed in from above (`input` knows no store;
    /// docs/architecture.md). `None` refuses URLs.
    pub fetch: Option<source::Fetch>,
}

/// One data row of the input, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRow {
    /// Line where the row starts (text), or the sheet's row number (spreadsheet); the first
    /// line or row is 1.
    pub line: u64,
    /// The VIN cell exactly as written (a NUL in it shown as U+FFFD, which PostgreSQL can
    /// store).
    pub vin_raw: String,
    /// Trimmed and upper-cased: the form vmr sends and deduplicates on.
    pub vin: String,
    /// The licence-photo URL, trimmed.
    pub license_img_url: String,
    /// Whether the row may be sent, and why not when it may not.
    pub verdict: Verdict,
}

/// Whether a row may be sent to the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Worth buying. A wrong check digit is only a warning: many imported vehicles have none.
    Accepted {
        /// Whether the VIN's check digit (its ninth character) is right.
        check_digit_ok: bool,
    },
    /// Never sent, never billed; `reason` reads as one sentence naming the field and the
    /// problem.
    Rejected {
        /// What is wrong with the row.
        reason: RowProblem,
    },
}

/// A problem with the input as a whole: nothing of it should be recorded. Each message is one
/// line that names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file does not exist.
    #[error("{file}: no such file; check the path")]
    NotFound {
        /// The input, as messages name it.
        file: String,
    },
    /// The file cannot be opened or read.
    #[error("{file}: cannot be read ({cause}); check the path and its permissions")]
    Unreadable {
        /// The input, as messages name it.
        file: String,
        /// The I/O error.
        cause: io::Error,
    },
    /// The input holds no rows at all.
    #[error(
        "{file}: the file is empty; it needs a header line such as `vin,licenseImgUrl` and one row per vehicle"
    )]
    Empty {
        /// The input, as messages name it.
        file: String,
    },
    /// The first line is a data row: it holds a VIN where a header belongs.
    #[error(
        "{file}: no header line (line 1 starts with the VIN {first}); add a first line naming the columns, such as `vin,licenseImgUrl`"
    )]
    NoHeader {
        /// The input, as messages name it.
        file: String,
        /// The VIN found on the first line.
        first: String,
    },
    /// A text input that is not a table vmr can read.
    #[error("{file}: not a CSV file ({why}); save it from Excel as \"CSV UTF-8\" or \"CSV\"")]
    NotCsv {
        /// The input, as messages name it.
        file: String,
        /// Why it is not one, in words.
        why: String,
    },
    /// A file that is not a spreadsheet vmr can read.
    #[error(
        "{file}: not a spreadsheet vmr can read ({why}); save it from Excel as .xlsx or as \"CSV UTF-8\""
    )]
    NotSpreadsheet {
        /// The input, as messages name it.
        file: String,
        /// Why it cannot be read, in words.
        why: String,
    },
    /// An xls file or an ods sheet above the size vmr loads whole.
    #[error(
        "{file}: {what} is too large to load (vmr loads xls and ods sheets whole, up to {limit_mib} MiB); save it as .xlsx or as \"CSV UTF-8\", which are read as a stream"
    )]
    TooLarge {
        /// The input, as messages name it.
        file: String,
        /// What is too large, with its size (`an xls file of 300 MiB`).
        what: String,
        /// The largest size loaded, in MiB.
        limit_mib: u64,
    },
    /// The workbook has no sheet that `--sheet` names.
    #[error(
        "{file}: no sheet \"{sheet}\" (sheets: {sheets}); pass --sheet with one of them, its position (1 is the first), or '*' for all"
    )]
    SheetNotFound {
        /// The input, as messages name it.
        file: String,
        /// The sheet asked for.
        sheet: String,
        /// The workbook's sheet names, comma-separated.
        sheets: String,
    },
    /// The header line is not valid text in the input's encoding.
    #[error(
        "{file}: the header line is not valid {encoding}; pass --encoding gbk if Excel saved it in Chinese, or --encoding utf-8"
    )]
    BadHeaderEncoding {
        /// The input, as messages name it.
        file: String,
        /// The encoding the header was read in.
        encoding: String,
    },
    /// No header names the VIN column.
    #[error("{file}: no VIN column (headers: {headers}); name it `vin` or pass --vin-column")]
    NoVinColumn {
        /// The input, as messages name it.
        file: String,
        /// The headers found (the first few), comma-separated.
        headers: String,
    },
    /// No header names the licence image URL column.
    #[error(
        "{file}: no licence image column (headers: {headers}); name it `licenseImgUrl` or pass --image-column"
    )]
    NoImageColumn {
        /// The input, as messages name it.
        file: String,
        /// The headers found (the first few), comma-separated.
        headers: String,
    },
    /// No header matches the column `--vin-column` or `--image-column` names.
    #[error("{file}: no column named \"{name}\" as {option} asks (headers: {headers})")]
    ColumnNotFound {
        /// The input, as messages name it.
        file: String,
        /// The option that names the column: `--vin-column` or `--image-column`.
        option: &'static str,
        /// The column name given.
        name: String,
        /// The headers found (the first few), comma-separated.
        headers: String,
    },
    /// Two headers match the same column name, so vmr cannot tell which to read.
    #[error(
        "{file}: line {line}: columns \"{first}\" and \"{second}\" both match the same column name, so vmr cannot tell which to read; rename one, or pass --vin-column / --image-column"
    )]
    AmbiguousColumn {
        /// The input, as messages name it.
        file: String,
        /// The line (or sheet row) of the header.
        line: u64,
        /// The first of the two headers.
        first: String,
        /// The second of the two headers.
        second: String,
    },
    /// A text record passed the size limit, so reading stopped there.
    #[error(
        "{file}: line {line}: a row longer than {limit_mib} MiB, so reading stopped; a quote is probably never closed (or the lines end in CR only)"
    )]
    RecordTooLong {
        /// The input, as messages name it.
        file: String,
        /// The line where the record starts.
        line: u64,
        /// The size limit of one record, in MiB.
        limit_mib: u64,
    },
    /// `--encoding` names an encoding vmr does not know.
    #[error(
        "{file}: unknown encoding \"{name}\"; use utf-8, gbk or gb18030, or leave --encoding out to detect it"
    )]
    UnknownEncoding {
        /// The input, as messages name it.
        file: String,
        /// The encoding name given.
        name: String,
    },
    /// The text is neither UTF-8 nor GBK/GB18030, and no `--encoding` was given.
    #[error(
        "{file}: the text is neither UTF-8 nor Chinese GBK/GB18030 (it looks like another encoding, such as Latin-1), so it was not read; save it from Excel as \"CSV UTF-8\", or pass --encoding with its real encoding (--encoding gbk if the file really is GBK)"
    )]
    UndetectedEncoding {
        /// The input, as messages name it.
        file: String,
    },
    /// An input given as a URL could not be copied.
    #[error("{url}: cannot be read ({reason})")]
    Remote {
        /// The URL, without its query.
        url: String,
        /// Why, in words.
        reason: String,
    },
}

/// How an input is named: in messages (the path as given, `s3://bucket/key`, `stdin`) and in
/// the `input_file` column (the file name, the key's last part, `stdin`). A sheet adds
/// `#Sheet` to both.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub shown: String,
    pub recorded: String,
}

impl Names {
    fn of_path(path: &Path) -> Names {
        let shown = path.to_string_lossy().into_owned();
        let recorded = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| shown.clone());
        Names { shown, recorded }
    }

    fn with_sheet(&self, sheet: &str) -> Names {
        Names {
            shown: format!("{}#{sheet}", self.shown),
            recorded: format!("{}#{sheet}", self.recorded),
        }
    }
}

/// Where the rows come from.
enum Rows {
    Text(TextRows),
    Sheet {
        rows: SheetRows,
        current: Option<SheetRow>,
    },
}

/// Streams and judges the rows of one table of the input. See the module documentation.
pub struct InputReader {
    names: Names,
    fingerprint: String,
    /// `csv (UTF-8)`, `xlsx`…, for the summary and `Debug`.
    format: String,
    encoding: &'static str,
    rows: Rows,
    /// Header names as written (trimmed, BOM removed).
    headers: Vec<String>,
    vin_index: usize,
    image_index: usize,
    /// What ingest's summary says about how the input was read.
    notes: Vec<String>,
    read_error: Option<String>,
    finished: bool,
}

impl InputReader {
    /// Opens the local file `path`, fingerprints it, settles its format (and for text its
    /// encoding and separator) and finds the VIN and image columns. Every file-level problem is
    /// reported here, before any row is read. A workbook opens the sheet `opts.sheet` names
    /// (the first of them for `*`; [`Input`] reads them all).
    pub fn open(path: &Path, opts: &InputOptions) -> Result<InputReader, InputError> {
        Ok(InputReader::open_named(path, &Names::of_path(path), opts)?.0)
    }

    /// [`InputReader::open`] with the names to use; also returns every sheet `opts.sheet`
    /// selects (empty for text).
    pub(crate) fn open_named(
        path: &Path,
        names: &Names,
        opts: &InputOptions,
    ) -> Result<(InputReader, Vec<String>), InputError> {
        match sheet::peek_kind(path, &names.shown)? {
            Kind::Text => Ok((InputReader::open_text(path, names, opts)?, Vec::new())),
            kind => {
                let (sheets, rows) =
                    sheet::open_sheets(path, &names.shown, kind, opts.sheet.as_deref())?;
                let reader = InputReader::from_sheet(path, names, kind, &sheets[0], rows, opts)?;
                Ok((reader, sheets))
            }
        }
    }

    /// Opens one sheet of the workbook at `path`.
    pub(crate) fn open_sheet(
        path: &Path,
        names: &Names,
        sheet: &str,
        opts: &InputOptions,
    ) -> Result<InputReader, InputError> {
        let kind = sheet::peek_kind(path, &names.shown)?;
        let rows = SheetRows::open(path, &names.shown, kind, sheet)?;
        InputReader::from_sheet(path, names, kind, sheet, rows, opts)
    }

    fn open_text(
        path: &Path,
        names: &Names,
        opts: &InputOptions,
    ) -> Result<InputReader, InputError> {
        let file = &names.shown;
        let forced = text::forced_encoding(file, opts.encoding.as_deref())?;
        let sniffed = text::Sniffed::read(path, file, forced, opts.delimiter)?;
        let fingerprint = sniffed.fingerprint.clone();
        let sep_note = sniffed.note.clone();
        let mut rows = sniffed.into_rows();
        let encoding = rows.encoding;
        let header = headers::find_header(file, opts, || {
            loop {
                return match rows.read_next() {
                    Next::Record if rows.record.iter().all(|f| f.trim_ascii().is_empty()) => {
                        continue;
                    }
                    Next::Record => Ok(Some((
                        rows.record_start_line(),
                        header_cells(&rows.record, file, encoding),
                    ))),
                    Next::End => Ok(None),
                    Next::TooLong(line) => Err(InputError::RecordTooLong {
                        file: file.clone(),
                        line,
                        limit_mib: text::MAX_RECORD_BYTES >> 20,
                    }),
                    Next::Failed(_, e) => Err(InputError::Unreadable {
                        file: file.clone(),
                        cause: io::Error::other(e),
                    }),
                };
            }
        })?;
        let mut notes = vec![sep_note];
        notes.extend(header.notes);
        Ok(InputReader {
            names: names.clone(),
            fingerprint,
            format: format!("text, {}", encoding.name()),
            encoding: encoding.name(),
            rows: Rows::Text(rows),
            headers: header.names,
            vin_index: header.vin,
            image_index: header.image,
            notes,
            read_error: None,
            finished: false,
        })
    }

    fn from_sheet(
        path: &Path,
        names: &Names,
        kind: Kind,
        sheet: &str,
        mut rows: SheetRows,
        opts: &InputOptions,
    ) -> Result<InputReader, InputError> {
        let names = names.with_sheet(sheet);
        let file = names.shown.clone();
        let header = headers::find_header(&file, opts, || match rows.next_row() {
            Ok(Some(row)) => Ok(Some((
                row.line,
                Ok(row
                    .cells
                    .iter()
                    .map(|c| c.text().trim().to_owned())
                    .collect()),
            ))),
            Ok(None) => Ok(None),
            Err(e) => Err(InputError::Unreadable {
                file: file.clone(),
                cause: io::Error::other(e),
            }),
        })?;
        // A sheet's batch id: the file's bytes and the sheet's name, so each sheet of a
        // workbook is a batch of its own.
        let mut hasher = Sha256::new();
        hasher.update(sheet::hash_file(path, &names.shown)?);
        hasher.update(b"#");
        hasher.update(sheet.as_bytes());
        let fingerprint = hex::encode(&hasher.finalize()[..8]);
        let format = match kind {
            Kind::Ole => "xls",
            _ => "spreadsheet",
        };
        Ok(InputReader {
            names,
            fingerprint,
            format: format.to_owned(),
            encoding: "UTF-8",
            rows: Rows::Sheet {
                rows,
                current: None,
            },
            headers: header.names,
            vin_index: header.vin,
            image_index: header.image,
            notes: header.notes,
            read_error: None,
            finished: false,
        })
    }

    /// The input's name as messages show it: the path as given (`s3://…`, `stdin`), plus
    /// `#Sheet` for a sheet.
    pub fn file_name(&self) -> &str {
        &self.names.shown
    }

    /// The input's name as the `input_file` column records it: the file name (the object
    /// key's last part, `stdin`), plus `#Sheet` for a sheet.
    pub fn recorded_name(&self) -> &str {
        &self.names.recorded
    }

    /// Batch id: the first 16 hex digits of the SHA-256 of the file's bytes, so the same
    /// content always gets the same id, whatever the file is called. For a sheet, of the
    /// file's SHA-256 followed by `#` and the sheet's name.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The encoding a text input is read as (`UTF-8`, `gb18030`, ...), detected or given;
    /// `UTF-8` for a spreadsheet, whose text is Unicode.
    pub fn encoding(&self) -> &'static str {
        self.encoding
    }

    /// How the input was read (separator sniffed or given, the header's line, a column
    /// chosen over another), one sentence each, for ingest's summary.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The header of the column the VINs are read from, as written in the file.
    pub fn vin_column(&self) -> &str {
        &self.headers[self.vin_index]
    }

    /// The header of the column the licence-photo URLs are read from, as written in the file.
    pub fn image_column(&self) -> &str {
        &self.headers[self.image_index]
    }

    /// Set when reading stopped before the end of the file because the file itself could not
    /// be read any more (an I/O error, a runaway record; not a bad row). The rows after it
    /// were never seen, so a caller should report the batch as incomplete.
    pub(crate) fn read_error(&self) -> Option<&str> {
        self.read_error.as_deref()
    }

    /// The next data row, judged; `None` at the end of the input. Rows that are entirely blank
    /// (including Excel's trailing `,,,` rows) carry no vehicle and are skipped.
    pub(crate) fn next_row(&mut self) -> Option<InputRow> {
        if self.finished {
            return None;
        }
        let row = if matches!(self.rows, Rows::Text(_)) {
            self.next_text_row()
        } else {
            self.next_sheet_row()
        };
        if row.is_none() {
            self.finished = true;
        }
        row
    }

    /// Stops reading: the row says why, `read_error` makes the batch incomplete.
    fn stop(&mut self, line: u64, reason: RowProblem) -> Option<InputRow> {
        self.finished = true;
        self.read_error = Some(format!("{}: line {line}: {reason}", self.names.shown));
        Some(InputRow {
            line,
            vin_raw: String::new(),
            vin: String::new(),
            license_img_url: String::new(),
            verdict: Verdict::Rejected { reason },
        })
    }

    fn next_text_row(&mut self) -> Option<InputRow> {
        loop {
            let Rows::Text(rows) = &mut self.rows else {
                unreachable!("called for text rows")
            };
            match rows.read_next() {
                Next::Record => {}
                Next::End => return None,
                Next::TooLong(line) => {
                    return self.stop(
                        line,
                        RowProblem::TooLong {
                            limit_mib: text::MAX_RECORD_BYTES >> 20,
                        },
                    );
                }
                Next::Failed(line, error) => {
                    return self.stop(line, RowProblem::Unreadable { error });
                }
            }
            if rows.record.iter().all(|f| f.trim_ascii().is_empty()) {
                continue;
            }
            return Some(self.judge_text());
        }
    }

    fn next_sheet_row(&mut self) -> Option<InputRow> {
        let Rows::Sheet { rows, current } = &mut self.rows else {
            unreachable!("called for sheet rows")
        };
        match rows.next_row() {
            Ok(Some(row)) => {
                *current = Some(row);
                Some(self.judge_sheet())
            }
            Ok(None) => None,
            Err(error) => {
                let line = current.as_ref().map_or(1, |r| r.line + 1);
                self.stop(line, RowProblem::Unreadable { error })
            }
        }
    }

    fn judge_text(&self) -> InputRow {
        let Rows::Text(rows) = &self.rows else {
            unreachable!("called for text rows")
        };
        let record = &rows.record;
        let line = rows.record_start_line();
        let vin_cell = record.get(self.vin_index).unwrap_or_default();
        let vin_cell = vin_cell.strip_suffix(b"\r").unwrap_or(vin_cell);
        let vin_raw = String::from_utf8_lossy(vin_cell);
        let url_raw = String::from_utf8_lossy(record.get(self.image_index).unwrap_or_default());
        let problem = self.text_problem(rows, line);
        self.judge(line, &vin_raw, &url_raw, problem)
    }

    fn judge_sheet(&self) -> InputRow {
        let Rows::Sheet {
            current: Some(row), ..
        } = &self.rows
        else {
            unreachable!("called with a sheet row")
        };
        let cell = |i: usize| row.cells.get(i).unwrap_or(&Cell::Empty);
        let (vin_cell, url_cell) = (cell(self.vin_index), cell(self.image_index));
        let problem = row
            .cells
            .iter()
            .position(|c| c.text().contains('\0'))
            .map(|i| self.nul_problem(i))
            .or_else(|| match vin_cell {
                Cell::Value { shown, kind } => Some(RowProblem::VinNotText {
                    value: shown.clone(),
                    kind,
                }),
                _ => None,
            });
        self.judge(row.line, vin_cell.text(), url_cell.text(), problem)
    }

    /// The verdict on a row, from its VIN and URL cells and a problem its format found.
    fn judge(
        &self,
        line: u64,
        vin_raw: &str,
        url_raw: &str,
        problem: Option<RowProblem>,
    ) -> InputRow {
        let vin = normalize_vin(vin_raw);
        let license_img_url = url_raw.trim();
        let reason = problem
            .or_else(|| vin_problem(&vin).map(RowProblem::Vin))
            .or_else(|| url_problem(self.image_column(), license_img_url));
        let verdict = match reason {
            Some(reason) => Verdict::Rejected { reason },
            None => Verdict::Accepted {
                check_digit_ok: check_digit_ok(&vin),
            },
        };
        InputRow {
            line,
            vin_raw: without_nul(vin_raw).into_owned(),
            vin: without_nul(&vin).into_owned(),
            license_img_url: without_nul(license_img_url).into_owned(),
            verdict,
        }
    }

    fn nul_problem(&self, index: usize) -> RowProblem {
        RowProblem::Nul {
            column: self
                .headers
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("#{}", index + 1)),
        }
    }

    /// Problems of a text row as a whole, checked before its fields mean anything.
    fn text_problem(&self, rows: &TextRows, line: u64) -> Option<RowProblem> {
        let record = &rows.record;
        if record.as_slice().contains(&b'\n')
            && let Some(problem) = self.unclosed_quote(rows, line)
        {
            return Some(problem);
        }
        if record.len() != self.headers.len() {
            return Some(RowProblem::FieldCount {
                fields: record.len(),
                headers: self.headers.len(),
            });
        }
        if let Some(i) = record.iter().position(|f| f.contains(&0)) {
            return Some(self.nul_problem(i));
        }
        if std::str::from_utf8(record.as_slice()).is_err() {
            let column = record
                .iter()
                .position(|f| std::str::from_utf8(f).is_err())
                .and_then(|i| self.headers.get(i))
                .cloned();
            return Some(RowProblem::NotUtf8 { column });
        }
        for index in [self.vin_index, self.image_index] {
            if record
                .get(index)
                .is_some_and(|f| f.windows(3).any(|w| w == "\u{fffd}".as_bytes()))
            {
                return Some(RowProblem::BadBytes {
                    column: self.headers[index].clone(),
                    encoding: rows.encoding.name(),
                });
            }
        }
        None
    }

    /// A row spanning several lines is fine when a quoted note holds line breaks, but when a
    /// quote is left open the csv parser swallows the following rows into one field, and those
    /// vehicles would silently vanish. Telltales: a line break inside the VIN or URL, or a
    /// swallowed line that reads like a row with a valid VIN.
    fn unclosed_quote(&self, rows: &TextRows, line: u64) -> Option<RowProblem> {
        let record = &rows.record;
        let breaks = record.as_slice().trim_ascii_end().iter();
        let last = line + breaks.filter(|b| **b == b'\n').count() as u64;
        for (index, field) in record.iter().enumerate() {
            if !field.contains(&b'\n') {
                continue;
            }
            let key_field = index == self.vin_index || index == self.image_index;
            let swallows_rows = field.split(|b| *b == b'\n').skip(1).any(|l| {
                l.split(|b| *b == rows.delimiter)
                    .nth(self.vin_index)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .is_some_and(|v| vin_problem(&normalize_vin(v.trim_matches('"'))).is_none())
            });
            if key_field || swallows_rows {
                return Some(RowProblem::UnclosedQuote {
                    first: line,
                    last,
                    column: self.headers.get(index).cloned().unwrap_or_default(),
                });
            }
        }
        None
    }
}

/// The cells of a header candidate: names trimmed, byte-order mark removed; an error when
/// they are not text in the file's encoding.
fn header_cells(
    record: &csv::ByteRecord,
    file: &str,
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<String>, InputError> {
    let bad_encoding = || InputError::BadHeaderEncoding {
        file: file.to_owned(),
        encoding: encoding.name().to_string(),
    };
    let mut headers = Vec::with_capacity(record.len());
    for field in record.iter() {
        let text = std::str::from_utf8(field).map_err(|_| bad_encoding())?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.contains('\u{fffd}') {
            return Err(bad_encoding());
        }
        headers.push(text.to_string());
    }
    Ok(headers)
}

/// `s` with any NUL replaced by U+FFFD: PostgreSQL text cannot hold NUL, and a rejected row's
/// cells are recorded as written.
fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

impl std::fmt::Debug for InputReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = match &self.rows {
            Rows::Text(rows) => rows.line(),
            Rows::Sheet { current, .. } => current.as_ref().map_or(0, |r| r.line),
        };
        f.debug_struct("InputReader")
            .field("file_name", &self.names.shown)
            .field("fingerprint", &self.fingerprint)
            .field("format", &self.format)
            .field("vin_column", &self.vin_column())
            .field("image_column", &self.image_column())
            .field("line", &line)
            .finish_non_exhaustive()
    }
}

impl Iterator for InputReader {
    type Item = InputRow;

    fn next(&mut self) -> Option<InputRow> {
        self.next_row()
    }
}

/// `None` when `url` (trimmed) is an absolute http(s) URL with a host.
fn url_problem(field: &str, url: &str) -> Option<RowProblem> {
    let problem = |problem| {
        Some(RowProblem::Url {
            field: field.to_owned(),
            url: url.to_owned(),
            problem,
        })
    };
    if url.is_empty() {
        return problem(UrlProblem::Empty);
    }
    let blank_or_control = if url.is_ascii() {
        url.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    } else {
        url.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if blank_or_control {
        return problem(UrlProblem::Blank);
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => match u.host_str() {
            Some(host) if !host.is_empty() => None,
            _ => problem(UrlProblem::NoHost),
        },
        _ => problem(UrlProblem::NotHttp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_with_a_host() {
        let f = "licenseImgUrl";
        assert_eq!(url_problem(f, "https://img.example.cn/a.jpg"), None);
        assert_eq!(url_problem(f, "http://10.0.0.1:8080/a?b=c"), None);
        assert_eq!(
            url_problem(f, "ftp://x").map(|p| p.to_string()),
            Some(r#"licenseImgUrl "ftp://x" is not an http(s) URL"#.into())
        );
        assert_eq!(
            url_problem(f, "img.example.cn/a.jpg").map(|p| p.to_string()),
            Some(r#"licenseImgUrl "img.example.cn/a.jpg" is not an http(s) URL"#.into())
        );
        assert_eq!(
            url_problem(f, "").map(|p| p.to_string()),
            Some("licenseImgUrl is empty".into())
        );
        assert!(url_problem(f, "https://a.cn/x y.jpg").is_some());
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "A".repeat(150);
        assert_eq!(shown(&long), format!("{:?}...", "A".repeat(100)));
        assert_eq!(shown("a\nb"), r#""a\nb""#);
    }
}
