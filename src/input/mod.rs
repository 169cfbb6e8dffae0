//! The input CSV: where every VIN vmr may pay for comes from, and the first line of defence
//! against paying for garbage.
//!
//! [`InputReader`] streams the user's file row by row in constant memory (one reused csv
//! record), whatever its size and whether Excel saved it as UTF-8, UTF-8 with a BOM or GBK.
//! File-level problems (missing file, not a CSV, no VIN column, unknown or undetectable
//! encoding) stop [`InputReader::open`] with an [`InputError`] before anything is recorded.
//! Row-level problems never stop the read: each row comes back as an [`InputRow`] whose
//! [`Verdict`] either accepts it or rejects it with a sentence a person understands, and the
//! checkpoint records it as such.
//! Duplicates are not this module's business; the checkpoint sees every batch and handles them.

mod vin;

pub mod problem;

use problem::shown;
pub use problem::{RowProblem, UrlProblem, VinProblem};
pub use vin::{check_digit, check_digit_ok, normalize_vin, vin_problem};

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use encoding_rs::{Encoding, GB18030, UTF_8};
use encoding_rs_io::DecodeReaderBytesBuilder;
use sha2::{Digest, Sha256};

/// How much of the file decides its encoding and whether it is text at all.
const SAMPLE_LEN: usize = 64 * 1024;

/// Header names (compared trimmed and lower-cased) that hold the VIN, most specific first.
const VIN_HEADERS: &[&str] = &[
    "vin",
    "vin_no",
    "vinno",
    "车架号",
    "车辆识别代号",
    "车辆识别号",
];

/// Header names (compared trimmed and lower-cased) that hold the licence-photo URL.
const IMAGE_HEADERS: &[&str] = &[
    "licenseimgurl",
    "license_img_url",
    "license_url",
    "image_url",
    "行驶证图片地址",
    "行驶证图片",
    "行驶证地址",
    "行驶证",
];

/// What the user may say about the file; everything left `None` is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// Header of the VIN column (`--vin-column`), matched case-insensitively.
    pub vin_column: Option<String>,
    /// Header of the licence-photo URL column (`--image-column`), matched case-insensitively.
    pub image_column: Option<String>,
    /// `utf-8`, `gbk`, `gb18030` (or another WHATWG label); `None` detects it. A byte-order
    /// mark in the file always wins.
    pub encoding: Option<String>,
}

/// One data row of the input, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRow {
    /// Line where the row starts; the header is line 1.
    pub line: u64,
    /// The VIN cell exactly as written.
    pub vin_raw: String,
    /// Trimmed and upper-cased: the form vmr sends and deduplicates on.
    pub vin: String,
    /// The licence-photo URL, trimmed.
    pub license_img_url: String,
    pub verdict: Verdict,
}

/// Whether a row may be sent to the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Worth buying. A wrong check digit is only a warning: many imported vehicles have none.
    Accepted { check_digit_ok: bool },
    /// Never sent, never billed; `reason` reads as one sentence naming the field and the
    /// problem.
    Rejected { reason: RowProblem },
}

/// A problem with the file as a whole: nothing of it should be recorded. Each message is one
/// line that names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: no such file; check the path")]
    NotFound { file: String },
    #[error("{file}: cannot be read ({cause}); check the path and its permissions")]
    Unreadable { file: String, cause: io::Error },
    #[error(
        "{file}: the file is empty; it needs a header line such as `vin,licenseImgUrl` and one row per vehicle"
    )]
    Empty { file: String },
    #[error(
        "{file}: no header line (line 1 starts with the VIN {first}); add a first line naming the columns, such as `vin,licenseImgUrl`"
    )]
    NoHeader { file: String, first: String },
    #[error("{file}: not a CSV file ({why}); save it from Excel as \"CSV UTF-8\" or \"CSV\"")]
    NotCsv { file: String, why: String },
    #[error(
        "{file}: the header line is not valid {encoding}; pass --encoding gbk if Excel saved it in Chinese, or --encoding utf-8"
    )]
    BadHeaderEncoding { file: String, encoding: String },
    #[error("{file}: no VIN column (headers: {headers}); name it `vin` or pass --vin-column")]
    NoVinColumn { file: String, headers: String },
    #[error(
        "{file}: no licence image column (headers: {headers}); name it `licenseImgUrl` or pass --image-column"
    )]
    NoImageColumn { file: String, headers: String },
    #[error("{file}: no column named \"{name}\" as {option} asks (headers: {headers})")]
    ColumnNotFound {
        file: String,
        option: &'static str,
        name: String,
        headers: String,
    },
    #[error(
        "{file}: unknown encoding \"{name}\"; use utf-8, gbk or gb18030, or leave --encoding out to detect it"
    )]
    UnknownEncoding { file: String, name: String },
    #[error(
        "{file}: the text is neither UTF-8 nor Chinese GBK/GB18030 (it looks like another encoding, such as Latin-1), so it was not read; save it from Excel as \"CSV UTF-8\", or pass --encoding with its real encoding (--encoding gbk if the file really is GBK)"
    )]
    UndetectedEncoding { file: String },
}

