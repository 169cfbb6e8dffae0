//! Spreadsheets (xlsx, xlsm, xlsb, xls, ods) through calamine, as rows of cells.
//!
//! A workbook is recognised by its bytes, whatever the file is called: an OLE2 container is a
//! legacy `.xls`, a zip archive holding `xl/workbook.xml` an xlsx (or xlsm), `xl/workbook.bin`
//! an xlsb, `content.xml` an OpenDocument sheet. xlsx and xlsb are read as a stream of cells in
//! constant memory (their shared-string table aside); xls and ods can only be loaded whole, so
//! they are refused above [`WHOLE_SHEET_LIMIT`] with a message saying what to do.
//!
//! calamine's streaming readers borrow the workbook, so one thread owns the workbook and sends
//! the sheet's rows, a block at a time, over a bounded channel: the reader never holds more than
//! a few blocks, and parsing XML overlaps judging the rows. The thread stops when the receiving
//! [`SheetRows`] is dropped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::mpsc;

use calamine::{DataRef, Ods, Reader, SheetType, Xls, Xlsb, Xlsx};

use super::InputError;

/// The largest xls file, and the largest uncompressed sheet XML of an ods, read (both are
/// loaded whole).
pub(crate) const WHOLE_SHEET_LIMIT: u64 = 100 << 20;
/// Cells kept per row; a cell further right only makes the row non-empty.
const MAX_COLUMNS: usize = 1024;
/// Rows per block sent by the sheet thread, and blocks in flight.
const BLOCK_ROWS: usize = 512;
const BLOCKS_IN_FLIGHT: usize = 4;

/// One cell, as vmr judges it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Empty,
    /// A text cell, as typed.
    Text(String),
    /// A number, a date, a boolean or an error value, shown as text; a VIN must never be one.
    Value {
        shown: String,
        kind: &'static str,
    },
}

impl Cell {
    pub(crate) fn text(&self) -> &str {
        match self {
            Cell::Empty => "",
            Cell::Text(s) => s,
            Cell::Value { shown, .. } => shown,
        }
    }

    fn is_blank(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            Cell::Value { .. } => false,
        }
    }
}

/// One row of a sheet: its row number (1-based, as the sheet shows it) and its cells.
#[derive(Debug)]
pub(crate) struct SheetRow {
    pub line: u64,
    pub cells: Vec<Cell>,
}

type Block = Result<Vec<SheetRow>, String>;

/// A workbook, of whichever kind.
enum Book {
    Xlsx(Xlsx<BufReader<File>>),
    Xlsb(Xlsb<BufReader<File>>),
    Xls(Xls<BufReader<File>>),
    Ods(Ods<BufReader<File>>),
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    /// An OLE2 container: a legacy xls.
    Ole,
    /// A zip archive: xlsx, xlsm, xlsb or ods (or another archive).
    Zip,
}

pub(crate) fn kind_of(head: &[u8]) -> Kind {
    if head.starts_with(b"PK\x03\x04") {
        Kind::Zip
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Kind::Ole
    } else {
        Kind::Text
    }
}

fn not_a_sheet(file: &str, why: impl std::fmt::Display) -> InputError {
    InputError::NotSpreadsheet {
        file: file.to_owned(),
        why: why.to_string(),
    }
}

fn too_large(file: &str, what: &str, size: u64) -> InputError {
    InputError::TooLarge {
        file: file.to_owned(),
        what: format!("{what} of {} MiB", size >> 20),
        limit_mib: WHOLE_SHEET_LIMIT >> 20,
    }
}

/// What a caught panic said.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

impl Book {
    /// Opens the workbook; a file calamine cannot make sense of (or that makes it panic, which
    /// damaged files can) is refused as not a spreadsheet.
    fn open(path: &Path, file: &str, kind: Kind) -> Result<Book, InputError> {
        std::panic::catch_unwind(|| Book::open_unguarded(path, file, kind)).unwrap_or_else(
            |panic| {
                Err(not_a_sheet(
                    file,
                    format_args!("a damaged workbook: {}", panic_text(panic.as_ref())),
                ))
            },
        )
    }

