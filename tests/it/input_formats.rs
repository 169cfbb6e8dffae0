//! Inputs as fleet teams hold them: spreadsheets (xlsx written here with rust_xlsxwriter; xls
//! and ods from `tests/fixtures/input/make_sheets.py`), semicolon, tab and pipe separated text,
//! loose and Chinese headers under title rows, stdin. Each must record the same `requests`
//! rows as the plain CSV of the same fleet (the input's name and lines aside), through the
//! real binary: `vmr ingest`, then `vmr export --format csv`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use vmr::input::{IMAGE_HEADERS, InputOptions, InputReader, VIN_HEADERS, Verdict};

const A: &str = "LSVAG2186E2100001";
const B: &str = "LFV2A21K3C4000002";
const C: &str = "LHGCM82683A004352";

/// The fleet every format below holds (keep in step with ROWS in make_sheets.py): two good
/// rows, a short VIN, an empty row, a row without a photo, and A again in lower case. Cells:
/// VIN, licence image URL, remark (`None` for an empty cell).
const FLEET: [[Option<&str>; 3]; 6] = [
    [
        Some(A),
        Some("https://img.example.cn/a.jpg"),
        Some("上海, 浦东"),
    ],
    [Some(B), Some("https://img.example.cn/b.jpg"), None],
    [
        Some("LSVAB1234"),
        Some("https://img.example.cn/c.jpg"),
        Some("too short"),
    ],
    [None, None, None],
    [Some(C), None, Some("no photo")],
    [
        Some("lsvag2186e2100001"),
        Some("https://img.example.cn/a2.jpg"),
        Some("seen before"),
    ],
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/input")
        .join(name)
}

/// The fleet as text with `sep`, a header of `names`, quoted where the csv crate would.
fn fleet_text(sep: u8, names: [&str; 3]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(sep)
        .flexible(true)
        .from_writer(Vec::new());
    w.write_record(names).expect("header");
    for row in FLEET {
        w.write_record(row.map(|c| c.unwrap_or(""))).expect("row");
    }
    w.into_inner().expect("text")
}

/// An xlsx of the fleet: `title` rows, then the header `names`, then the rows, at the rows
/// they would have in Excel.
fn fleet_xlsx(path: &Path, sheet: &str, titles: &[&str], names: [&str; 3]) {
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.set_name(sheet).expect("sheet name");
    let mut r = 0u32;
    for t in titles {
        ws.write_string(r, 0, *t).expect("title");
        r += 2;
    }
    for (c, n) in names.iter().enumerate() {
        ws.write_string(r, c as u16, *n).expect("header");
    }
    for row in FLEET {
        r += 1;
        for (c, cell) in row.iter().enumerate() {
            if let Some(v) = cell {
                ws.write_string(r, c as u16, *v).expect("cell");
            }
        }
    }
    book.save(path).expect("xlsx written");
}

/// What a `requests` row says about a vehicle, the input's name and line aside; the image
/// column's header in a message is written `<image>`.
type Request = (String, String, String, String);

/// Runs `vmr ingest` on `input` (with `args`, and `stdin` piped when given) in a fresh
/// directory, exports the tables as CSV, and returns the `requests` rows: what they say about
/// each vehicle, and each row's input_file and input_line. Panics unless ingest exits 0.
fn ingest_requests(
    input: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    image_header: &str,
) -> (Vec<Request>, Vec<(String, String)>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vmr = |sub: &[&str]| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .args(["--state", "state", "--out", "out"])
            .args(sub);
        c
    };
    let mut ingest = vmr(&[&["ingest", "--input", input], args].concat());
    ingest.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    ingest.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ingest.spawn().expect("vmr runs");
    if let Some(bytes) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("stdin written");
    }
    let out = child.wait_with_output().expect("vmr ends");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ingest {input}: {}{summary}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = vmr(&["export", "--format", "csv"])
        .output()
        .expect("export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let mut r = csv::Reader::from_path(dir.path().join("out/requests.csv")).expect("requests");
    let headers = r.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (mut rows, mut origins) = (Vec::new(), Vec::new());
    for rec in r.records() {
        let rec = rec.expect("row");
        rows.push((
            rec[col("vin")].to_owned(),
            rec[col("license_img_url")].to_owned(),
            rec[col("status")].to_owned(),
            rec[col("message")].replace(image_header, "<image>"),
        ));
        origins.push((
            rec[col("input_file")].to_owned(),
            rec[col("input_line")].to_owned(),
        ));
    }
    rows.sort();
    (rows, origins, summary)
}

