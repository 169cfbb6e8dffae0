//! Text inputs: CSV and its cousins (semicolon, tab or pipe separated), in UTF-8, GBK or an
//! encoding the user names.
//!
//! The file is hashed in one pass (the batch id) while its first 64 KiB are kept: they decide
//! the encoding, refuse what is not text, and give the separator ([`sniff_delimiter`], unless
//! `--delimiter` forces one). Then the csv crate streams the records with one reused
//! `ByteRecord`. A record may not grow past [`MAX_RECORD_BYTES`]: an unclosed quote near the
//! top, or a file whose lines end in CR only, would otherwise be read into memory whole.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use encoding_rs::{Encoding, GB18030, UTF_8};
use encoding_rs_io::DecodeReaderBytesBuilder;
use sha2::{Digest, Sha256};

use super::InputError;

/// How much of the file decides its encoding, whether it is text at all, and its separator.
pub(crate) const SAMPLE_LEN: usize = 64 * 1024;
/// The longest record read: far above any real row, low enough that a runaway quote stops
/// early with a message instead of eating memory.
pub(crate) const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Lines of the sample the separator is sniffed from.
const SNIFF_LINES: usize = 20;

/// The separators vmr recognises, in the order a tie is settled.
const SEPARATORS: [(u8, &str); 4] = [
    (b',', "comma"),
    (b';', "semicolon"),
    (b'\t', "tab"),
    (b'|', "pipe"),
];

/// The name of a separator, for messages.
pub(crate) fn separator_name(sep: u8) -> String {
    SEPARATORS
        .iter()
        .find(|(b, _)| *b == sep)
        .map_or_else(|| format!("{:?}", sep as char), |(_, n)| (*n).to_owned())
}

/// `--delimiter`'s value: a name (`comma`, `semicolon`, `tab`, `pipe`), `\t`, or one ASCII
/// punctuation character.
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    let t = s.trim_matches(' ');
    if let Some((b, _)) = SEPARATORS.iter().find(|(_, n)| n.eq_ignore_ascii_case(t)) {
        return Ok(*b);
    }
    match t.as_bytes() {
        b"\\t" | b"\t" => Ok(b'\t'),
        [b] if b.is_ascii_punctuation() && *b != b'"' => Ok(*b),
        _ => Err(format!(
            "--delimiter {s:?}: give comma, semicolon, tab or pipe, or one punctuation character such as ';'"
        )),
    }
}

/// The separator the first lines of `text` use: for each candidate, the count per line that
/// most lines share, and how many lines share it; the candidate shared by the most lines wins
/// (then the higher count, then the order of [`SEPARATORS`]). Quoted text is not counted.
/// Returns the separator and a sentence saying why, for ingest's summary.
pub(crate) fn sniff_delimiter(text: &str) -> (u8, String) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(SNIFF_LINES)
        .collect();
    let mut best: Option<(usize, usize, u8, &str)> = None;
    for (sep, name) in SEPARATORS {
        let counts: Vec<usize> = lines.iter().map(|l| count_unquoted(l, sep)).collect();
        let mut mode = (0usize, 0usize);
        for &c in counts.iter().filter(|c| **c > 0) {
            let n = counts.iter().filter(|x| **x == c).count();
            if (n, c) > mode {
                mode = (n, c);
            }
        }
        if mode.0 > 0 && best.is_none_or(|(n, c, _, _)| mode > (n, c)) {
            best = Some((mode.0, mode.1, sep, name));
        }
    }
    match best {
        Some((n, c, sep, name)) => (
            sep,
            format!(
                "separator: {name}, sniffed ({n} of the first {} lines have {c} each; --delimiter forces one)",
                lines.len()
            ),
        ),
        None => (
            b',',
            "separator: comma (no comma, semicolon, tab or pipe in the first lines)".to_owned(),
        ),
    }
}

