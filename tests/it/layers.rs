//! The crate's layers (docs/architecture.md), checked the way rust-analyzer's tidy test checks
//! its own rules: by reading the source. Every `.rs` file under `src/` is scanned for every
//! `crate::` and `super::` path (in `use` lines, inside functions, in expressions and types;
//! comments and string literals are skipped), each path is resolved to the top-level module it
//! names, and a module may only name modules of a lower layer than its own. A failure names the
//! file and line of each path against the table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use the modules of the layers below its own, never those of its
/// own layer or above, so no two top-level modules can ever import each other in a circle.
/// docs/architecture.md says what each layer owns and why it sits where it does.
const LAYERS: &[&[&str]] = &[
    // What the outside world sends and charges: the vendor's wire, the user's CSV, prices.
    &["api", "input", "price", "sys"],
    // The one source of truth; and the simulator of the vendor, which knows only the wire.
    &["checkpoint", "sandbox"],
    // Options resolved into the lower layers' value types.
    &["config"],
    // The stages, each meeting the others only in the checkpoint.
    &["engine", "ingest", "export", "status", "resolve"],
    // What every command shares: logging, the runtime, the exit codes.
    &["app"],
    // Around and after a run: metrics and pings, the audit of the tables; the fuzz entry points.
    &["monitor", "audit", "fuzz"],
    // The stages in a row for `run`, `submit` and `poll`.
    &["pipeline"],
    // One thin file per subcommand; then the command line that dispatches to them.
    &["cmd"],
    &["cli"],
];

