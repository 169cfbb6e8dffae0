//! Flatten: stored report bodies → Arrow record batches for `reports`, `records`, `overview`
//! and `exceptions`.
//!
//! This is the CPU-bound heart of export, run in parallel over slices of a chunk. It reads the
//! REPORT through the API's borrowed view (`api::view`, the one place that knows the wire
//! format) and converts each field to its column type. Every conversion is total: a value that
//! does not fit becomes null and is counted per `table.column`, and a body that holds no REPORT
//! at all yields no rows and is listed as a bad body. Nothing here may panic on any input.

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

use super::schema::{ExceptionCols, OverviewCols, RecordCols, ReportCols};
use crate::api::Endpoint;
use crate::api::outcome::{parse_report, report_json};
use crate::api::view::{
    Conv, Finding, Held, NotThere, OverviewView, PartSlot, RecordsView, ReportView, Scalar, Slot,
};

/// One row of the checkpoint's `reports` table, as export reads it.
#[derive(Debug, Clone)]
pub struct SourceReport {
    /// The normalized VIN.
    pub vin: String,
    /// The requestId the report was bought under, when known.
    pub request_id: Option<String>,
    /// The vendor's `taskNo` for the answer, if any.
    pub task_no: Option<String>,
    /// `generate` or `get`: where the REPORT sits in the body.
    pub endpoint: String,
    /// Milliseconds since the epoch, UTC.
    pub fetched_at: i64,
    /// The raw HTTP response body, byte for byte.
    pub body: Vec<u8>,
}

/// A body that holds no usable REPORT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadBody {
    /// The VIN whose stored body it is.
    pub vin: String,
    /// Why no report could be read from it.
    pub reason: String,
}

/// Data-quality counters: values coerced to null per `table.column`, and containers of the
/// wrong shape (an `overview` that is not an object, a `result_content` that is not an array,
/// an element of it that is not a record, an `exceptions` list that is not a list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Quality {
    /// Values that did not fit their column and were written as null, per `table.column`.
    pub coerced_to_null: BTreeMap<&'static str, u64>,
    /// Containers of the wrong shape, per field (`overview.exceptions`, say).
    pub unusable_containers: BTreeMap<&'static str, u64>,
    /// Bodies that were complete JSON documents but not strict JSON (raw control characters in
    /// strings, bytes that are not UTF-8), read leniently (`api::lenient`).
    #[serde(skip_serializing_if = "is_zero")]
    pub read_leniently: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Quality {
    pub(crate) fn coerced(&mut self, column: &'static str) {
        *self.coerced_to_null.entry(column).or_default() += 1;
    }

    fn unusable(&mut self, what: &'static str) {
        *self.unusable_containers.entry(what).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &Quality) {
        for (k, v) in &other.coerced_to_null {
            *self.coerced_to_null.entry(k).or_default() += v;
        }
        for (k, v) in &other.unusable_containers {
            *self.unusable_containers.entry(k).or_default() += v;
        }
        self.read_leniently += other.read_leniently;
    }

    /// The values coerced to null, over every column.
    pub fn coerced_total(&self) -> u64 {
        self.coerced_to_null.values().sum()
    }
}

/// What one slice of reports flattens to.
#[derive(Debug)]
pub struct Flat {
    /// `reports`, `records`, `overview`, `exceptions`, in that order; empty when tables were not
    /// asked for.
    pub batches: Vec<RecordBatch>,
    /// The slice's data-quality counters.
    pub quality: Quality,
    /// The bodies that held no usable REPORT.
    pub bad: Vec<BadBody>,
    /// Lines of `reports.jsonl`, when asked for, and how many.
    pub jsonl: Vec<u8>,
    /// How many lines `jsonl` holds.
    pub jsonl_lines: u64,
}

/// What to produce.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// The typed tables (`reports`, `records`, `overview`, `exceptions`), as Arrow batches.
    pub tables: bool,
    /// The lines of `reports.jsonl`.
    pub jsonl: bool,
}