/// The requests of the plain CSV of the fleet: the reference every format must match.
fn reference() -> Vec<Request> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleet.csv");
    std::fs::write(&path, fleet_text(b',', ["vin", "licenseImgUrl", "remark"])).expect("csv");
    let (rows, origins, _) =
        ingest_requests(path.to_str().expect("utf-8"), &[], None, "licenseImgUrl");
    // The reference itself: A and B queued once, the short VIN and C rejected.
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        origins.contains(&("fleet.csv".into(), "6".into())),
        "{origins:?}"
    );
    rows
}

#[test]
fn separated_by_semicolons_tabs_or_pipes_reads_like_csv() {
    let want = reference();
    let dir = tempfile::tempdir().expect("tempdir");
    for (sep, name) in [(b';', "semicolon"), (b'\t', "tab"), (b'|', "pipe")] {
        let path = dir.path().join(format!("fleet-{name}.txt"));
        std::fs::write(&path, fleet_text(sep, ["vin", "licenseImgUrl", "remark"])).expect("file");
        let (got, origins, summary) =
            ingest_requests(path.to_str().expect("utf-8"), &[], None, "licenseImgUrl");
        assert_eq!(got, want, "{name}");
        assert!(
            summary.contains(&format!("separator: {name}, sniffed")),
            "{name}: {summary}"
        );
        assert!(origins.contains(&(format!("fleet-{name}.txt"), "6".into())));
        // Forced, the same.
        let forced = ingest_requests(
            path.to_str().expect("utf-8"),
            &["--delimiter", name],
            None,
            "licenseImgUrl",
        );
        assert_eq!(forced.0, want, "{name} forced");
        assert!(
            forced
                .2
                .contains(&format!("separator: {name} (--delimiter)"))
        );
    }
}

#[test]
fn xlsx_with_a_title_row_and_a_chinese_header_reads_like_csv() {
    let want = reference();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleet.xlsx");
    fleet_xlsx(
        &path,
        "车队",
        &["2026年12月 车队清单"],
        ["车辆识别代码", "行驶证照片", "备注"],
    );
    let (got, origins, summary) =
        ingest_requests(path.to_str().expect("utf-8"), &[], None, "行驶证照片");
    assert_eq!(got, want);
    assert!(
        summary.contains("header found on line 3; the rows above it were skipped as titles"),
        "{summary}"
    );
    // The input is named with its sheet, and each row by the sheet's row number: the header is
    // row 3, the empty fleet row (row 7) is skipped, C's row without a photo is row 8.
    assert!(
        origins.iter().all(|(file, _)| file == "fleet.xlsx#车队"),
        "{origins:?}"
    );
    let lines: Vec<&str> = origins.iter().map(|(_, l)| l.as_str()).collect();
    for line in ["4", "5", "6", "8"] {
        assert!(lines.contains(&line), "{lines:?}");
    }
}

#[test]
fn legacy_xls_and_ods_read_like_csv() {
    let want = reference();
    for (name, image, sheet) in [
        ("fleet.xls", "行驶证照片", "车队"),
        ("fleet.ods", "License image URL", "Fleet"),
    ] {
        let path = fixture(name);
        let (got, origins, _) = ingest_requests(path.to_str().expect("utf-8"), &[], None, image);
        assert_eq!(got, want, "{name}");
        assert!(
            origins.iter().all(|(f, _)| *f == format!("{name}#{sheet}")),
            "{origins:?}"
        );
    }
}