    fn open_unguarded(path: &Path, file: &str, kind: Kind) -> Result<Book, InputError> {
        let open = || {
            File::open(path).map_err(|cause| InputError::Unreadable {
                file: file.to_owned(),
                cause,
            })
        };
        let f = open()?;
        match kind {
            Kind::Ole => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                if size > WHOLE_SHEET_LIMIT {
                    return Err(too_large(file, "an xls file", size));
                }
                Xls::new(BufReader::new(f)).map(Book::Xls).map_err(|e| {
                    not_a_sheet(file, format_args!("an xls file calamine cannot read: {e}"))
                })
            }
            Kind::Zip => {
                let mut zip = zip::ZipArchive::new(BufReader::new(f))
                    .map_err(|e| not_a_sheet(file, format_args!("a damaged zip archive: {e}")))?;
                let has = |name: &str| zip.index_for_name(name).is_some();
                if has("xl/workbook.xml") {
                    Xlsx::new(BufReader::new(open()?))
                        .map(Book::Xlsx)
                        .map_err(|e| {
                            not_a_sheet(
                                file,
                                format_args!("an xlsx workbook calamine cannot read: {e}"),
                            )
                        })
                } else if has("xl/workbook.bin") {
                    Xlsb::new(BufReader::new(open()?))
                        .map(Book::Xlsb)
                        .map_err(|e| {
                            not_a_sheet(
                                file,
                                format_args!("an xlsb workbook calamine cannot read: {e}"),
                            )
                        })
                } else if has("content.xml") {
                    let size = zip
                        .by_name("content.xml")
                        .map(|e| e.size())
                        .map_err(|e| not_a_sheet(file, e))?;
                    if size > WHOLE_SHEET_LIMIT {
                        return Err(too_large(file, "an ods sheet (uncompressed)", size));
                    }
                    Ods::new(BufReader::new(open()?))
                        .map(Book::Ods)
                        .map_err(|e| {
                            not_a_sheet(file, format_args!("an ods file calamine cannot read: {e}"))
                        })
                } else {
                    Err(not_a_sheet(
                        file,
                        "a zip archive that is neither an Excel workbook nor an OpenDocument spreadsheet",
                    ))
                }
            }
            Kind::Text => Err(not_a_sheet(file, "text")),
        }
    }

    /// The worksheets, in workbook order (chart sheets and the like left out).
    fn sheet_names(&self) -> Vec<String> {
        let sheets = match self {
            Book::Xlsx(b) => b.sheets_metadata(),
            Book::Xlsb(b) => b.sheets_metadata(),
            Book::Xls(b) => b.sheets_metadata(),
            Book::Ods(b) => b.sheets_metadata(),
        };
        sheets
            .iter()
            .filter(|s| s.typ == SheetType::WorkSheet)
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Picks the sheets `wanted` names in the workbook at `path`: the first worksheet when `None`,
/// every worksheet for `*`, else the one with that name (exact, then case and surrounding
/// spaces aside) or, for a number, that position (1 is the first). Returns their names and the
/// rows of the first, so a single sheet opens the workbook once.
pub(crate) fn open_sheets(
    path: &Path,
    file: &str,
    kind: Kind,
    wanted: Option<&str>,
) -> Result<(Vec<String>, SheetRows), InputError> {
    let book = Book::open(path, file, kind)?;
    let names = book.sheet_names();
    if names.is_empty() {
        return Err(not_a_sheet(file, "a workbook without a worksheet"));
    }
    let selected = match wanted.map(str::trim) {
        None => vec![names[0].clone()],
        Some("*") => names,
        Some(wanted) => {
            let found = names
                .iter()
                .find(|n| *n == wanted)
                .or_else(|| {
                    names
                        .iter()
                        .find(|n| n.trim().to_lowercase() == wanted.to_lowercase())
                })
                .or_else(|| {
                    wanted
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| i.checked_sub(1))
                        .and_then(|i| names.get(i))
                });
            match found {
                Some(n) => vec![n.clone()],
                None => {
                    return Err(InputError::SheetNotFound {
                        file: file.to_owned(),
                        sheet: wanted.to_owned(),
                        sheets: names.join(", "),
                    });
                }
            }
        }
    };
    let rows = SheetRows::start(book, file, &selected[0])?;
    Ok((selected, rows))
}