/// Which version of its VIN's report a [`SourceReport`] is (1 for the first report bought).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportVersion {
    /// The version number, counting from 1.
    pub version: i32,
    /// The VIN's newest report.
    pub is_latest: bool,
}

impl Default for ReportVersion {
    fn default() -> Self {
        ReportVersion {
            version: 1,
            is_latest: true,
        }
    }
}

/// Flattens `rows` into one batch per table, each the first and only version of its VIN's
/// report.
pub fn flatten(rows: &[SourceReport], want: Want) -> Result<Flat, ArrowError> {
    flatten_versions(rows, &[], want)
}

/// Flattens `rows` into one batch per table; `versions[i]` says which version `rows[i]` is
/// (a row past the end of `versions` is version 1, the latest).
pub fn flatten_versions(
    rows: &[SourceReport],
    versions: &[ReportVersion],
    want: Want,
) -> Result<Flat, ArrowError> {
    let mut b = Builders::with_capacity(rows.len());
    let mut quality = Quality::default();
    let mut bad = Vec::new();
    let mut jsonl = Vec::new();
    let mut jsonl_lines = 0;
    for (i, row) in rows.iter().enumerate() {
        let v = versions.get(i).copied().unwrap_or_default();
        // A body that is not strict JSON is read as the engine read it when it was bought:
        // through the one lenient reader, only when the strict parse fails (the common case
        // pays nothing for it).
        // Each body is read once in the common case: parsed for the tables, or located for
        // `reports.jsonl` alone.
        let mut repaired = None;
        let mut strict = want.tables.then(|| parse(row, &row.body));
        let mut located = (!want.tables && want.jsonl).then(|| locate(row, &row.body));
        let failed = strict.as_ref().is_some_and(Result::is_err)
            || located.as_ref().is_some_and(Result::is_err);
        if failed && let Some(r) = crate::api::lenient::repair(&row.body) {
            quality.read_leniently += 1;
            repaired = Some(r);
        }
        let body: &[u8] = repaired.as_ref().map_or(&row.body, |r| r.text.as_bytes());
        if repaired.is_some() {
            if want.tables {
                strict = Some(parse(row, body));
            } else {
                located = Some(locate(row, body));
            }
        }
        if let Some(parsed) = strict {
            match parsed {
                Ok(Some(report)) => b.push(row, v, &report, &mut quality),
                Ok(None) => {
                    bad.push(BadBody {
                        vin: row.vin.clone(),
                        reason: locate(row, body)
                            .err()
                            .unwrap_or_else(|| "no REPORT".into()),
                    });
                    continue;
                }
                Err(e) => {
                    let reason = match locate(row, body) {
                        Err(reason) => reason,
                        Ok(_) => format!("the REPORT is not a readable object: {e}"),
                    };
                    bad.push(BadBody {
                        vin: row.vin.clone(),
                        reason,
                    });
                    continue;
                }
            }
        }
        if want.jsonl {
            match located.unwrap_or_else(|| locate(row, body)) {
                Ok(raw) => jsonl_lines += u64::from(push_jsonl(&mut jsonl, row, v, raw)),
                Err(reason) if !want.tables => bad.push(BadBody {
                    vin: row.vin.clone(),
                    reason,
                }),
                // Already listed by the table pass.
                Err(_) => {}
            }
        }
    }
    let batches = if want.tables { b.finish()? } else { Vec::new() };
    Ok(Flat {
        batches,
        quality,
        bad,
        jsonl,
        jsonl_lines,
    })
}

/// Parses the REPORT of a stored body (`body`: the row's, or its lenient repair) in one pass,
/// borrowing its text.
fn parse<'a>(row: &SourceReport, body: &'a [u8]) -> Result<Option<ReportView<'a>>, String> {
    let endpoint = endpoint_of(row)?;
    parse_report::<ReportView<'_>>(endpoint, body).map_err(|e| e.to_string())
}

fn endpoint_of(row: &SourceReport) -> Result<Endpoint, String> {
    match row.endpoint.as_str() {
        "generate" => Ok(Endpoint::Generate),
        "get" => Ok(Endpoint::Get),
        other => Err(format!("unknown endpoint {other:?} in the checkpoint")),
    }
}