/// The encoding `--encoding` names, if given.
fn forced_encoding(
    file_name: &str,
    name: Option<&str>,
) -> Result<Option<&'static Encoding>, InputError> {
    let Some(name) = name else { return Ok(None) };
    match Encoding::for_label(name.trim().as_bytes()) {
        Some(enc) if enc != encoding_rs::REPLACEMENT => Ok(Some(enc)),
        _ => Err(InputError::UnknownEncoding {
            file: file_name.to_owned(),
            name: name.to_string(),
        }),
    }
}

/// A file opened and sniffed: its fingerprint, its encoding and its first bytes, kept to be
/// fed to the parser ahead of the rest (so the sample is read only once).
struct Sniffed {
    file: File,
    sample: Vec<u8>,
    bom_len: usize,
    encoding: &'static Encoding,
    fingerprint: String,
}

impl Sniffed {
    /// Hashes the whole file in one pass, keeps its first 64 KiB, and settles the encoding:
    /// a byte-order mark, else `--encoding`, else detection. Refuses what is not CSV text.
    fn read(
        path: &Path,
        file_name: &str,
        forced: Option<&'static Encoding>,
    ) -> Result<Sniffed, InputError> {
        let unreadable = |cause: io::Error| InputError::Unreadable {
            file: file_name.to_owned(),
            cause,
        };
        let mut file = File::open(path).map_err(|cause| match cause.kind() {
            io::ErrorKind::NotFound => InputError::NotFound {
                file: file_name.to_owned(),
            },
            _ => unreadable(cause),
        })?;
        let mut sample = Vec::with_capacity(SAMPLE_LEN);
        (&mut file)
            .take(SAMPLE_LEN as u64)
            .read_to_end(&mut sample)
            .map_err(unreadable)?;
        let mut hasher = Sha256::new();
        hasher.update(&sample);
        let whole_file_in_sample = sample.len() < SAMPLE_LEN;
        if !whole_file_in_sample {
            let mut buf = vec![0u8; SAMPLE_LEN];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(unreadable(e)),
                }
            }
            file.seek(SeekFrom::Start(sample.len() as u64))
                .map_err(unreadable)?;
        }
        let fingerprint = hex::encode(&hasher.finalize()[..8]);
        // `None`: neither given nor recognisable; refused once the file is known to be text.
        let (encoding, bom_len) = match Encoding::for_bom(&sample) {
            Some((enc, len)) => (Some(enc), len),
            None => (
                forced.or_else(|| detect_encoding(&sample, whole_file_in_sample)),
                0,
            ),
        };
        let encoding = check_is_text(
            file_name,
            &sample[bom_len..],
            encoding,
            whole_file_in_sample,
        )?;
        Ok(Sniffed {
            file,
            sample,
            bom_len,
            encoding,
            fingerprint,
        })
    }

    /// The CSV parser over the whole file (UTF-8 untouched, since rows are validated one by
    /// one; anything else decoded to UTF-8 on the way in), and the flag it raises at the end
    /// of its input.
    fn into_parser(self) -> (csv::Reader<Box<dyn Read + Send>>, Arc<AtomicBool>) {
        let mut head = Cursor::new(self.sample);
        head.set_position(self.bom_len as u64);
        let bytes = head.chain(self.file);
        let source: Box<dyn Read + Send> = if self.encoding == UTF_8 {
            Box::new(bytes)
        } else {
            Box::new(
                DecodeReaderBytesBuilder::new()
                    .encoding(Some(self.encoding))
                    .strip_bom(true)
                    .build(bytes),
            )
        };
        let at_eof = Arc::new(AtomicBool::new(false));
        let source = EofFlag {
            inner: source,
            at_eof: Arc::clone(&at_eof),
        };
        // Only '\n' ends a record, so that each record consumes exactly its own line breaks
        // and the line count stays exact for CRLF files too (the '\r' left at the end of the
        // last field is trimmed like any whitespace).
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Box::new(source) as Box<dyn Read + Send>);
        (csv, at_eof)
    }
}