#[test]
fn stdin_reads_like_csv_and_is_recorded_as_stdin() {
    let want = reference();
    let text = fleet_text(b';', ["VIN码", "License Img Url", "备注"]);
    let (got, origins, _) = ingest_requests("-", &[], Some(&text), "License Img Url");
    assert_eq!(got, want);
    assert!(origins.iter().all(|(f, _)| f == "stdin"), "{origins:?}");
}

#[test]
fn every_sheet_with_star_each_its_own_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    for (name, vin) in [("North", A), ("Empty", ""), ("South", B)] {
        let ws = book.add_worksheet();
        ws.set_name(name).expect("name");
        if !vin.is_empty() {
            ws.write_string(0, 0, "vin").expect("h");
            ws.write_string(0, 1, "licenseImgUrl").expect("h");
            ws.write_string(1, 0, vin).expect("v");
            ws.write_string(1, 1, "https://img.example.cn/x.jpg")
                .expect("u");
        }
    }
    book.save(&path).expect("saved");
    let (rows, origins, summary) = ingest_requests(
        path.to_str().expect("utf-8"),
        &["--sheet", "*"],
        None,
        "licenseImgUrl",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mut files: Vec<&str> = origins.iter().map(|(f, _)| f.as_str()).collect();
    files.sort();
    assert_eq!(files, ["two.xlsx#North", "two.xlsx#South"]);
    assert!(summary.contains("empty sheets skipped: Empty"), "{summary}");

    // A refresh or retry buys again the VINs of one input: refused for several sheets, before
    // anything is recorded.
    let out = assert_cmd::Command::cargo_bin("vmr")
        .expect("binary")
        .env_clear()
        .current_dir(dir.path())
        .args(["--sandbox", "submit", "--input", "two.xlsx", "--sheet", "*"])
        .args(["--refresh-older-than", "90d"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("give one sheet with --sheet NAME"),
        "{stderr}"
    );
    assert!(!dir.path().join("vmr-sandbox-state").exists());

    // By name and by position, one sheet.
    let (rows, origins, _) =
        ingest_requests(path.to_str().expect("utf-8"), &["--sheet", "3"], None, "x");
    assert_eq!(rows.len(), 1);
    assert_eq!(origins[0].0, "two.xlsx#South");
    let (by_name, named, _) = ingest_requests(
        path.to_str().expect("utf-8"),
        &["--sheet", "South"],
        None,
        "x",
    );
    assert_eq!((by_name, named), (rows, origins));
    let opts = InputOptions {
        sheet: Some("Nowhere".into()),
        ..Default::default()
    };
    let err = InputReader::open(&path, &opts).expect_err("no such sheet");
    assert!(
        err.to_string()
            .contains("no sheet \"Nowhere\" (sheets: North, Empty, South)"),
        "{err}"
    );
}

#[test]
fn a_vin_in_a_number_cell_is_rejected_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("numbers.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.write_string(0, 0, "vin").expect("h");
    ws.write_string(0, 1, "licenseImgUrl").expect("h");
    ws.write_number(1, 0, 12345678901234567.0).expect("n");
    ws.write_string(1, 1, "https://img.example.cn/n.jpg")
        .expect("u");
    ws.write_string(2, 0, A).expect("v");
    ws.write_string(2, 1, "https://img.example.cn/a.jpg")
        .expect("u");
    book.save(&path).expect("saved");
    let rows: Vec<_> = InputReader::open(&path, &InputOptions::default())
        .expect("opens")
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 2);
    let Verdict::Rejected { reason } = &rows[0].verdict else {
        panic!("a number is not a VIN: {rows:?}");
    };
    assert_eq!(
        reason.to_string(),
        "VIN cell holds the number \"12345678901234568\", not text: Excel keeps only 15 digits of a number, so the VIN may have changed; format the VIN column as Text and type it again"
    );
    assert_eq!(
        rows[1].verdict,
        Verdict::Accepted {
            check_digit_ok: true
        }
    );
}

