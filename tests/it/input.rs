//! The input reader as `vmr ingest` uses it: real files from `tests/fixtures/input/`, exact
//! rejection messages and line numbers, encodings, column overrides and file-level errors.

use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use vmr::input::{
    InputError, InputOptions, InputReader, InputRow, Verdict, check_digit, check_digit_ok,
    normalize_vin, vin_problem,
};

const A: &str = "LSVAG2186E2100001";
const B: &str = "LFV2A21K3C4000002";
const C: &str = "LHGCM82683A004352";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/input")
        .join(name)
}

fn open(name: &str) -> InputReader {
    open_with(name, &InputOptions::default())
}

fn open_with(name: &str, opts: &InputOptions) -> InputReader {
    match InputReader::open(&fixture(name), opts) {
        Ok(reader) => reader,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn reader_for(path: &Path) -> InputReader {
    InputReader::open(path, &InputOptions::default()).expect("opens")
}

fn open_err(path: &Path, opts: &InputOptions) -> String {
    match InputReader::open(path, opts) {
        Ok(_) => panic!("{} opened without error", path.display()),
        Err(e) => e.to_string(),
    }
}

/// (line, normalized VIN, verdict in words) for every row.
fn summary(reader: InputReader) -> Vec<(u64, String, String)> {
    reader
        .map(|row: InputRow| {
            let verdict = match row.verdict {
                Verdict::Accepted {
                    check_digit_ok: true,
                } => "ok".to_string(),
                Verdict::Accepted {
                    check_digit_ok: false,
                } => "ok, check digit wrong".to_string(),
                Verdict::Rejected { reason } => reason.to_string(),
            };
            (row.line, row.vin, verdict)
        })
        .collect()
}

fn row(line: u64, vin: &str, verdict: &str) -> (u64, String, String) {
    (line, vin.to_string(), verdict.to_string())
}

#[test]
fn every_rejection_reason_with_its_line() {
    let got = summary(open("rejections.csv"));
    let bad_check = format!("{}0{}", &C[..8], &C[9..]);
    let want = vec![
        row(2, A, "ok"),
        row(
            3,
            "LSVAB1234",
            r#"VIN "LSVAB1234" has 9 characters, needs 17"#,
        ),
        row(
            4,
            "LSVAB12O4E2100001",
            r#"VIN "LSVAB12O4E2100001" contains 'O' at position 8; VINs never use I, O or Q"#,
        ),
        row(5, "", "VIN is empty"),
        row(6, B, "licenseImgUrl is empty"),
        row(7, B, r#"licenseImgUrl "ftp://x" is not an http(s) URL"#),
        row(8, B, "row has 2 fields, header has 3"),
        row(9, B, "row has 4 fields, header has 3"),
        row(10, C, "ok"),
        row(11, &bad_check, "ok, check digit wrong"),
        row(
            12,
            "LSVAB-2341234567X",
            r#"VIN "LSVAB-2341234567X" contains '-' at position 6; VINs use only digits and the letters A-Z"#,
        ),
        row(
            13,
            A,
            r#"licenseImgUrl "img.example.cn/j.jpg" is not an http(s) URL"#,
        ),
        row(15, A, "ok"),
    ];
    assert_eq!(got, want);
}

#[test]
fn raw_vin_is_kept_as_written_and_fields_are_trimmed() {
    let rows: Vec<InputRow> = open("rejections.csv").collect();
    let trimmed = rows.iter().find(|r| r.line == 10).expect("line 10");
    assert_eq!(trimmed.vin_raw, format!("  {} ", C.to_lowercase()));
    assert_eq!(trimmed.vin, C);
    assert_eq!(trimmed.license_img_url, "https://img.example.cn/g.jpg");
}

#[test]
fn gbk_file_with_chinese_headers_is_detected_and_decoded() {
    let reader = open("gbk_chinese.csv");
    assert_eq!(reader.encoding(), "gb18030");
    assert_eq!(reader.vin_column(), "车架号");
    assert_eq!(reader.image_column(), "行驶证图片地址");
    let got = summary(reader);
    assert_eq!(
        got,
        vec![
            row(2, A, "ok"),
            row(3, B, "ok"),
            row(
                4,
                "LSVAB1234",
                r#"VIN "LSVAB1234" has 9 characters, needs 17"#
            ),
        ]
    );
}

#[test]
fn gbk_can_be_named_explicitly() {
    for name in ["gbk", "GB18030", " gb2312 "] {
        let opts = InputOptions {
            encoding: Some(name.into()),
            ..Default::default()
        };
        assert_eq!(summary(open_with("gbk_chinese.csv", &opts)).len(), 3);
    }
}

#[test]
fn gbk_read_as_utf8_says_which_option_to_pass() {
    let opts = InputOptions {
        encoding: Some("utf-8".into()),
        ..Default::default()
    };
    let path = fixture("gbk_chinese.csv");
    let msg = open_err(&path, &opts);
    assert!(msg.contains("header line is not valid UTF-8"), "{msg}");
    assert!(msg.contains("--encoding gbk"), "{msg}");
}

#[test]
fn utf8_bom_is_stripped_from_the_first_header() {
    let reader = open("utf8_bom.csv");
    assert_eq!(reader.encoding(), "UTF-8");
    assert_eq!(reader.vin_column(), "VIN");
    assert_eq!(reader.image_column(), "License_Img_Url");
    assert_eq!(summary(reader), vec![row(2, A, "ok"), row(3, B, "ok")]);
}

#[test]
fn line_numbers_count_quoted_line_breaks() {
    let got = summary(open("multiline.csv"));
    assert_eq!(
        got,
        vec![
            row(2, A, "ok"),
            row(4, B, "ok"),
            row(7, C, "ok"),
            row(
                8,
                A,
                r#"row spans lines 8-9 because a quote in column "licenseImgUrl" is never closed; close the quote so the rows it swallowed are read"#
            ),
        ]
    );
}

#[test]
fn an_unclosed_quote_in_another_column_does_not_swallow_rows_silently() {
    let got = summary(open("unclosed_remark.csv"));
    assert_eq!(
        got,
        vec![row(
            2,
            A,
            r#"row spans lines 2-4 because a quote in column "remark" is never closed; close the quote so the rows it swallowed are read"#
        )]
    );
}

#[test]
fn column_options_override_detection() {
    let opts = InputOptions {
        vin_column: Some("Chassis".into()),
        image_column: Some("photo".into()),
        ..Default::default()
    };
    let reader = open_with("custom_columns.csv", &opts);
    assert_eq!(reader.vin_column(), "chassis");
    assert_eq!(summary(reader), vec![row(2, A, "ok")]);

    let opts = InputOptions {
        vin_column: Some("frame".into()),
        ..Default::default()
    };
    assert_eq!(
        open_err(&fixture("custom_columns.csv"), &opts),
        format!(
            "{}: no column named \"frame\" as --vin-column asks (headers: chassis, photo, vin)",
            fixture("custom_columns.csv").display()
        )
    );
}

#[test]
fn a_semicolon_file_is_read_and_a_forced_comma_says_why_it_is_not_csv() {
    assert_eq!(summary(open("semicolons.csv")), vec![row(2, A, "ok")]);
    let opts = InputOptions {
        delimiter: Some(b','),
        ..Default::default()
    };
    let path = fixture("semicolons.csv");
    assert_eq!(
        open_err(&path, &opts),
        format!(
            "{}: not a CSV file (its first line \"vin;licenseImgUrl\" is separated by semicolons, not by the --delimiter given); save it from Excel as \"CSV UTF-8\" or \"CSV\"",
            path.display()
        )
    );
}

#[test]
fn file_level_errors_name_the_file_and_what_to_do() {
    let none = InputOptions::default();
    let cases = [
        ("missing.csv", "no such file; check the path"),
        (
            "empty.csv",
            "the file is empty; it needs a header line such as `vin,licenseImgUrl` and one row per vehicle",
        ),
        (
            "bom_only.csv",
            "the file is empty; it needs a header line such as `vin,licenseImgUrl` and one row per vehicle",
        ),
        (
            "no_header.csv",
            "no header line (line 1 starts with the VIN \"LSVAG2186E2100001\"); add a first line naming the columns, such as `vin,licenseImgUrl`",
        ),
        (
            "binary.xlsx",
            "not a spreadsheet vmr can read (a damaged zip archive: invalid Zip archive: Could not find EOCD); save it from Excel as .xlsx or as \"CSV UTF-8\"",
        ),
        (
            "no_vin_column.csv",
            "no VIN column (headers: plate, licenseImgUrl); name it `vin` or pass --vin-column",
        ),
        (
            "no_image_column.csv",
            "no licence image column (headers: vin, plate); name it `licenseImgUrl` or pass --image-column",
        ),
    ];
    for (name, want) in cases {
        let path = fixture(name);
        let msg = open_err(&path, &none);
        assert_eq!(msg, format!("{}: {want}", path.display()), "{name}");
        assert!(!msg.contains('\n'), "{name}: one line");
    }

    let opts = InputOptions {
        encoding: Some("klingon".into()),
        ..Default::default()
    };
    let path = fixture("rejections.csv");
    assert_eq!(
        open_err(&path, &opts),
        format!(
            "{}: unknown encoding \"klingon\"; use utf-8, gbk or gb18030, or leave --encoding out to detect it",
            path.display()
        )
    );
}

#[test]
fn unreadable_file_is_a_file_level_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = InputReader::open(dir.path(), &InputOptions::default()).err();
    assert!(
        matches!(err, Some(InputError::Unreadable { .. })),
        "{err:?}"
    );
    let msg = open_err(dir.path(), &InputOptions::default());
    assert!(msg.contains("cannot be read"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn binary_file_without_zip_header_is_not_csv() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(b"vin,licenseImgUrl\n\x00\x01\x02\x03")
        .expect("write");
    let msg = open_err(file.path(), &InputOptions::default());
    assert!(
        msg.contains("not a CSV file (it contains NUL bytes"),
        "{msg}"
    );
}

#[test]
fn fingerprint_is_the_content_hash_whatever_the_name() {
    let bytes = std::fs::read(fixture("rejections.csv")).expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("renamed.csv");
    std::fs::write(&copy, &bytes).expect("copy");

    let original = open("rejections.csv");
    let renamed = InputReader::open(&copy, &InputOptions::default()).expect("copy opens");
    let want = hex_prefix(&bytes);
    assert_eq!(original.fingerprint(), want);
    assert_eq!(renamed.fingerprint(), want);
    assert_eq!(want.len(), 16);
    assert_eq!(renamed.file_name(), copy.to_string_lossy());
    assert_ne!(open("utf8_bom.csv").fingerprint(), want);
}

fn hex_prefix(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A UTF-8 character cut by the 64 KiB sniffing window must not make the file look like GBK,
/// and a large file is fingerprinted and read to the end.
#[test]
fn large_utf8_file_with_a_character_on_the_sniffing_boundary() {
    let mut text = String::from("vin,licenseImgUrl,owner\n");
    let row = format!("{A},https://img.example.cn/a.jpg,x\n");
    while text.len() + row.len() < 64 * 1024 - 40 {
        text.push_str(&row);
    }
    let line = text.lines().count() as u64 + 1;
    // Pad so that the three-byte '车' straddles byte 65,536.
    let pad = 64 * 1024 - 1 - text.len() - format!("{A},https://img.example.cn/a.jpg,").len();
    text.push_str(&format!(
        "{A},https://img.example.cn/a.jpg,{}车\n",
        "x".repeat(pad)
    ));
    for _ in 0..1000 {
        text.push_str(&row);
    }
    let boundary = text.as_bytes()[64 * 1024 - 1];
    assert!(boundary >= 0x80, "the test must cut a character");

    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    let reader = InputReader::open(file.path(), &InputOptions::default()).expect("opens");
    assert_eq!(reader.encoding(), "UTF-8");
    assert_eq!(reader.fingerprint(), hex_prefix(text.as_bytes()));
    let rows: Vec<InputRow> = reader.collect();
    assert_eq!(rows.len() as u64, line - 2 + 1 + 1000);
    assert!(rows.iter().all(|r| r.verdict
        == Verdict::Accepted {
            check_digit_ok: true
        }));
    assert_eq!(rows.last().map(|r| r.line), Some(line + 1000));
}

/// An Excel export whose first 64 KiB happen to be ASCII is taken for UTF-8; the first
/// Chinese row then says how to read the file properly instead of being mangled.
#[test]
fn gbk_after_the_sniffing_window_points_at_the_encoding_option() {
    let mut bytes = b"vin,licenseImgUrl,owner\n".to_vec();
    let row = format!("{A},https://img.example.cn/a.jpg,x\n");
    while bytes.len() < 70 * 1024 {
        bytes.extend_from_slice(row.as_bytes());
    }
    let line = bytes.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    bytes.extend_from_slice(format!("{B},https://img.example.cn/b.jpg,").as_bytes());
    bytes.extend_from_slice(b"\xc9\xcf\xba\xa3\n"); // 上海 in GBK

    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&bytes).expect("write");
    let reader = InputReader::open(file.path(), &InputOptions::default()).expect("opens");
    let last = reader.last().expect("rows");
    assert_eq!(last.line, line);
    let Verdict::Rejected { reason } = last.verdict else {
        panic!("the last row is rejected");
    };
    assert_eq!(
        reason.to_string(),
        "row is not valid UTF-8 (column \"owner\"); if Excel saved the file in Chinese, pass --encoding gbk"
    );
}

#[test]
fn sample_fleet_has_exactly_the_documented_bad_rows() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/fleet.csv");
    let rows: Vec<InputRow> = reader_for(&path).collect();
    assert_eq!(rows.len(), 208);
    // Every row that is not rejected has a correct check digit, so "ok" filters exactly these.
    let reasons: Vec<(u64, String, String)> = summary(reader_for(&path))
        .into_iter()
        .filter(|(_, _, verdict)| verdict != "ok")
        .collect();
    assert_eq!(
        reasons,
        vec![
            row(
                25,
                "LSVAB1234",
                r#"VIN "LSVAB1234" has 9 characters, needs 17"#
            ),
            row(
                60,
                "LFVJWV8O0NF767091",
                r#"VIN "LFVJWV8O0NF767091" contains 'O' at position 8; VINs never use I, O or Q"#
            ),
            row(98, "LHGL0SC67P3945292", "licenseImgUrl is empty"),
            row(
                143,
                "LVH1V3YS7NK568277",
                r#"licenseImgUrl "ftp://img.example-fleet.cn/license/2024/06/scan-0141.jpg" is not an http(s) URL"#
            ),
        ]
    );
    let lrw: Vec<u64> = rows
        .iter()
        .filter(|r| r.vin.starts_with("LRW"))
        .map(|r| r.line)
        .collect();
    assert_eq!(lrw, vec![40, 116, 176]);
    let dup = &rows[(82 - 2) as usize];
    assert_eq!(rows[(189 - 2) as usize].vin, dup.vin);
}

/// Reads a large generated file and reports the time; run with
/// `cargo test --release --test it input:: -- --ignored --nocapture`.
#[test]
#[ignore = "timing run on a million rows"]
fn million_rows_read_quickly() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        writeln!(out, "vin,licenseImgUrl").expect("write");
        for i in 0..1_000_000u32 {
            let vin = format!("LSVAG2180E2{i:06}");
            let vin = format!(
                "{}{}{}",
                &vin[..8],
                check_digit(&vin).expect("valid"),
                &vin[9..]
            );
            writeln!(
                out,
                "{vin},https://img.example-fleet.cn/license/2024/06/{i:08x}.jpg"
            )
            .expect("write");
        }
    }
    let started = std::time::Instant::now();
    let reader = InputReader::open(file.path(), &InputOptions::default()).expect("opens");
    let accepted = reader
        .filter(|r| matches!(r.verdict, Verdict::Accepted { .. }))
        .count();
    eprintln!("1,000,000 rows read in {:?}", started.elapsed());
    assert_eq!(accepted, 1_000_000);
}

fn vin_char() -> impl Strategy<Value = char> {
    prop::sample::select(
        "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
            .chars()
            .collect::<Vec<_>>(),
    )
}

fn valid_vin() -> impl Strategy<Value = String> {
    prop::collection::vec(vin_char(), 17).prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #[test]
    fn normalize_is_idempotent_trims_and_upper_cases(raw in "\\PC{0,30}") {
        let once = normalize_vin(&raw);
        prop_assert_eq!(normalize_vin(&once), once.clone());
        prop_assert_eq!(once.trim(), once.as_str());
        prop_assert!(!once.chars().any(|c| c.is_ascii_lowercase()));
    }

    #[test]
    fn padding_and_case_do_not_change_a_vin(vin in valid_vin(), pad in "[ \t\u{3000}]{0,3}") {
        let messy = format!("{pad}{}{pad}", vin.to_lowercase());
        prop_assert_eq!(normalize_vin(&messy), vin);
    }

    #[test]
    fn setting_the_check_digit_makes_it_ok(vin in valid_vin()) {
        prop_assert!(vin_problem(&vin).is_none());
        let digit = check_digit(&vin).expect("well-formed VIN has a check digit");
        prop_assert!(digit.is_ascii_digit() || digit == 'X');
        let fixed = format!("{}{digit}{}", &vin[..8], &vin[9..]);
        prop_assert!(check_digit_ok(&fixed));
        for other in "0123456789X".chars().filter(|c| *c != digit) {
            let wrong = format!("{}{other}{}", &vin[..8], &vin[9..]);
            prop_assert!(!check_digit_ok(&wrong));
        }
    }

    /// Every weight but position 9's is non-zero modulo 11, so changing one character to one
    /// with a different value (49 CFR 565.15 table) always breaks the check digit.
    #[test]
    fn changing_one_character_of_a_good_vin_is_noticed(
        pos in (0usize..17).prop_filter("not the check digit", |p| *p != 8),
        c in vin_char(),
        which in 0usize..3,
    ) {
        let good = KNOWN_GOOD[which];
        prop_assert!(check_digit_ok(good));
        let mut chars: Vec<char> = good.chars().collect();
        let before = chars[pos];
        chars[pos] = c;
        let altered: String = chars.into_iter().collect();
        prop_assert_eq!(check_digit_ok(&altered), value(before) == value(c));
    }
}

const KNOWN_GOOD: [&str; 3] = [
    "1M8GDM9AXKP042788",
    "11111111111111111",
    "1HGCM82633A004352",
];

/// The transliteration table, written out independently of the library's.
fn value(c: char) -> u32 {
    let table = [
        ("0123456789", 0),
        ("ABCDEFGH", 1),
        ("JKLMN", 1),
        ("P", 7),
        ("R", 9),
        ("STUVWXYZ", 2),
    ];
    for (letters, first) in table {
        if let Some(i) = letters.find(c) {
            return first + i as u32;
        }
    }
    panic!("{c} is not a VIN character")
}

#[test]
fn known_good_vins_pass_and_altered_ones_fail() {
    for vin in KNOWN_GOOD {
        assert!(check_digit_ok(vin), "{vin}");
        assert_eq!(check_digit(vin), vin.chars().nth(8));
    }
    for vin in [
        "1M8GDM9A1KP042788",
        "11111111211111111",
        "1HGCM82633A004353",
        "2HGCM82633A004352",
    ] {
        assert!(!check_digit_ok(vin), "{vin}");
    }
    assert!(!check_digit_ok("1HGCM8263"));
    assert_eq!(check_digit("1HGCM82633A00435O"), None);
}

#[test]
fn windows_line_endings_keep_line_numbers() {
    let text = format!(
        "vin,licenseImgUrl,remark\r\n{A},https://img.example.cn/a.jpg,\"two\r\nlines\"\r\n\r\n{B},https://img.example.cn/b.jpg,x\r\nLSVAB1234,https://img.example.cn/c.jpg,y\r\n"
    );
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    assert_eq!(
        summary(reader_for(file.path())),
        vec![
            row(2, A, "ok"),
            row(5, B, "ok"),
            row(
                6,
                "LSVAB1234",
                r#"VIN "LSVAB1234" has 9 characters, needs 17"#
            ),
        ]
    );
}

#[test]
fn blank_lines_and_a_missing_final_newline_keep_line_numbers() {
    for ending in ["\n", "\r\n"] {
        for last in ["", ending] {
            let text = [
                "vin,licenseImgUrl".to_string(),
                String::new(),
                format!("{A},https://img.example.cn/a.jpg"),
                String::new(),
                String::new(),
                format!("{B},https://img.example.cn/b.jpg"),
                String::new(),
                format!("{C},https://img.example.cn/c.jpg{last}"),
            ]
            .join(ending);
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(text.as_bytes()).expect("write");
            let rows: Vec<InputRow> = reader_for(file.path()).collect();
            let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
            assert_eq!(lines, vec![3, 6, 8], "{text:?}");
            assert_eq!(rows[2].license_img_url, "https://img.example.cn/c.jpg");
            assert_eq!(rows[2].vin_raw, C);
        }
    }
}

/// A Latin-1 file is neither UTF-8 nor Chinese GBK: it is refused (exit 2) rather than decoded
/// as GB18030, which would turn "café" into a Chinese character sent to the vendor. Naming the
/// encoding reads it.
#[test]
fn latin1_file_is_refused_naming_the_file_and_the_encoding_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.csv");
    let mut bytes = b"vin,licenseImgUrl\n".to_vec();
    bytes.extend_from_slice(format!("{A},https://img.example.com/caf").as_bytes());
    bytes.extend_from_slice(b"\xe9.jpg\n"); // é in Latin-1
    std::fs::write(&path, &bytes).expect("write");

    let err = InputReader::open(&path, &InputOptions::default()).err();
    assert!(
        matches!(err, Some(InputError::UndetectedEncoding { .. })),
        "{err:?}"
    );
    let msg = open_err(&path, &InputOptions::default());
    assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
    assert!(msg.contains("--encoding gbk"), "{msg}");
    assert!(!msg.contains('\n'));

    // The command refuses it as an input-file error and records nothing.
    let out = assert_cmd::Command::cargo_bin("vmr")
        .expect("binary")
        .env_clear()
        .current_dir(dir.path())
        .args(["ingest", "--input", "latin1.csv", "--state", "state"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("latin1.csv") && stderr.contains("--encoding"),
        "{stderr}"
    );

    // An explicit --encoding always wins.
    let opts = InputOptions {
        encoding: Some("latin1".into()),
        ..Default::default()
    };
    let rows: Vec<InputRow> = open_with_path(&path, &opts).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].license_img_url, "https://img.example.com/café.jpg");
    let opts = InputOptions {
        encoding: Some("gbk".into()),
        ..Default::default()
    };
    assert!(InputReader::open(&path, &opts).is_ok());
}

fn open_with_path(path: &Path, opts: &InputOptions) -> InputReader {
    InputReader::open(path, opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