/// Finds the REPORT in a stored body (the row's, or its lenient repair), or says why there is
/// none.
fn locate<'a>(row: &SourceReport, body: &'a [u8]) -> Result<&'a RawValue, String> {
    let endpoint = endpoint_of(row)?;
    match report_json(endpoint, body) {
        Some(raw) if raw.get().trim_start().starts_with('{') => Ok(raw),
        Some(_) => Err(format!(
            "the {} body's REPORT is not a JSON object",
            endpoint.as_str()
        )),
        None if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() => Err(format!(
            "the body is not JSON: {}",
            crate::api::outcome::excerpt(body)
        )),
        None => Err(format!(
            "the {} body has no REPORT ({})",
            endpoint.as_str(),
            match endpoint {
                Endpoint::Generate => "no data.info object",
                Endpoint::Get => "no data object",
            }
        )),
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    vin: &'a str,
    version: i32,
    request_id: Option<&'a str>,
    body: &'a RawValue,
}

/// One `reports.jsonl` line: the REPORT exactly as bought. JSON allows raw line breaks only as
/// whitespace between tokens (never inside strings), so blanking them keeps the value intact
/// while keeping one report per line. `false` when nothing could be written.
fn push_jsonl(out: &mut Vec<u8>, row: &SourceReport, v: ReportVersion, raw: &RawValue) -> bool {
    let start = out.len();
    let line = JsonLine {
        vin: &row.vin,
        version: v.version,
        request_id: row.request_id.as_deref(),
        body: raw,
    };
    if serde_json::to_writer(&mut *out, &line).is_err() {
        out.truncate(start);
        return false;
    }
    for b in &mut out[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    out.push(b'\n');
    true
}

// ---- conversions -------------------------------------------------------------------------

/// A converted value, counting an unconvertible one against `col`.
fn counted<T>(c: Conv<T>, col: &'static str, q: &mut Quality) -> Option<T> {
    match c {
        Conv::Value(v) => Some(v),
        Conv::Invalid => {
            q.coerced(col);
            None
        }
        Conv::Missing => None,
    }
}

fn text<'a>(f: &'a Scalar<'_>, col: &'static str, q: &mut Quality) -> Option<Cow<'a, str>> {
    counted(f.text(), col, q)
}

/// A whole number that must fit `T` (Int8, Int32, Int64 columns).
fn int<T: TryFrom<i64>>(f: &Scalar<'_>, col: &'static str, q: &mut Quality) -> Option<T> {
    let v = counted(f.int(), col, q)?;
    let t = T::try_from(v).ok();
    if t.is_none() {
        q.coerced(col);
    }
    t
}

/// The container, if the field held one; a value of the wrong shape is counted as unusable
/// under `what`.
fn usable<'a, T>(h: &'a Held<T>, what: &'static str, q: &mut Quality) -> Option<&'a T> {
    match h {
        Held::Is(t) => Some(t),
        Held::Not(NotThere::Empty) => None,
        Held::Not(NotThere::Malformed) => {
            q.unusable(what);
            None
        }
    }
}