/// Refuses a file that is empty, a zip archive (an Excel workbook), binary, or text in an
/// encoding that was neither given nor recognised.
fn check_is_text(
    file_name: &str,
    body: &[u8],
    encoding: Option<&'static Encoding>,
    whole_file_in_sample: bool,
) -> Result<&'static Encoding, InputError> {
    let file = || file_name.to_owned();
    if body.iter().all(u8::is_ascii_whitespace) && whole_file_in_sample {
        return Err(InputError::Empty { file: file() });
    }
    if encoding != Some(encoding_rs::UTF_16LE) && encoding != Some(encoding_rs::UTF_16BE) {
        if body.starts_with(b"PK\x03\x04") {
            return Err(InputError::NotCsv {
                file: file(),
                why: "it is an Excel workbook or another zip archive".into(),
            });
        }
        if body.contains(&0) {
            return Err(InputError::NotCsv {
                file: file(),
                why: "it contains NUL bytes, so it is a binary file or UTF-16 text".into(),
            });
        }
    }
    encoding.ok_or_else(|| InputError::UndetectedEncoding { file: file() })
}

/// The header line: names trimmed, byte-order mark removed.
fn read_headers(
    csv: &mut csv::Reader<Box<dyn Read + Send>>,
    record: &mut csv::ByteRecord,
    file_name: &str,
    encoding: &'static Encoding,
) -> Result<Vec<String>, InputError> {
    let bad_encoding = || InputError::BadHeaderEncoding {
        file: file_name.to_owned(),
        encoding: encoding.name().to_string(),
    };
    match csv.read_byte_record(record) {
        Ok(true) => {}
        Ok(false) => {
            return Err(InputError::Empty {
                file: file_name.to_owned(),
            });
        }
        Err(e) => {
            return Err(InputError::Unreadable {
                file: file_name.to_owned(),
                cause: io::Error::other(e),
            });
        }
    }
    let mut headers = Vec::with_capacity(record.len());
    for field in record.iter() {
        let text = std::str::from_utf8(field).map_err(|_| bad_encoding())?;
        headers.push(text.trim_start_matches('\u{feff}').trim().to_string());
    }
    if headers.iter().any(|h| h.contains('\u{fffd}')) {
        return Err(bad_encoding());
    }
    Ok(headers)
}

/// The VIN and image columns, by the options or by name; when one is missing, the error says
/// what the file looks like instead (no header line, not CSV, which column is missing).
fn locate_columns(
    file_name: &str,
    headers: &[String],
    opts: &InputOptions,
) -> Result<(usize, usize), InputError> {
    let vin = find_column(
        file_name,
        headers,
        opts.vin_column.as_deref(),
        "--vin-column",
        VIN_HEADERS,
    )?;
    let image = find_column(
        file_name,
        headers,
        opts.image_column.as_deref(),
        "--image-column",
        IMAGE_HEADERS,
    )?;
    let file = file_name.to_owned();
    match (vin, image) {
        (Some(v), Some(i)) => Ok((v, i)),
        _ if headers
            .iter()
            .any(|h| vin_problem(&normalize_vin(h)).is_none()) =>
        {
            let first = headers
                .iter()
                .find(|h| vin_problem(&normalize_vin(h)).is_none())
                .map_or(String::new(), |h| shown(h));
            Err(InputError::NoHeader { file, first })
        }
        (None, None) if headers.len() == 1 => Err(InputError::NotCsv {
            file,
            why: single_column_why(&headers[0]),
        }),
        (None, _) => Err(InputError::NoVinColumn {
            file,
            headers: header_list(headers),
        }),
        (Some(_), None) => Err(InputError::NoImageColumn {
            file,
            headers: header_list(headers),
        }),
    }
}

/// Streams and judges the rows of one input file. See the module documentation.
pub struct InputReader {
    file_name: String,
    fingerprint: String,
    encoding: &'static Encoding,
    csv: csv::Reader<Box<dyn Read + Send>>,
    record: csv::ByteRecord,
    /// Header names as written (trimmed, BOM removed).
    headers: Vec<String>,
    vin_index: usize,
    image_index: usize,
    /// Set once the parser has asked for more input and found none; see `record_start_line`.
    at_eof: Arc<AtomicBool>,
    read_error: Option<String>,
    finished: bool,
}