/// The rows of one sheet, read by a thread of their own.
pub(crate) struct SheetRows {
    rx: mpsc::Receiver<Block>,
    block: std::vec::IntoIter<SheetRow>,
}

impl SheetRows {
    pub(crate) fn open(
        path: &Path,
        file: &str,
        kind: Kind,
        sheet: &str,
    ) -> Result<SheetRows, InputError> {
        SheetRows::start(Book::open(path, file, kind)?, file, sheet)
    }

    fn start(book: Book, file: &str, sheet: &str) -> Result<SheetRows, InputError> {
        let (tx, rx) = mpsc::sync_channel(BLOCKS_IN_FLIGHT);
        let sheet = sheet.to_owned();
        std::thread::Builder::new()
            .name("vmr-sheet".into())
            .spawn(move || {
                let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    send_rows(book, &sheet, &tx)
                }));
                if let Err(panic) = sent {
                    let _ = tx.send(Err(format!(
                        "the workbook is damaged here (its reader stopped: {})",
                        panic_text(panic.as_ref())
                    )));
                }
            })
            .map_err(|cause| InputError::Unreadable {
                file: file.to_owned(),
                cause,
            })?;
        Ok(SheetRows {
            rx,
            block: Vec::new().into_iter(),
        })
    }

    /// The next row that is not entirely empty; `Err` when the sheet cannot be read further.
    pub(crate) fn next_row(&mut self) -> Result<Option<SheetRow>, String> {
        loop {
            if let Some(row) = self.block.next() {
                return Ok(Some(row));
            }
            match self.rx.recv() {
                Ok(Ok(block)) => self.block = block.into_iter(),
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(None),
            }
        }
    }
}

/// Gathers cells into rows and rows into blocks; `false` once the receiver is gone.
struct Sender<'a> {
    tx: &'a mpsc::SyncSender<Block>,
    block: Vec<SheetRow>,
    row: Option<SheetRow>,
}

impl Sender<'_> {
    fn cell(&mut self, row: u32, col: u32, cell: Cell) -> bool {
        let line = u64::from(row) + 1;
        if self.row.as_ref().is_some_and(|r| r.line != line) && !self.end_row() {
            return false;
        }
        let current = self.row.get_or_insert_with(|| SheetRow {
            line,
            cells: Vec::new(),
        });
        let col = col as usize;
        if col < MAX_COLUMNS {
            if current.cells.len() <= col {
                current.cells.resize(col + 1, Cell::Empty);
            }
            current.cells[col] = cell;
        } else if !cell.is_blank() {
            // Far to the right: it counts only as making the row non-empty.
            current.cells.resize(MAX_COLUMNS + 1, Cell::Empty);
            current.cells[MAX_COLUMNS] = cell;
        }
        true
    }

    fn end_row(&mut self) -> bool {
        if let Some(row) = self.row.take()
            && !row.cells.iter().all(Cell::is_blank)
        {
            self.block.push(row);
            if self.block.len() >= BLOCK_ROWS {
                let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_ROWS));
                return self.tx.send(Ok(block)).is_ok();
            }
        }
        true
    }

    fn finish(mut self, error: Option<String>) {
        if self.end_row() && !self.block.is_empty() {
            let _ = self.tx.send(Ok(std::mem::take(&mut self.block)));
        }
        if let Some(e) = error {
            let _ = self.tx.send(Err(e));
        }
    }
}

fn cell_of(v: &DataRef<'_>) -> Cell {
    let value = |shown: String, kind| Cell::Value { shown, kind };
    match v {
        DataRef::Empty => Cell::Empty,
        DataRef::String(s) => Cell::Text(s.clone()),
        DataRef::SharedString(s) => Cell::Text((*s).to_owned()),
        DataRef::Int(i) => value(i.to_string(), "number"),
        DataRef::Float(f) => value(number(*f), "number"),
        DataRef::Bool(b) => value(if *b { "TRUE" } else { "FALSE" }.into(), "boolean"),
        DataRef::DateTime(d) => value(d.to_string(), "date"),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => value(s.clone(), "date"),
        DataRef::Error(e) => value(e.to_string(), "error value"),
    }
}