fn float(f: &Scalar<'_>, col: &'static str, q: &mut Quality) -> Option<f64> {
    counted(f.float(), col, q)
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01 (Arrow Date32).
pub(crate) fn date32(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

/// The date of a Date32 value.
pub(crate) fn from_date32(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(EPOCH_DAYS_FROM_CE)?)
}

fn date(f: &Scalar<'_>, col: &'static str, q: &mut Quality) -> Option<i32> {
    // The usual shape straight to days; anything else by the scalar rules.
    if let Scalar::Str(s) = f
        && let Some(days) = iso_days(s.as_bytes())
    {
        return Some(days);
    }
    counted(f.date(), col, q).map(date32)
}

/// Days since 1970-01-01 (Date32) of a valid `YYYY-MM-DD`, exactly ten bytes; `None` for
/// anything else. The same day as `date32` of chrono's date, without building one (dates are a
/// tenth of the columns export converts).
fn iso_days(b: &[u8]) -> Option<i32> {
    if b.get(4) != Some(&b'-') {
        return None;
    }
    let (y, m, d) = crate::api::scalar::ymd_digits(b)?;
    let (m, d) = (m as i32, d as i32);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        _ => return None,
    };
    if !(1..=month_days).contains(&d) {
        return None;
    }
    // Days from the civil calendar, counting years from March (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// `mainTainDate` (Unix seconds, or milliseconds when larger than 1e11) as milliseconds, within
/// years 1–9999 so every reader can show it.
pub(crate) fn maintained_ms(v: i64) -> Option<i64> {
    let ms = if v.unsigned_abs() > 100_000_000_000 {
        v
    } else {
        v.checked_mul(1000)?
    };
    READABLE_MS.contains(&ms).then_some(ms)
}

/// 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z in milliseconds since the epoch: the
/// instants of years 1–9999 (compared as numbers; building a date for every record showed in
/// profiles).
const READABLE_MS: std::ops::RangeInclusive<i64> = -62_135_596_800_000..=253_402_300_799_999;

/// The largest magnitude of DECIMAL(18,2), in hundredths.
const AMOUNT_MAX: i128 = 999_999_999_999_999_999;

/// Parses a decimal amount (`100`, `-3.5`, `.5`, `1e3`) into hundredths, rounding half away
/// from zero; `None` when it is not a number or does not fit DECIMAL(18,2).
pub(crate) fn parse_amount(s: &str) -> Option<i128> {
    let (neg, int_part, frac_part, exp) = decimal_parts(s)?;
    let digits = || {
        int_part
            .bytes()
            .chain(frac_part.bytes())
            .map(|b| u64::from(b - b'0'))
    };
    let len = int_part.len() + frac_part.len();
    // value = digits × 10^exp; hundredths = digits × 10^shift.
    let shift = exp.checked_add(2)?;
    let (kept, next) = if shift >= 0 {
        (len, None)
    } else {
        let dropped = usize::try_from(shift.unsigned_abs()).ok()?;
        let kept = len.saturating_sub(dropped);
        let next = if dropped <= len {
            digits().nth(kept)
        } else {
            None
        };
        (kept, next)
    };
    // At most AMOUNT_MAX (< 10^18) before each step, so `units * 10 + 9` stays well inside u64.
    let max = AMOUNT_MAX as u64;
    let mut units: u64 = 0;
    for d in digits().take(kept) {
        units = units * 10 + d;
        if units > max {
            return None;
        }
    }
    if shift > 0 && units != 0 {
        for _ in 0..shift {
            units *= 10;
            if units > max {
                return None;
            }
        }
    }
    if next.is_some_and(|d| d >= 5) {
        units += 1;
        if units > max {
            return None;
        }
    }
    let units = i128::from(units);
    Some(if neg { -units } else { units })
}

/// A decimal number's text as its sign, the digits before and after its point, and the power
/// of ten the digits together are scaled by (`-3.5e1` → `(true, "3", "5", 0)`); `None` when
/// it is not a number.
fn decimal_parts(s: &str) -> Option<(bool, &str, &str, i64)> {
    let s = crate::api::view::trim(s);
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((
        neg,
        int_part,
        frac_part,
        exp.checked_sub(frac_part.len() as i64)?,
    ))
}

fn amount(f: &Scalar<'_>, col: &'static str, q: &mut Quality) -> Option<i128> {
    counted(f.to::<Hundredths>(), col, q)
}

/// An amount in hundredths, read by the scalar rules: text straight into hundredths, a whole
/// number multiplied by 100 (most amounts sent as numbers), anything else as the number written
/// out. What `Decimal` takes, in hundredths, without writing a number out and parsing it back.
struct Hundredths;

impl crate::api::scalar::Kind for Hundredths {
    type Out = i128;
    fn from_str(s: &str) -> Option<i128> {
        parse_amount(s)
    }
    fn from_i64(v: i64) -> Option<i128> {
        whole_amount(v.unsigned_abs(), v < 0)
    }
    fn from_f64(v: f64) -> Option<i128> {
        v.is_finite()
            .then(|| parse_amount(&v.to_string()))
            .flatten()
    }
}

/// The whole amount `abs` (negative when `neg`) in hundredths; `None` when it does not fit
/// DECIMAL(18,2). What [`parse_amount`] gives for the number written out.
fn whole_amount(abs: u64, neg: bool) -> Option<i128> {
    let units = i128::from(abs) * 100;
    (units <= AMOUNT_MAX).then_some(if neg { -units } else { units })
}

/// Splits an overview finding at the first ASCII or full-width colon:
/// `"前保:油漆"` → (`"前保"`, `Some("油漆")`); no colon → (whole, `None`).
/// Empty sides become `None` for the finding and stay `""`-free for the component.
pub(crate) fn split_finding(raw: &str) -> (&str, Option<&str>) {
    match raw.find([':', '：']) {
        Some(i) => {
            let sep_len = raw[i..].chars().next().map(char::len_utf8).unwrap_or(1);
            let component = raw[..i].trim();
            let finding = raw[i + sep_len..].trim();
            (component, (!finding.is_empty()).then_some(finding))
        }
        None => (raw.trim(), None),
    }
}

/// `type_name` from `type_code`.
pub(crate) fn type_name(code: i8) -> Option<&'static str> {
    match code {
        1 => Some("maintenance"),
        2 => Some("repair"),
        3 => Some("inspection"),
        4 => Some("other"),
        _ => None,
    }
}