impl InputReader {
    /// Opens `path`, fingerprints it, settles its encoding and finds the VIN and image
    /// columns. Every file-level problem is reported here, before any row is read.
    pub fn open(path: &Path, opts: &InputOptions) -> Result<InputReader, InputError> {
        let file_name = path.to_string_lossy().into_owned();
        let forced = forced_encoding(&file_name, opts.encoding.as_deref())?;
        let sniffed = Sniffed::read(path, &file_name, forced)?;
        let (encoding, fingerprint) = (sniffed.encoding, sniffed.fingerprint.clone());
        let (mut csv, at_eof) = sniffed.into_parser();
        let mut record = csv::ByteRecord::new();
        let headers = read_headers(&mut csv, &mut record, &file_name, encoding)?;
        let (vin_index, image_index) = locate_columns(&file_name, &headers, opts)?;
        Ok(InputReader {
            file_name,
            fingerprint,
            encoding,
            csv,
            headers,
            vin_index,
            image_index,
            record,
            at_eof,
            read_error: None,
            finished: false,
        })
    }

    /// The input file's name as the user gave it (the `input_file` column).
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Batch id: the first 16 hex digits of the SHA-256 of the file's bytes, so the same
    /// content always gets the same id, whatever the file is called.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The encoding the file is read as (`UTF-8`, `gb18030`, ...), detected or given.
    pub fn encoding(&self) -> &'static str {
        self.encoding.name()
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
    /// be read any more (an I/O error, not a bad row). The rows after it were never seen, so
    /// a caller should report the batch as incomplete.
    pub(crate) fn read_error(&self) -> Option<&str> {
        self.read_error.as_deref()
    }