fn cell_of_data(v: &calamine::Data) -> Cell {
    use calamine::Data;
    let value = |shown: String, kind| Cell::Value { shown, kind };
    match v {
        Data::Empty => Cell::Empty,
        Data::String(s) => Cell::Text(s.clone()),
        Data::Int(i) => value(i.to_string(), "number"),
        Data::Float(f) => value(number(*f), "number"),
        Data::Bool(b) => value(if *b { "TRUE" } else { "FALSE" }.into(), "boolean"),
        Data::DateTime(d) => value(d.to_string(), "date"),
        Data::DateTimeIso(s) | Data::DurationIso(s) => value(s.clone(), "date"),
        Data::Error(e) => value(e.to_string(), "error value"),
    }
}

/// A number as Excel's General format shows it: whole numbers without a decimal point.
fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The sheet thread: streams xlsx and xlsb cell by cell, loads xls and ods whole.
fn send_rows(mut book: Book, sheet: &str, tx: &mpsc::SyncSender<Block>) {
    let mut out = Sender {
        tx,
        block: Vec::with_capacity(BLOCK_ROWS),
        row: None,
    };
    let error = match &mut book {
        Book::Xlsx(b) => match b.worksheet_cells_reader(sheet) {
            Ok(mut cells) => stream(&mut out, || cells.next_cell().map_err(|e| e.to_string())),
            Err(e) => Some(e.to_string()),
        },
        Book::Xlsb(b) => match b.worksheet_cells_reader(sheet) {
            Ok(mut cells) => stream(&mut out, || cells.next_cell().map_err(|e| e.to_string())),
            Err(e) => Some(e.to_string()),
        },
        Book::Xls(b) => whole(
            &mut out,
            b.worksheet_range(sheet).map_err(|e| e.to_string()),
        ),
        Book::Ods(b) => whole(
            &mut out,
            b.worksheet_range(sheet).map_err(|e| e.to_string()),
        ),
    };
    out.finish(error);
}

fn stream<'a>(
    out: &mut Sender<'_>,
    mut next: impl FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, String>,
) -> Option<String> {
    loop {
        match next() {
            Ok(Some(c)) => {
                let (row, col) = c.get_position();
                if !out.cell(row, col, cell_of(c.get_value())) {
                    return None;
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fn whole(
    out: &mut Sender<'_>,
    range: Result<calamine::Range<calamine::Data>, String>,
) -> Option<String> {
    let range = match range {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    for (row, col, v) in range.used_cells() {
        let (r0, c0) = range.start().unwrap_or((0, 0));
        if !out.cell(r0 + row as u32, c0 + col as u32, cell_of_data(v)) {
            return None;
        }
    }
    None
}

/// What kind of file `path` is, by its first bytes.
pub(crate) fn peek_kind(path: &Path, file: &str) -> Result<Kind, InputError> {
    let mut head = Vec::with_capacity(8);
    open_input_file(path, file)?
        .take(8)
        .read_to_end(&mut head)
        .map_err(|cause| InputError::Unreadable {
            file: file.to_owned(),
            cause,
        })?;
    Ok(kind_of(&head))
}

/// The SHA-256 of the whole file, the basis of a sheet's batch id.
pub(crate) fn hash_file(path: &Path, file: &str) -> Result<[u8; 32], InputError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut f = open_input_file(path, file)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(cause) => {
                return Err(InputError::Unreadable {
                    file: file.to_owned(),
                    cause,
                });
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// Opens an input file, telling a missing file from one that cannot be read.
pub(crate) fn open_input_file(path: &Path, file: &str) -> Result<File, InputError> {
    File::open(path).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::NotFound => InputError::NotFound {
            file: file.to_owned(),
        },
        _ => InputError::Unreadable {
            file: file.to_owned(),
            cause,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_show_as_excel_shows_them() {
        assert_eq!(number(12345.0), "12345");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(12345678901234567.0), "12345678901234568");
    }

    #[test]
    fn kinds_by_magic_bytes() {
        assert_eq!(kind_of(b"PK\x03\x04rest"), Kind::Zip);
        assert_eq!(
            kind_of(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0]),
            Kind::Ole
        );
        assert_eq!(kind_of(b"vin,url"), Kind::Text);
    }
}