// ---- builders ----------------------------------------------------------------------------

/// The four report tables' builders (declared in schema.rs).
/// What ties a row of `records`, `overview` or `exceptions` to its report: the VIN, the
/// report's version and its requestId.
#[derive(Clone, Copy)]
struct Key<'a> {
    vin: &'a str,
    version: i32,
    rid: Option<&'a str>,
}

impl Key<'_> {
    fn put(
        &self,
        vin: &mut arrow_array::builder::StringBuilder,
        version: &mut arrow_array::builder::Int32Builder,
        rid: &mut arrow_array::builder::StringBuilder,
    ) {
        vin.append_value(self.vin);
        version.append_value(self.version);
        rid.append_option(self.rid);
    }
}

struct Builders {
    rep: ReportCols,
    rec: RecordCols,
    ov: OverviewCols,
    ex: ExceptionCols,
}

impl Builders {
    /// Room for `n` reports: about 16 records and 5 overview parts each.
    fn with_capacity(n: usize) -> Builders {
        Builders {
            rep: ReportCols::with_capacity(n),
            rec: RecordCols::with_capacity(n * 16),
            ov: OverviewCols::with_capacity(n * 5),
            ex: ExceptionCols::with_capacity(0),
        }
    }

    fn push(&mut self, row: &SourceReport, v: ReportVersion, r: &ReportView<'_>, q: &mut Quality) {
        let vin = row.vin.as_str();
        let rid = row.request_id.as_deref();
        let key = Key {
            vin,
            version: v.version,
            rid,
        };
        let p = &mut self.rep;
        p.vin.append_value(vin);
        p.version.append_value(v.version);
        p.is_latest.append_value(v.is_latest);
        p.request_id.append_option(rid);
        p.task_no.append_option(row.task_no.as_deref());
        p.brand_name
            .append_option(text(&r.brand_name, "reports.brand_name", q));
        p.brand_logo_url
            .append_option(text(&r.brand_pic, "reports.brand_logo_url", q));
        p.vin_masked
            .append_option(text(&r.vin_no, "reports.vin_masked", q));
        p.first_visit_date.append_option(date(
            &r.first_time_to_shop,
            "reports.first_visit_date",
            q,
        ));
        p.last_visit_date
            .append_option(date(&r.last_time_to_shop, "reports.last_visit_date", q));
        p.first_visit_mileage_km.append_option(int(
            &r.first_mileage,
            "reports.first_visit_mileage_km",
            q,
        ));
        p.last_visit_mileage_km.append_option(int(
            &r.last_mileage,
            "reports.last_visit_mileage_km",
            q,
        ));
        p.total_mileage_km
            .append_option(int(&r.total_mileage, "reports.total_mileage_km", q));
        p.avg_yearly_mileage_km.append_option(float(
            &r.avg_mileage_year,
            "reports.avg_yearly_mileage_km",
            q,
        ));
        p.avg_yearly_services.append_option(float(
            &r.avg_upkeep_year,
            "reports.avg_yearly_services",
            q,
        ));
        p.record_count
            .append_option(int(&r.content_numbers, "reports.record_count", q));
        p.accident_status
            .append_option(int(&r.is_accident, "reports.accident_status", q));
        p.accident_grade
            .append_option(text(&r.accident_grade, "reports.accident_grade", q));
        p.accident_reason
            .append_option(text(&r.is_accident_reason, "reports.accident_reason", q));
        p.report_updated_date
            .append_option(date(&r.updatetime, "reports.report_updated_date", q));
        p.fetched_at.append_value(row.fetched_at);

        self.push_records(key, &r.result_content, q);
        self.push_overview(key, &r.overview, q);
    }