fn count_unquoted(line: &str, sep: u8) -> usize {
    let mut quoted = false;
    let mut n = 0;
    for b in line.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            n += 1;
        }
    }
    n
}

/// The encoding `--encoding` names, if given.
pub(crate) fn forced_encoding(
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

/// A file opened and sniffed: its fingerprint, its encoding, its separator and its first bytes,
/// kept to be fed to the parser ahead of the rest (so the sample is read only once).
pub(crate) struct Sniffed {
    file: File,
    sample: Vec<u8>,
    bom_len: usize,
    pub encoding: &'static Encoding,
    pub fingerprint: String,
    pub delimiter: u8,
    /// How the separator was chosen.
    pub note: String,
}

impl Sniffed {
    /// Hashes the whole file in one pass, keeps its first 64 KiB, and settles the encoding
    /// (a byte-order mark, else `--encoding`, else detection) and the separator. Refuses what
    /// is not text.
    pub(crate) fn read(
        path: &Path,
        file_name: &str,
        forced: Option<&'static Encoding>,
        delimiter: Option<u8>,
    ) -> Result<Sniffed, InputError> {
        let unreadable = |cause: io::Error| InputError::Unreadable {
            file: file_name.to_owned(),
            cause,
        };
        let mut file = super::sheet::open_input_file(path, file_name)?;
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
        let (delimiter, note) = match delimiter {
            Some(d) => (d, format!("separator: {} (--delimiter)", separator_name(d))),
            None => {
                let body = &sample[bom_len..];
                let body = match body.iter().rposition(|b| *b == b'\n') {
                    Some(end) if !whole_file_in_sample => &body[..end],
                    _ => body,
                };
                sniff_delimiter(&encoding.decode_without_bom_handling(body).0)
            }
        };
        Ok(Sniffed {
            file,
            sample,
            bom_len,
            encoding,
            fingerprint,
            delimiter,
            note,
        })
    }

    /// The records of the whole file (UTF-8 untouched, since rows are validated one by one;
    /// anything else decoded to UTF-8 on the way in).
    pub(crate) fn into_rows(self) -> TextRows {
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
        let consumed = Arc::new(AtomicU64::new(0));
        let record_start = Arc::new(AtomicU64::new(0));
        let source = Guard {
            inner: source,
            at_eof: Arc::clone(&at_eof),
            consumed,
            record_start: Arc::clone(&record_start),
        };
        // Only '\n' ends a record, so that each record consumes exactly its own line breaks
        // and the line count stays exact for CRLF files too (the '\r' left at the end of the
        // last field is trimmed like any whitespace).
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Box::new(source) as Box<dyn Read + Send>);
        TextRows {
            csv,
            record: csv::ByteRecord::new(),
            at_eof,
            record_start,
            encoding: self.encoding,
            delimiter: self.delimiter,
        }
    }
}

/// Refuses a file that is empty, binary, in lines ended by CR only, or text in an encoding that
/// was neither given nor recognised.
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
        if body.contains(&0) {
            return Err(InputError::NotCsv {
                file: file(),
                why: "it contains NUL bytes, so it is a binary file or UTF-16 text".into(),
            });
        }
        if body.contains(&b'\r') && !body.contains(&b'\n') {
            return Err(InputError::NotCsv {
                file: file(),
                why: "its lines end with a carriage return only, as old Mac programs write them"
                    .into(),
            });
        }
    }
    encoding.ok_or_else(|| InputError::UndetectedEncoding { file: file() })
}

/// What reading one record gave.
pub(crate) enum Next {
    Record,
    End,
    /// The record grew past [`MAX_RECORD_BYTES`]; it starts at this line.
    TooLong(u64),
    /// The file could not be read further, from this line.
    Failed(u64, String),
}