/// Items that live at the crate root without being modules (a `#[macro_export]` macro), with the
/// module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[("p", "checkpoint")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/`: `engine/stop.rs` is `engine::stop`, `engine/mod.rs`
/// is `engine`, `lib.rs` the crate root.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// Rust source as the few tokens a path needs, each with its line; comments, string, byte and
/// char literals and lifetimes are dropped, so a path written in a doc comment or a message is
/// not an import.
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let s: Vec<char> = src.chars().collect();
    let ident_start = |c: char| c.is_alphabetic() || c == '_';
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a string body from just after its opening quote; `hashes` > 0 or `raw` means a raw
    // string, which has no escapes and ends at `"` followed by as many `#`.
    let skip_string = |mut i: usize, line: &mut usize, raw: bool, hashes: usize| -> usize {
        while i < s.len() {
            match s[i] {
                '\\' if !raw => i += 2,
                '"' if s[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&c| c == '#')
                    .count()
                    == hashes =>
                {
                    return i + 1 + hashes;
                }
                c => {
                    if c == '\n' {
                        *line += 1;
                    }
                    i += 1;
                }
            }
        }
        i
    };
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if s[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(i + 1, &mut line, false, 0);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime or label ('a, 'static).
            if next == Some('\\') {
                i += 3;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if s.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < s.len() && ident_char(s[i]) {
                    i += 1;
                }
            }
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let at = s.get(i).copied();
            match (word.as_str(), at) {
                // Byte and C strings, raw or not, and byte chars.
                ("b" | "c", Some('"')) => i = skip_string(i + 1, &mut line, false, 0),
                ("b", Some('\'')) => {
                    i += 1;
                    while i < s.len() && s[i] != '\'' {
                        i += if s[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                ("r" | "br" | "cr", Some('"' | '#')) => {
                    let mut hashes = 0;
                    while s.get(i + hashes) == Some(&'#') {
                        hashes += 1;
                    }
                    if s.get(i + hashes) == Some(&'"') {
                        i = skip_string(i + hashes + 1, &mut line, true, hashes);
                    } else {
                        // A raw identifier: r#type.
                        i += 1;
                        let start = i;
                        while i < s.len() && ident_char(s[i]) {
                            i += 1;
                        }
                        out.push((Tok::Ident(s[start..i].iter().collect()), line));
                    }
                }
                _ => out.push((Tok::Ident(word), line)),
            }
        } else if c.is_ascii_digit() {
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
        } else {
            let tok = match c {
                ':' if next == Some(':') => {
                    i += 1;
                    Tok::PathSep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                _ => Tok::Other,
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// The first segments of the path that starts at `toks[k]` (just after `crate::`, or after the
/// last `super::` that reached the root): one name, or each name of a `{…}` group.
fn first_segments(toks: &[(Tok, usize)], k: usize) -> Vec<String> {
    match toks.get(k).map(|t| &t.0) {
        Some(Tok::Ident(name)) => vec![name.clone()],
        Some(Tok::Open) => {
            let (mut depth, mut names) = (0, Vec::new());
            for j in k..toks.len() {
                match &toks[j].0 {
                    Tok::Open => depth += 1,
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Ident(name)
                        if depth == 1
                            && matches!(toks[j - 1].0, Tok::Open | Tok::Comma)
                            && name != "self" =>
                    {
                        names.push(name.clone());
                    }
                    _ => {}
                }
            }
            names
        }
        _ => vec!["*".to_owned()],
    }
}

/// Every top-level module (or root item) a file's paths name, with the line, given the file's
/// module path. `super::` is resolved from the module it is written in, inline modules (`mod
/// tests { … }`) included.
fn paths_named(module: &[String], src: &str) -> Vec<(String, usize)> {
    let toks = tokens(src);
    let mut found = Vec::new();
    // Inline modules open at this point, with the brace depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_mod: Option<String> = None;
    let mut depth = 0;
    let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|x| &x.0 == t);
    let ident = |i: usize, w: &str| matches!(toks.get(i), Some((Tok::Ident(x), _)) if x == w);
    for i in 0..toks.len() {
        let line = toks[i].1;
        match &toks[i].0 {
            Tok::Open => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
            }
            Tok::Close => {
                if inline.last().is_some_and(|m| m.1 == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some((Tok::Ident(name), _)) = toks.get(i + 1)
                    && is(i + 2, &Tok::Open)
                {
                    pending_mod = Some(name.clone());
                }
            }
            Tok::Ident(w) if w == "crate" && is(i + 1, &Tok::PathSep) => {
                for name in first_segments(&toks, i + 2) {
                    found.push((name, line));
                }
            }
            Tok::Ident(w)
                if w == "super"
                    && is(i + 1, &Tok::PathSep)
                    && !(i > 0 && is(i - 1, &Tok::PathSep)) =>
            {
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|m| m.0.clone()));
                let mut j = i;
                while ident(j, "super") && is(j + 1, &Tok::PathSep) {
                    here.pop();
                    j += 2;
                }
                match here.first() {
                    Some(top) => found.push((top.clone(), line)),
                    None => {
                        for name in first_segments(&toks, j) {
                            found.push((name, line));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// The top-level modules `lib.rs` declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("src/lib.rs reads");
    let toks = tokens(&lib);
    toks.windows(2)
        .filter_map(|w| match (&w[0].0, &w[1].0) {
            (Tok::Ident(m), Tok::Ident(name)) if m == "mod" => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_layer_table_places_every_top_level_module() {
    let declared = declared_modules();
    let placed: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|l| l.iter())
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        declared, placed,
        "src/lib.rs declares these modules, the layer table in tests/it/layers.rs places those: \
         place every module in one layer (and say why in docs/architecture.md)"
    );
}

#[test]
fn no_module_uses_one_of_its_own_layer_or_above() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut scanned = 0;
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src/").to_path_buf();
        // The binary's root is its own crate, above everything: it calls `vmr::cli`.
        if rel == Path::new("main.rs") {
            continue;
        }
        let module = module_of(&rel);
        let Some(top) = module.first() else {
            continue;
        };
        let Some(own) = layer_of(top) else {
            wrong.push(format!(
                "src/{}: module `{top}` is in no layer",
                rel.display()
            ));
            continue;
        };
        scanned += 1;
        let text = std::fs::read_to_string(&path).expect("a source file reads");
        for (name, line) in paths_named(&module, &text) {
            let used = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.as_str(), |(_, owner)| *owner);
            if used == top {
                continue;
            }
            match layer_of(used) {
                Some(l) if l < own => {}
                Some(l) => wrong.push(format!(
                    "src/{}:{line}: `{top}` (layer {own}) uses `{used}` (layer {l}): a module \
                     may only use modules of lower layers",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "src/{}:{line}: `{top}` uses `crate::{name}`, which the layer table does not place",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        scanned > 50,
        "only {scanned} files scanned under {}",
        src.display()
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers (tests/it/layers.rs, docs/architecture.md):\n{}",
        wrong.join("\n")
    );
}

/// The scanner finds what it must, so the test above cannot pass by seeing nothing.
#[test]
fn the_scanner_sees_every_kind_of_path() {
    let src = r##"
        //! A doc comment naming crate::audit is not a path.
        use crate::api::Client;
        use crate::{checkpoint::{self, State}, price};
        use super::sibling;
        fn f() -> u8 {
            let s = "crate::export in a string"; let r = r#"crate::status"#; let c = '"';
            let b = b"crate::resolve"; let l: &'static str = "";
            /* crate::ingest /* nested */ crate::app */
            crate::engine::go(super::super::config::X)
        }
        #[cfg(test)]
        mod tests {
            use super::*;
            use super::super::input;
        }
    "##;
    let module = vec!["status".to_owned(), "view".to_owned()];
    let found: Vec<(String, usize)> = paths_named(&module, src);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "api",
            "checkpoint",
            "price",
            "status",
            "engine",
            "config",
            "status",
            "status"
        ]
    );
    // Lines count from the string's first line break: `crate::engine` is on line 10.
    assert_eq!(found[4], ("engine".to_owned(), 10));
    // `super::` from the file `engine/mod.rs` reaches the crate root.
    let found = paths_named(&["engine".to_owned()], "fn f() { super::app::exit(); }");
    assert_eq!(found, [("app".to_owned(), 1)]);
}

/// The string literals of Rust source (plain and raw), each with its line; comments skipped.
fn string_literals(src: &str) -> Vec<(String, usize)> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < s.len() {
        match s[i] {
            '\n' => line += 1,
            '/' if s.get(i + 1) == Some(&'/') => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if s.get(i + 1) == Some(&'*') => {
                while i + 1 < s.len() && !(s[i] == '*' && s[i + 1] == '/') {
                    line += usize::from(s[i] == '\n');
                    i += 1;
                }
                i += 2;
                continue;
            }
            // A char literal: '"' must not open a string.
            '\'' if s.get(i + 2) == Some(&'\'') => {
                i += 3;
                continue;
            }
            '\'' if s.get(i + 1) == Some(&'\\') => {
                while i + 1 < s.len() && s[i + 1] != '\'' {
                    i += 1;
                }
                i += 2;
                continue;
            }
            'r' if matches!(s.get(i + 1), Some('#') | Some('"'))
                && (i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while s.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if s.get(j) == Some(&'"') {
                    let (start, at) = (j + 1, line);
                    let mut k = start;
                    loop {
                        if k >= s.len() {
                            break;
                        }
                        if s[k] == '"' && (0..hashes).all(|h| s.get(k + 1 + h) == Some(&'#')) {
                            break;
                        }
                        line += usize::from(s[k] == '\n');
                        k += 1;
                    }
                    out.push((s[start..k.min(s.len())].iter().collect(), at));
                    i = k + 1 + hashes;
                    continue;
                }
            }
            '"' => {
                let (start, at) = (i + 1, line);
                let mut k = start;
                while k < s.len() && s[k] != '"' {
                    if s[k] == '\\' {
                        k += 1;
                    }
                    line += usize::from(s.get(k) == Some(&'\n'));
                    k += 1;
                }
                out.push((s[start..k.min(s.len())].iter().collect(), at));
                i = k + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether a string literal is SQL text.
fn is_sql(lit: &str) -> bool {
    const STATEMENTS: &[&str] = &[
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        "CREATE INDEX",
        "ALTER TABLE",
        "PRAGMA ",
        "VACUUM ",
    ];
    let t = lit.trim();
    STATEMENTS.iter().any(|k| lit.contains(k))
        || (lit.contains("UPDATE ") && lit.contains(" SET "))
        || t == "BEGIN"
        || t == "COMMIT"
}

/// Modules besides `checkpoint` allowed to hold SQL: the sandbox (its own store) and the audit's
/// SQL writer, which writes SQL for DuckDB and Spark to run on the exported tables.
fn may_hold_sql(rel: &Path) -> bool {
    rel.starts_with("checkpoint")
        || rel.starts_with("sandbox")
        || rel.starts_with("audit/sql")
        || rel == Path::new("audit/sql.rs")
}

#[test]
fn only_the_checkpoint_speaks_sql() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src/").to_path_buf();
        if may_hold_sql(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file reads");
        for (lit, line) in string_literals(&text) {
            if is_sql(&lit) {
                let first = lit.lines().next().unwrap_or("").trim();
                wrong.push(format!("src/{}:{line}: {first}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "SQL outside the checkpoint (docs/architecture.md: only `checkpoint` speaks SQL; ask it \
         through a typed method instead):\n{}",
        wrong.join("\n")
    );
}

/// The SQL scanner finds SQL in every kind of literal and nothing in comments or prose.
#[test]
fn the_sql_scanner_sees_sql_in_literals_only() {
    let src = r####"
        // SELECT x FROM t in a comment
        let a = "SELECT count(*) FROM vins";
        let b = r#"UPDATE vins SET state = 'done'"#;
        let c = '"';
        let d = "the update sets nothing";
        /* INSERT INTO t VALUES (1) */
        let e = "INSERT INTO batches (id) VALUES (?1)";
    "####;
    let found: Vec<usize> = string_literals(src)
        .into_iter()
        .filter(|(l, _)| is_sql(l))
        .map(|(_, line)| line)
        .collect();
    assert_eq!(found, vec![3, 4, 8]);
}