    fn push_records(&mut self, key: Key<'_>, records: &RecordsView<'_>, q: &mut Quality) {
        let Some(list) = usable(&records.0, "reports.result_content", q) else {
            return;
        };
        let c = &mut self.rec;
        for (seq, slot) in list.iter().enumerate() {
            let Slot::Record(rec) = slot else {
                q.unusable("records.result_content[]");
                continue;
            };
            let Ok(seq) = i32::try_from(seq) else {
                q.coerced("records.seq");
                continue;
            };
            key.put(&mut c.vin, &mut c.version, &mut c.request_id);
            c.seq.append_value(seq);
            c.visit_date
                .append_option(date(&rec.date, "records.visit_date", q));
            let maintained =
                int::<i64>(&rec.maintain_date, "records.maintained_at", q).and_then(|v| {
                    let ms = maintained_ms(v);
                    if ms.is_none() {
                        q.coerced("records.maintained_at");
                    }
                    ms
                });
            c.maintained_at.append_option(maintained);
            let code = int::<i8>(&rec.type_code, "records.type_code", q);
            c.type_code.append_option(code);
            c.type_name.append_option(code.and_then(type_name));
            c.type_label
                .append_option(text(&rec.type_label, "records.type_label", q));
            c.content
                .append_option(text(&rec.content, "records.content", q));
            c.materials
                .append_option(text(&rec.materal, "records.materials", q));
            c.remark
                .append_option(text(&rec.remark, "records.remark", q));
            c.mileage_km
                .append_option(int(&rec.mileage, "records.mileage_km", q));
            c.pay_type
                .append_option(text(&rec.pay_type, "records.pay_type", q));
            c.total_amount
                .append_option(amount(&rec.total_money, "records.total_amount", q));
        }
    }

    fn push_overview(&mut self, key: Key<'_>, overview: &OverviewView<'_>, q: &mut Quality) {
        let Some(parts) = usable(&overview.0, "reports.overview", q) else {
            return;
        };
        for (part_key, slot) in parts {
            let o = &mut self.ov;
            key.put(&mut o.vin, &mut o.version, &mut o.request_id);
            o.part.append_value(part_key);
            let part = match slot {
                PartSlot::Part(part) => part,
                PartSlot::Null => {
                    o.label.append_null();
                    o.has_exception.append_null();
                    o.exception_count.append_null();
                    continue;
                }
                PartSlot::NotAPart => {
                    q.coerced("overview.label");
                    q.coerced("overview.has_exception");
                    q.coerced("overview.exception_count");
                    o.label.append_null();
                    o.has_exception.append_null();
                    o.exception_count.append_null();
                    continue;
                }
            };
            let label = text(&part.label, "overview.label", q);
            o.label.append_option(label.as_deref());
            let has = match part.is_exception.int() {
                Conv::Value(1) => Some(true),
                Conv::Value(0) => Some(false),
                Conv::Missing => None,
                _ => {
                    q.coerced("overview.has_exception");
                    None
                }
            };
            o.has_exception.append_option(has);
            let list: &[Finding<'_>] = match &part.exceptions.0 {
                Held::Is(list) => list,
                Held::Not(NotThere::Empty) => &[],
                Held::Not(NotThere::Malformed) => {
                    q.unusable("overview.exceptions");
                    q.coerced("overview.exception_count");
                    o.exception_count.append_null();
                    continue;
                }
            };
            let count = self.push_exceptions(key, part_key, label.as_deref(), list, q);
            self.ov.exception_count.append_value(count);
        }
    }

