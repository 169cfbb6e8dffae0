//! Where `--input` points: a local file, `-` for stdin, or an object in a store the lake output
//! can write to (`s3://bucket/key`, `file://…`), and the tables it holds.
//!
//! The batch id is the hash of the whole file and a workbook needs random access, so stdin and
//! objects are first copied ("spooled") to a private temporary file (`0600`, in `$TMPDIR`,
//! removed when the [`Input`] is dropped) and read from there like any file. The name recorded
//! per row stays what the user would call the input: the file name, the object key's last part,
//! or `stdin`.
//!
//! An [`Input`] is checked as a whole when it opens: with `--sheet '*'`, every sheet finds its
//! header before any row of any sheet is recorded (sheets with nothing in them are skipped).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{InputError, InputOptions, InputReader, Names};

/// An input opened and checked: its tables, one [`InputReader`] at a time.
pub struct Input {
    path: PathBuf,
    names: Names,
    /// Keeps a spooled copy alive (and removes it at the end).
    _spool: Option<tempfile::NamedTempFile>,
    opts: InputOptions,
    first: Option<InputReader>,
    /// Sheets still to read after `first`.
    rest: VecDeque<String>,
    /// Sheets left out because they hold nothing.
    skipped: Vec<String>,
}

impl Input {
    /// Resolves `--input` (a path, `-`, or a URL), spools it when it is not a local file, and
    /// opens its first table; with `--sheet '*'` checks every other sheet too. Every problem with
    /// the input as a whole is reported here.
    pub fn open(arg: &Path, opts: &InputOptions) -> Result<Input, InputError> {
        let (path, names, spool) = locate(arg, opts.fetch)?;
        let (first, sheets) = InputReader::open_named(&path, &names, opts)?;
        let mut input = Input {
            path,
            names,
            _spool: spool,
            opts: opts.clone(),
            first: None,
            rest: VecDeque::new(),
            skipped: Vec::new(),
        };
        if sheets.len() <= 1 {
            input.first = Some(first);
            return Ok(input);
        }
        // Every sheet (the first one too, already open) must find its header before anything is
        // recorded; an empty one is skipped.
        let mut readable = Vec::new();
        let mut first = Some(Ok(first));
        for sheet in &sheets {
            let opened = first
                .take()
                .unwrap_or_else(|| InputReader::open_sheet(&input.path, &input.names, sheet, opts));
            match opened {
                Ok(reader) => {
                    let keep = readable.is_empty().then_some(reader);
                    readable.push((sheet.clone(), keep));
                }
                Err(InputError::Empty { .. }) => input.skipped.push(sheet.clone()),
                Err(e) => return Err(e),
            }
        }
        let Some((_, Some(reader))) = readable.first_mut().map(|(s, r)| (s.clone(), r.take()))
        else {
            return Err(InputError::Empty {
                file: input.names.shown.clone(),
            });
        };
        input.first = Some(reader);
        // The others are opened again when their turn comes, so only one sheet is held at once.
        input.rest = readable.into_iter().skip(1).map(|(s, _)| s).collect();
        Ok(input)
    }

    /// How many tables (sheets) this input holds.
    pub fn tables(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Sheets left out because they are empty, for the summary.
    pub fn skipped_sheets(&self) -> &[String] {
        &self.skipped
    }

    /// The input's name as messages show it.
    pub fn name(&self) -> &str {
        &self.names.shown
    }

    /// The next table to read, `None` when all have been given.
    pub fn next_reader(&mut self) -> Option<Result<InputReader, InputError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let sheet = self.rest.pop_front()?;
        Some(InputReader::open_sheet(
            &self.path,
            &self.names,
            &sheet,
            &self.opts,
        ))
    }
}

/// Copies the object an input URL names into `out` (a private temporary file): `--input
/// s3://bucket/key`. The error is the reason, in words.
pub type Fetch = fn(url: &Path, out: &mut std::fs::File) -> Result<Fetched, String>;

/// What a [`Fetch`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The URL names a local file after all (`file://…`): read it where it is.
    Local(PathBuf),
    /// The object was copied: how to show the input, and the name recorded per row (the
    /// key's last part).
    Copied {
        /// How messages name the input.
        shown: String,
        /// The name recorded in each row's `input_file` column.
        recorded: String,
    },
}

/// The local file `arg` means, with the names to record, and the spooled copy when there is one.
fn locate(
    arg: &Path,
    fetch: Option<Fetch>,
) -> Result<(PathBuf, Names, Option<tempfile::NamedTempFile>), InputError> {
    let text = arg.to_str();
    if text == Some("-") {
        let names = Names {
            shown: "stdin".into(),
            recorded: "stdin".into(),
        };
        let mut spool = new_spool(&names.shown)?;
        io::copy(&mut io::stdin().lock(), spool.as_file_mut())
            .and_then(|_| spool.as_file_mut().flush())
            .map_err(|cause| InputError::Unreadable {
                file: names.shown.clone(),
                cause,
            })?;
        return Ok((spool.path().to_owned(), names, Some(spool)));
    }
    let Some(url) = text.filter(|t| t.contains("://")) else {
        return Ok((arg.to_owned(), Names::of_path(arg), None));
    };
    let remote = |reason: String| InputError::Remote {
        url: url.split('?').next().unwrap_or(url).to_owned(),
        reason,
    };
    let fetch = fetch.ok_or_else(|| remote("this vmr reads no input from a URL".into()))?;
    let mut spool = new_spool(url)?;
    match fetch(arg, spool.as_file_mut()).map_err(remote)? {
        Fetched::Local(path) => {
            let names = Names::of_path(&path);
            Ok((path, names, None))
        }
        Fetched::Copied { shown, recorded } => {
            spool
                .as_file_mut()
                .flush()
                .map_err(|e| remote(format!("spooling it: {e}")))?;
            Ok((
                spool.path().to_owned(),
                Names { shown, recorded },
                Some(spool),
            ))
        }
    }
}

/// A private temporary file (`0600`, removed on drop) for a copy of the input.
fn new_spool(shown: &str) -> Result<tempfile::NamedTempFile, InputError> {
    tempfile::Builder::new()
        .prefix(".vmr-input-")
        .tempfile()
        .map_err(|cause| InputError::Unreadable {
            file: format!("{shown} (copying it to a temporary file)"),
            cause,
        })
}