/// Every synonym of the tables vmr documents is read, from a real file.
#[test]
fn each_header_synonym_is_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.csv");
    let read = |vin: &str, image: &str| {
        std::fs::write(
            &path,
            format!("{vin},{image}\n{A},https://img.example.cn/a.jpg\n"),
        )
        .expect("file");
        let r = InputReader::open(&path, &InputOptions::default())
            .unwrap_or_else(|e| panic!("{vin} / {image}: {e}"));
        assert_eq!((r.vin_column(), r.image_column()), (vin, image));
        assert_eq!(r.count(), 1);
    };
    for vin in VIN_HEADERS {
        read(vin, "licenseImgUrl");
    }
    for image in IMAGE_HEADERS {
        read("vin", image);
    }
    // What people type, as the issue lists it.
    for (vin, image) in [
        ("VIN码", "License Img Url"),
        ("车辆识别代码", "License image URL"),
        ("ＶＩＮ", "行驶证照片"),
        ("Vin No.", "LICENSE_IMG_URL"),
    ] {
        read(vin, image);
    }
}

#[test]
fn two_columns_for_one_role_warn_or_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two.csv");
    // Two synonyms of different rank: the more specific one is read, with a warning.
    std::fs::write(
        &path,
        format!("vin,行驶证,licenseImgUrl\n{A},not a url,https://img.example.cn/a.jpg\n"),
    )
    .expect("file");
    let r = InputReader::open(&path, &InputOptions::default()).expect("opens");
    assert_eq!(r.image_column(), "licenseImgUrl");
    assert!(
        r.notes()
            .iter()
            .any(|n| n.contains("\"licenseImgUrl\"") && n.contains("\"行驶证\"")),
        "{:?}",
        r.notes()
    );
    // The same synonym twice: refused, naming both, exit 2.
    std::fs::write(
        &path,
        format!("vin,License Img Url,license_img_url\n{A},https://a.cn/1.jpg,https://a.cn/2.jpg\n"),
    )
    .expect("file");
    let out = assert_cmd::Command::cargo_bin("vmr")
        .expect("binary")
        .env_clear()
        .current_dir(dir.path())
        .args(["--state", "state", "ingest", "--input", "two.csv"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains(
            "two.csv: line 1: columns \"License Img Url\" and \"license_img_url\" both match the same column name"
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists(), "nothing recorded");
}

/// A NUL past the 64 KiB the encoding is sniffed from rejects its row, naming line and column;
/// the rows around it are read.
#[test]
fn a_nul_anywhere_rejects_its_row() {
    let mut text = b"vin,licenseImgUrl,remark\n".to_vec();
    let row = format!("{A},https://img.example.cn/a.jpg,x\n");
    while text.len() < 100 * 1024 {
        text.extend_from_slice(row.as_bytes());
    }
    let line = text.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    text.extend_from_slice(
        format!("{B},https://img.example.cn/b.jpg,ab\0cd\n{C},https://img.example.cn/c.jpg,y\n")
            .as_bytes(),
    );
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(&text).expect("write");
    let rows: Vec<_> = InputReader::open(file.path(), &InputOptions::default())
        .expect("opens")
        .collect();
    let bad = rows.iter().find(|r| r.line == line).expect("the NUL row");
    assert_eq!(
        bad.verdict,
        Verdict::Rejected {
            reason: vmr::input::RowProblem::Nul {
                column: "remark".into()
            }
        }
    );
    assert_eq!(
        rows.last().map(|r| (r.line, r.vin.as_str())),
        Some((line + 1, C))
    );
    // In the VIN cell, the NUL is recorded as U+FFFD: PostgreSQL text cannot hold NUL.
    let mut text = b"vin,licenseImgUrl\n".to_vec();
    while text.len() < 70 * 1024 {
        text.extend_from_slice(format!("{A},https://img.example.cn/a.jpg\n").as_bytes());
    }
    text.extend_from_slice(format!("{B}\0,https://img.example.cn/b.jpg\n").as_bytes());
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(&text).expect("write");
    let last = InputReader::open(file.path(), &InputOptions::default())
        .expect("opens")
        .last()
        .expect("rows");
    assert_eq!(last.vin_raw, format!("{B}\u{fffd}"));
    assert!(matches!(last.verdict, Verdict::Rejected { .. }));
}

/// An unclosed quote near the top stops at the record-size limit, naming the line, instead of
/// reading the whole file into one field; a file of CR-only lines is refused at once.
#[test]
fn a_runaway_record_stops_at_the_limit() {
    let mut text = format!(
        "vin,licenseImgUrl,remark\n{A},https://img.example.cn/a.jpg,ok\n{B},https://img.example.cn/b.jpg,\"never closed\n"
    );
    let filler = format!("{C},https://img.example.cn/c.jpg,x\n");
    while text.len() < 3 << 20 {
        text.push_str(&filler);
    }
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(text.as_bytes()).expect("write");
    let mut reader = InputReader::open(file.path(), &InputOptions::default()).expect("opens");
    let first = reader.next().expect("row 2");
    assert_eq!(first.line, 2);
    let runaway = reader.next().expect("the runaway row");
    assert_eq!(runaway.line, 3);
    assert!(
        matches!(
            &runaway.verdict,
            Verdict::Rejected { reason } if reason.to_string().starts_with("a row longer than 1 MiB starts here")
        ),
        "{runaway:?}"
    );
    assert!(reader.next().is_none());

    // Through `vmr ingest`: the rows before are recorded, the runaway row rejected with its
    // line, the batch marked incomplete, and the run ends with exit 2 saying so.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("runaway.csv"), &text).expect("write");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(["--state", "state", "ingest", "--input", "runaway.csv"])
        .output()
        .expect("vmr runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("reading stopped partway"), "{stderr}");
    let db = rusqlite::Connection::open(dir.path().join("state/checkpoint.sqlite")).expect("db");
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT input_line, state FROM vins ORDER BY input_line")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(rows, [(2, "queued".into()), (3, "rejected".into())]);
    let complete: i64 = db
        .query_row("SELECT complete FROM batches", [], |r| r.get(0))
        .expect("batch");
    assert_eq!(complete, 0);

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mac.csv"),
        format!("vin,licenseImgUrl\r{A},https://img.example.cn/a.jpg\r"),
    )
    .expect("write");
    let err = InputReader::open(&dir.path().join("mac.csv"), &InputOptions::default())
        .expect_err("CR-only lines");
    assert!(
        err.to_string()
            .contains("lines end with a carriage return only"),
        "{err}"
    );
}

#[test]
fn a_zip_that_is_no_workbook_is_refused() {
    let err = InputReader::open(&fixture("binary.xlsx"), &InputOptions::default())
        .expect_err("not a workbook");
    assert!(
        err.to_string().contains("not a spreadsheet vmr can read"),
        "{err}"
    );
}

/// An ods is loaded whole, so one whose sheet XML unpacks past the limit is refused, with what
/// to do, before calamine reads it.
#[test]
fn an_ods_too_large_to_load_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.ods");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).expect("create"));
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("mimetype", opts).expect("entry");
    zip.write_all(b"application/vnd.oasis.opendocument.spreadsheet")
        .expect("write");
    zip.start_file("content.xml", opts).expect("entry");
    let block = vec![b' '; 1 << 20];
    for _ in 0..101 {
        zip.write_all(&block).expect("write");
    }
    zip.finish().expect("zip");
    let err = InputReader::open(&path, &InputOptions::default()).expect_err("too large");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: an ods sheet (uncompressed) of 101 MiB is too large to load (vmr loads xls and ods sheets whole, up to 100 MiB); save it as .xlsx or as \"CSV UTF-8\", which are read as a stream",
            path.display()
        )
    );
}