/// The records of a text file, one reused `ByteRecord` at a time.
pub(crate) struct TextRows {
    csv: csv::Reader<Box<dyn Read + Send>>,
    pub record: csv::ByteRecord,
    /// Set once the parser has asked for more input and found none; see `record_start_line`.
    at_eof: Arc<AtomicBool>,
    /// Where the record being read starts, in bytes the parser has read.
    record_start: Arc<AtomicU64>,
    pub encoding: &'static Encoding,
    pub delimiter: u8,
}

impl TextRows {
    pub(crate) fn read_next(&mut self) -> Next {
        let start_line = self.csv.position().line();
        match self.csv.read_byte_record(&mut self.record) {
            Ok(true) => {
                self.record_start
                    .store(self.csv.position().byte(), Ordering::Relaxed);
                Next::Record
            }
            Ok(false) => Next::End,
            // With byte records and `flexible`, the csv crate fails only when the underlying
            // read fails; there is no telling what follows, so reading stops.
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(io) if io.get_ref().is_some_and(|r| r.is::<RecordTooLong>()) => {
                    Next::TooLong(start_line)
                }
                _ => Next::Failed(self.csv.position().line(), e.to_string()),
            },
        }
    }

    /// The line the current record starts on. The csv crate stamps a record with the position
    /// where reading began, before any blank lines it skipped, so count back from where the
    /// record ended instead: the line breaks inside its fields, plus its terminating '\n'
    /// unless the file ended without one.
    pub(crate) fn record_start_line(&self) -> u64 {
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

    /// The parser's line, for `Debug`.
    pub(crate) fn line(&self) -> u64 {
        self.csv.position().line()
    }
}

#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a record longer than {} MiB", MAX_RECORD_BYTES >> 20)
    }
}

impl std::error::Error for RecordTooLong {}

/// Passes reads through, notes when the input is exhausted (which tells whether the last record
/// ended with a line break or with the end of the file), and fails a read once the record being
/// parsed has grown past [`MAX_RECORD_BYTES`].
struct Guard<R> {
    inner: R,
    at_eof: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
    record_start: Arc<AtomicU64>,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let consumed = self.consumed.load(Ordering::Relaxed);
        if consumed.saturating_sub(self.record_start.load(Ordering::Relaxed)) > MAX_RECORD_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, RecordTooLong));
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_eof.store(true, Ordering::Relaxed);
        }
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// UTF-8 if the sample is valid UTF-8 (a character cut by the end of the sample counts as
/// valid when the file goes on); GB18030 (what Excel writes on a Chinese Windows) if the
/// sample is [plausibly GBK](plausibly_gbk); `None` otherwise, rather than guess: decoding,
/// say, Latin-1 as GBK turns accented letters into Chinese characters that would be sent to
/// the vendor.
pub(crate) fn detect_encoding(sample: &[u8], whole_file: bool) -> Option<&'static Encoding> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_separator_most_lines_agree_on_wins() {
        let sep = |t: &str| sniff_delimiter(t).0;
        assert_eq!(sep("vin,url\nA,b\n"), b',');
        assert_eq!(sep("vin;url;remark\nA;b;\"x, y, z\"\nB;c;d\n"), b';');
        assert_eq!(sep("vin\turl\nA\tb\n"), b'\t');
        assert_eq!(sep("vin|url\nA|b\n"), b'|');
        // A title line above the header does not decide.
        assert_eq!(sep("2026年12月 车队清单, 共3辆\nvin;url\nA;b\nC;d\n"), b';');
        assert_eq!(sep("vin\nA\n"), b',');
        let (_, why) = sniff_delimiter("vin;url\nA;b\n");
        assert_eq!(
            why,
            "separator: semicolon, sniffed (2 of the first 2 lines have 1 each; --delimiter forces one)"
        );
    }

    #[test]
    fn delimiter_option_takes_names_and_characters() {
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter("\\t"), Ok(b'\t'));
        assert_eq!(parse_delimiter("Semicolon"), Ok(b';'));
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert_eq!(parse_delimiter("|"), Ok(b'|'));
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("\"").is_err());
    }
}