    /// The next data row, judged; `None` at the end of the file. Lines that are entirely blank
    /// (including Excel's trailing `,,,` rows) carry no vehicle and are skipped.
    pub(crate) fn next_row(&mut self) -> Option<InputRow> {
        loop {
            if self.finished {
                return None;
            }
            match self.csv.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => {
                    // With byte records and `flexible`, the csv crate fails only when the
                    // underlying read fails; there is no telling what follows, so stop.
                    self.finished = true;
                    let line = self.csv.position().line();
                    self.read_error = Some(format!("{}: line {line}: {e}", self.file_name));
                    return Some(InputRow {
                        line,
                        vin_raw: String::new(),
                        vin: String::new(),
                        license_img_url: String::new(),
                        verdict: Verdict::Rejected {
                            reason: RowProblem::Unreadable {
                                error: e.to_string(),
                            },
                        },
                    });
                }
            }
            if self.record.iter().all(|f| f.trim_ascii().is_empty()) {
                continue;
            }
            return Some(self.judge_record());
        }
    }

    fn judge_record(&self) -> InputRow {
        let record = &self.record;
        let line = self.record_start_line();
        let vin_cell = record.get(self.vin_index).unwrap_or_default();
        let vin_cell = vin_cell.strip_suffix(b"\r").unwrap_or(vin_cell);
        let vin_raw = String::from_utf8_lossy(vin_cell);
        let url_raw = String::from_utf8_lossy(record.get(self.image_index).unwrap_or_default());
        let vin = normalize_vin(&vin_raw);
        let license_img_url = url_raw.trim().to_string();
        let reason = self
            .record_problem(line)
            .or_else(|| vin_problem(&vin).map(RowProblem::Vin))
            .or_else(|| url_problem(self.image_column(), &license_img_url));
        let verdict = match reason {
            Some(reason) => Verdict::Rejected { reason },
            None => Verdict::Accepted {
                check_digit_ok: check_digit_ok(&vin),
            },
        };
        InputRow {
            line,
            vin_raw: vin_raw.into_owned(),
            vin,
            license_img_url,
            verdict,
        }
    }

    /// The line the current record starts on. The csv crate stamps a record with the position
    /// where reading began, before any blank lines it skipped, so count back from where the
    /// record ended instead: the line breaks inside its fields, plus its terminating '\n'
    /// unless the file ended without one.
    fn record_start_line(&self) -> u64 {
        let end = self.csv.position().line();
        let inside = self
            .record
            .as_slice()
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        let terminator = u64::from(!self.at_eof.load(Ordering::Relaxed));
        end.saturating_sub(inside + terminator).max(1)
    }

    /// Problems of the row as a whole, checked before its fields mean anything.
    fn record_problem(&self, line: u64) -> Option<RowProblem> {
        let record = &self.record;
        if record.as_slice().contains(&b'\n')
            && let Some(problem) = self.unclosed_quote(line)
        {
            return Some(problem);
        }
        if record.len() != self.headers.len() {
            return Some(RowProblem::FieldCount {
                fields: record.len(),
                headers: self.headers.len(),
            });
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
                    encoding: self.encoding.name(),
                });
            }
        }
        None
    }

    /// A row spanning several lines is fine when a quoted note holds line breaks, but when a
    /// quote is left open the csv parser swallows the following rows into one field, and those
    /// vehicles would silently vanish. Telltales: a line break inside the VIN or URL, or a
    /// swallowed line that reads like a row with a valid VIN.
    fn unclosed_quote(&self, line: u64) -> Option<RowProblem> {
        let record = &self.record;
        let breaks = record.as_slice().trim_ascii_end().iter();
        let last = line + breaks.filter(|b| **b == b'\n').count() as u64;
        for (index, field) in record.iter().enumerate() {
            if !field.contains(&b'\n') {
                continue;
            }
            let key_field = index == self.vin_index || index == self.image_index;
            let swallows_rows = field.split(|b| *b == b'\n').skip(1).any(|l| {
                l.split(|b| *b == b',')
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

/// Passes reads through and notes when the input is exhausted, which tells whether the
/// last record ended with a line break or with the end of the file.
struct EofFlag<R> {
    inner: R,
    at_eof: Arc<AtomicBool>,
}

impl<R: Read> Read for EofFlag<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_eof.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl std::fmt::Debug for InputReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputReader")
            .field("file_name", &self.file_name)
            .field("fingerprint", &self.fingerprint)
            .field("encoding", &self.encoding.name())
            .field("vin_column", &self.vin_column())
            .field("image_column", &self.image_column())
            .field("line", &self.csv.position().line())
            .finish_non_exhaustive()
    }
}

impl Iterator for InputReader {
    type Item = InputRow;

    fn next(&mut self) -> Option<InputRow> {
        self.next_row()
    }
}

/// UTF-8 if the sample is valid UTF-8 (a character cut by the end of the sample counts as
/// valid when the file goes on); GB18030 (what Excel writes on a Chinese Windows) if the
/// sample is [plausibly GBK](plausibly_gbk); `None` otherwise, rather than guess: decoding,
/// say, Latin-1 as GBK turns accented letters into Chinese characters that would be sent to
/// the vendor.
fn detect_encoding(sample: &[u8], whole_file: bool) -> Option<&'static Encoding> {
    match std::str::from_utf8(sample) {
        Ok(_) => Some(UTF_8),
        Err(e) if e.error_len().is_none() && !whole_file => Some(UTF_8),
        Err(_) => plausibly_gbk(sample, whole_file).then_some(GB18030),
    }
}

/// The share of non-ASCII characters that must be common Chinese for text to pass as GBK.
const GBK_CHINESE_SHARE: f64 = 0.75;

/// Whether `sample` reads as Chinese GBK/GB18030 text. The rule: every non-ASCII byte
/// sequence decodes as GB18030 without error, AND at least three quarters of the characters
/// they make are common Chinese: a two-byte sequence from the GB2312 area (both bytes
/// 0xA1–0xFE, where Excel's simplified Chinese text lives) that decodes to a CJK ideograph
/// (U+3400–U+4DBF, U+4E00–U+9FFF), CJK punctuation (U+3000–U+303F), a full-width form
/// (U+FF00–U+FFEF) or general punctuation (U+2000–U+206F: “”、…). Latin-1 text fails: an
/// accented letter before an ASCII byte is either no GBK sequence at all or one whose second
/// byte is below 0x80, outside GB2312. A sample cut by the 64 KiB window is judged up to its
/// last line break.
fn plausibly_gbk(sample: &[u8], whole_file: bool) -> bool {
    let sample = if whole_file {
        sample
    } else {
        match sample.iter().rposition(|b| *b == b'\n') {
            Some(end) => &sample[..=end],
            None => sample,
        }
    };
    let Some(text) = GB18030.decode_without_bom_handling_and_without_replacement(sample) else {
        return false;
    };
    let (mut chinese, mut other) = (0u64, 0u64);
    let mut at = 0;
    for c in text.chars() {
        let Some(&lead) = sample.get(at) else {
            return false;
        };
        if lead < 0x80 {
            at += 1;
            continue;
        }
        let trail = sample.get(at + 1).copied().unwrap_or(0);
        let len = if (0x30..=0x39).contains(&trail) { 4 } else { 2 };
        let gb2312 = len == 2 && (0xA1..=0xFE).contains(&lead) && (0xA1..=0xFE).contains(&trail);
        let cjk = matches!(c,
            '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{3000}'..='\u{303F}'
            | '\u{FF00}'..='\u{FFEF}'
            | '\u{2000}'..='\u{206F}');
        if gb2312 && cjk {
            chinese += 1;
        } else {
            other += 1;
        }
        at += len;
    }
    chinese > 0 && chinese as f64 >= GBK_CHINESE_SHARE * (chinese + other) as f64
}

/// The column to read: the one named by the option, or the first known header found.
fn find_column(
    file: &str,
    headers: &[String],
    wanted: Option<&str>,
    option: &'static str,
    known: &[&str],
) -> Result<Option<usize>, InputError> {
    let folded: Vec<String> = headers.iter().map(|h| h.to_lowercase()).collect();
    if let Some(name) = wanted {
        let name_folded = name.trim().to_lowercase();
        return match folded.iter().position(|h| *h == name_folded) {
            Some(index) => Ok(Some(index)),
            None => Err(InputError::ColumnNotFound {
                file: file.to_string(),
                option,
                name: name.to_string(),
                headers: header_list(headers),
            }),
        };
    }
    Ok(known
        .iter()
        .find_map(|k| folded.iter().position(|h| h == k)))
}

/// The headers for an error message, cut short when a sheet has dozens.
fn header_list(headers: &[String]) -> String {
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

/// Why a one-column header is not taken for a CSV, with the likely cause.
fn single_column_why(header: &str) -> String {
    let shown = shown(header);
    for (sep, name) in [(';', "semicolons"), ('\t', "tabs"), ('|', "pipes")] {
        if header.contains(sep) {
            return format!("its first line {shown} is separated by {name}, not commas");
        }
    }
    format!("its first line {shown} has one column, neither a VIN nor a licence image URL")
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
    fn detection_tolerates_a_character_cut_by_the_sample_end() {
        let cut = &"车".as_bytes()[..2];
        assert_eq!(detect_encoding(cut, false), Some(UTF_8));
        // Within a whole file, 0xE8 0xBD is a GB2312 character.
        assert_eq!(detect_encoding(cut, true), Some(GB18030));
        assert_eq!(
            detect_encoding(b"\xb3\xb5\xbc\xdc\xba\xc5", true),
            Some(GB18030)
        );
        // A GBK character cut by the sample's end is judged up to the last line break.
        assert_eq!(
            detect_encoding(b"\xb3\xb5\xbc\xdc\xba\xc5\nLSV,\xb3", false),
            Some(GB18030)
        );
    }

    #[test]
    fn gbk_must_be_chinese_to_be_detected() {
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode("vin,url\nA,https://x.cn/café.jpg\n");
        assert_eq!(detect_encoding(&latin1, true), None);
        // Accented letters before ASCII letters make valid GBK pairs, outside GB2312.
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode("Müller,Gérard,résumés,Zürich\n");
        assert!(
            GB18030
                .decode_without_bom_handling_and_without_replacement(&latin1)
                .is_some()
        );
        assert_eq!(detect_encoding(&latin1, true), None);
        let (gbk, _, _) = encoding_rs::GBK.encode("车架号,行驶证图片\n上海，“浦东”…\n");
        assert_eq!(detect_encoding(&gbk, true), Some(GB18030));
        // A traditional character or two outside GB2312 among simplified text is fine.
        let (gbk, _, _) = encoding_rs::GBK.encode("车架号,备注\nA,上海浦东新区張先生\n");
        assert_eq!(detect_encoding(&gbk, true), Some(GB18030));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "A".repeat(150);
        assert_eq!(shown(&long), format!("{:?}...", "A".repeat(100)));
        assert_eq!(shown("a\nb"), r#""a\nb""#);
    }
}