    /// The `exceptions` rows of one overview part; returns how many (blanks are skipped but
    /// keep their position in `seq`).
    fn push_exceptions(
        &mut self,
        key: Key<'_>,
        part: &str,
        label: Option<&str>,
        list: &[Finding<'_>],
        q: &mut Quality,
    ) -> i32 {
        let mut count: i32 = 0;
        for (seq, item) in list.iter().enumerate() {
            let raw: &str = match item {
                Finding::Blank => continue,
                Finding::Str(s) => s,
                Finding::Other(s) => s,
            };
            let Ok(seq) = i32::try_from(seq) else {
                q.coerced("exceptions.seq");
                continue;
            };
            count = count.saturating_add(1);
            let (component, finding) = split_finding(raw);
            let e = &mut self.ex;
            key.put(&mut e.vin, &mut e.version, &mut e.request_id);
            e.part.append_value(part);
            e.label.append_option(label);
            e.seq.append_value(seq);
            e.raw.append_value(raw);
            e.component
                .append_option((!component.is_empty()).then_some(component));
            e.finding.append_option(finding);
        }
        count
    }

    /// One batch per table, in [`super::schema::REPORT_TABLES`] order.
    fn finish(self) -> Result<Vec<RecordBatch>, ArrowError> {
        let Builders { rep, rec, ov, ex } = self;
        Ok(vec![
            rep.finish()?,
            rec.finish()?,
            ov.finish()?,
            ex.finish()?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    /// Fuzzing finding (report_shaped): a REPORT may nest an unknown field deeper than
    /// serde_json's recursion limit for a `Value` (128). vmr reads the REPORT without building a
    /// `Value`, so such a body is a report like any other: one `reports` row, its records, and
    /// a JSON line that holds the nesting as sent and is valid JSON.
    #[test]
    fn a_report_with_a_field_nested_past_any_recursion_limit_flattens_and_keeps_it() {
        let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
        let body = format!(
            r#"{{"code":200,"msg":"ok","data":{{"total_mileage":"12000","extra":{deep},"result_content":[{{"date":"2023-06-01","mileage":12000,"type_code":2}}]}}}}"#
        );
        let row = SourceReport {
            vin: "LSVAB12345C000001".into(),
            request_id: Some("r".into()),
            task_no: None,
            endpoint: "get".into(),
            fetched_at: 1_714_550_400_000,
            body: body.into_bytes(),
        };
        let want = Want {
            tables: true,
            jsonl: true,
        };
        let flat = flatten(std::slice::from_ref(&row), want).expect("flattens");
        assert!(flat.bad.is_empty(), "{:?}", flat.bad);
        assert_eq!(flat.batches[0].num_rows(), 1, "one report row");
        assert_eq!(flat.batches[1].num_rows(), 1, "its record");
        assert_eq!(flat.jsonl_lines, 1);
        let line = flat.jsonl.strip_suffix(b"\n").expect("a line");
        assert!(
            std::str::from_utf8(line).expect("UTF-8").contains(&deep),
            "the nesting is kept as sent"
        );
        serde_json::from_slice::<serde::de::IgnoredAny>(line).expect("valid JSON");
    }

    #[test]
    fn amounts_round_half_away_from_zero() {
        for (s, want) in [
            ("100", Some(10000)),
            ("100.5", Some(10050)),
            ("100.505", Some(10051)),
            ("100.504", Some(10050)),
            ("-0.005", Some(-1)),
            ("-2.345", Some(-235)),
            (".5", Some(50)),
            ("5.", Some(500)),
            ("+7", Some(700)),
            ("1e3", Some(100000)),
            ("1.2345E2", Some(12345)),
            ("1e-5", Some(0)),
            ("0.0000001", Some(0)),
            ("9999999999999999.99", Some(999_999_999_999_999_999)),
            ("9999999999999999.995", None),
            ("10000000000000000", None),
            ("1e40", None),
            ("1e9999999999", None),
            ("abc", None),
            ("", None),
            ("-", None),
            (".", None),
            ("1.2.3", None),
            ("１２", None),
        ] {
            assert_eq!(parse_amount(s), want, "{s:?}");
        }
    }

    /// An amount sent as a whole number is read as the same number sent as text would be (and
    /// as the number written out was before the fast path).
    #[test]
    fn whole_amounts_are_parse_amount_of_the_number_written_out() {
        let edge = 9_999_999_999_999_999_i64;
        for v in [
            0,
            1,
            -1,
            350,
            -350,
            edge,
            edge + 1,
            -edge,
            -edge - 1,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(
                whole_amount(v.unsigned_abs(), v < 0),
                parse_amount(&v.to_string()),
                "{v}"
            );
        }
        for v in [0, 350, edge as u64, edge as u64 + 1, u64::MAX] {
            // serde_json reads any non-negative whole number as u64; above i64's range the
            // scalar rules wrote it out as a float.
            let written = match i64::try_from(v) {
                Ok(i) => i.to_string(),
                Err(_) => (v as f64).to_string(),
            };
            assert_eq!(whole_amount(v, false), parse_amount(&written), "{v}");
        }
    }

    #[test]
    fn maintain_dates_in_seconds_or_milliseconds() {
        assert_eq!(maintained_ms(1_464_105_610), Some(1_464_105_610_000));
        assert_eq!(maintained_ms(1_464_105_610_123), Some(1_464_105_610_123));
        assert_eq!(maintained_ms(i64::MAX), None);
        assert_eq!(maintained_ms(i64::MIN), None);
        assert_eq!(maintained_ms(-99_999_999_999), None);
        // The bounds are the first and last instants of years 1 and 9999, as chrono has them.
        for ms in [
            *READABLE_MS.start() - 1,
            *READABLE_MS.start(),
            *READABLE_MS.end(),
            *READABLE_MS.end() + 1,
            0,
            -1,
        ] {
            let by_date =
                DateTime::from_timestamp_millis(ms).is_some_and(|t| (1..=9999).contains(&t.year()));
            assert_eq!(READABLE_MS.contains(&ms), by_date, "{ms}");
        }
    }

    #[test]
    fn iso_days_is_chronos_day_for_every_date_and_none_for_any_other() {
        let mut d = NaiveDate::from_ymd_opt(0, 1, 1).expect("valid");
        let last = NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid");
        while d <= last {
            let text = d.format("%Y-%m-%d").to_string();
            assert_eq!(iso_days(text.as_bytes()), Some(date32(d)), "{text}");
            d = d.succ_opt().expect("not the last day");
        }
        for bad in [
            "2023-02-29",
            "2000-02-30",
            "1900-02-29",
            "2023-04-31",
            "2023-13-01",
            "2023-00-10",
            "2023-01-00",
            "2023-01-32",
            "2023/01/05",
            "2023-1-05 ",
            " 2023-1-05",
            "20230105",
            "2023-01-0x",
            "+123-01-01",
            "２０２３-01-01",
        ] {
            assert_eq!(iso_days(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn dates_round_trip_through_date32() {
        let d = NaiveDate::from_ymd_opt(2016, 5, 25).expect("valid");
        assert_eq!(
            date32(NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")),
            0
        );
        assert_eq!(from_date32(date32(d)), Some(d));
    }

    #[test]
    fn findings_split_at_first_colon_of_either_width() {
        assert_eq!(split_finding("前保:油漆"), ("前保", Some("油漆")));
        assert_eq!(split_finding("左前门：更换"), ("左前门", Some("更换")));
        assert_eq!(split_finding("a:b:c"), ("a", Some("b:c")));
        assert_eq!(split_finding("保险杠拆卸"), ("保险杠拆卸", None));
        assert_eq!(split_finding("前保:"), ("前保", None));
    }
}
