//! `audit.html`: the audit as one self-contained page a fleet manager opens from an email.
//!
//! No scripts, no fonts, no network: the charts are inline SVG drawn here, the styles are
//! inline, so the page looks the same offline, in a mail client's viewer or printed. Labels
//! are English and Chinese; the vendor's own text (brand names, grades) is shown as it came,
//! always escaped, since it is data from outside.

use chrono::NaiveDate;
use polars::prelude::*;
use std::fmt::Write as _;

use super::Audit;
use super::risk::{self, Reason, RiskLevel};
use crate::export::flatten::from_date32;

/// High-risk vehicles listed in the page; the rest are in `vehicle_flags`.
pub const MAX_LISTED: usize = 1_000;
/// Brands drawn in the risk-by-brand chart (most vehicles first).
const MAX_BRANDS: usize = 15;
/// Yearly-km histogram: bins of this width, the last one open-ended.
const KM_BIN: f64 = 5_000.0;
const KM_BINS: usize = 10;

const HIGH: &str = "#c0392b";
const MEDIUM: &str = "#e6a23c";
const LOW: &str = "#67a86b";
const NEUTRAL: &str = "#4a7ab5";

/// `1234567` → `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount with two decimals and thousands separators.
pub fn money(x: f64) -> String {
    let cents = (x * 100.0).round() as i64;
    let sign = if cents < 0 { "-" } else { "" };
    format!(
        "{sign}¥{}.{:02}",
        thousands((cents / 100).abs()),
        (cents % 100).abs()
    )
}

fn pct(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{:.1}%", v * 100.0),
        None => "–".into(),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn date(d: Option<NaiveDate>) -> String {
    d.map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "–".into())
}

/// The columns of `vehicle_flags` the page shows, read once.
struct Row {
    vin: String,
    brand: Option<String>,
    status: Option<i32>,
    grade: Option<String>,
    last_visit: Option<NaiveDate>,
    total_km: Option<i64>,
    yearly_km: Option<f64>,
    spent: Option<f64>,
}

fn rows(df: &DataFrame) -> PolarsResult<Vec<Row>> {
    let v = df
        .clone()
        .lazy()
        .select([
            col("vin"),
            col("brand_name"),
            col("accident_status").cast(DataType::Int32),
            col("accident_grade"),
            col("last_visit_date").cast(DataType::Int32),
            col("total_mileage_km"),
            col("avg_yearly_mileage_km"),
            col("total_spent").cast(DataType::Float64),
        ])
        .collect()?;
    let vin = v.column("vin")?.str()?;
    let brand = v.column("brand_name")?.str()?;
    let status = v.column("accident_status")?.i32()?;
    let grade = v.column("accident_grade")?.str()?;
    let last = v.column("last_visit_date")?.i32()?;
    let km = v.column("total_mileage_km")?.i64()?;
    let yearly = v.column("avg_yearly_mileage_km")?.f64()?;
    let spent = v.column("total_spent")?.f64()?;
    Ok((0..v.height())
        .map(|i| Row {
            vin: vin.get(i).unwrap_or_default().to_owned(),
            brand: brand.get(i).map(str::to_owned),
            status: status.get(i),
            grade: grade.get(i).map(str::to_owned),
            last_visit: last.get(i).and_then(from_date32),
            total_km: km.get(i),
            yearly_km: yearly.get(i),
            spent: spent.get(i),
        })
        .collect())
}

/// One row of `fleet_summary`, as the page uses it.
struct Fleet {
    brand: Option<String>,
    reports: i64,
    accident_rate: Option<f64>,
    structural_rate: Option<f64>,
    rollback_rate: Option<f64>,
    median_km: Option<f64>,
    median_spent: Option<f64>,
    risk: [i64; 3],
}

fn fleet(df: &DataFrame) -> PolarsResult<(Vec<Fleet>, Option<Fleet>)> {
    let scope = df.column("scope")?.str()?;
    let brand = df.column("brand_name")?.str()?;
    let i = |name: &str| -> PolarsResult<Int64Chunked> { Ok(df.column(name)?.i64()?.clone()) };
    let f = |name: &str| -> PolarsResult<Float64Chunked> { Ok(df.column(name)?.f64()?.clone()) };
    let (reports, high, medium, low) = (
        i("reports_bought")?,
        i("high_risk")?,
        i("medium_risk")?,
        i("low_risk")?,
    );
    let (acc, structural, rollback, km, spent) = (
        f("accident_rate")?,
        f("structural_damage_rate")?,
        f("rollback_rate")?,
        f("median_yearly_km")?,
        f("median_total_spent")?,
    );
    let mut brands = Vec::new();
    let mut total = None;
    for r in 0..df.height() {
        let row = Fleet {
            brand: brand.get(r).map(str::to_owned),
            reports: reports.get(r).unwrap_or(0),
            accident_rate: acc.get(r),
            structural_rate: structural.get(r),
            rollback_rate: rollback.get(r),
            median_km: km.get(r),
            median_spent: spent.get(r),
            risk: [
                high.get(r).unwrap_or(0),
                medium.get(r).unwrap_or(0),
                low.get(r).unwrap_or(0),
            ],
        };
        if scope.get(r) == Some("total") {
            total = Some(row);
        } else {
            brands.push(row);
        }
    }
    Ok((brands, total))
}

/// A vertical bar chart with a value above each bar.
fn bar_chart(id: &str, title: &str, bars: &[(String, i64, &str)]) -> String {
    let (w, h, top, bottom, left) = (560.0, 260.0, 28.0, 44.0, 16.0);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let slot = (w - 2.0 * left) / bars.len().max(1) as f64;
    let bar_w = slot * 0.7;
    let mut s = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg">"#,
        t = esc(title)
    );
    let base = h - bottom;
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{base}" x2="{x2}" y2="{base}" stroke="#999"/>"##,
        x2 = w - left
    );
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let bh = (*value as f64 / max) * (base - top);
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let cx = x + bar_w / 2.0;
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="{color}"><title>{l}: {v}</title></rect><text x="{cx:.1}" y="{ty:.1}" text-anchor="middle" font-size="12">{v}</text><text x="{cx:.1}" y="{ly:.1}" text-anchor="middle" font-size="11">{l}</text>"#,
            y = base - bh,
            ty = base - bh - 4.0,
            ly = base + 16.0,
            v = thousands(*value),
            l = esc(label),
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal stacked bars: high / medium / low vehicles per brand.
fn risk_by_brand(brands: &[Fleet]) -> String {
    let shown = &brands[..brands.len().min(MAX_BRANDS)];
    let (w, row_h, label_w, top) = (560.0, 24.0, 170.0, 8.0);
    let h = top * 2.0 + row_h * shown.len().max(1) as f64 + 24.0;
    let max = shown.iter().map(|b| b.reports).max().unwrap_or(0).max(1) as f64;
    let span = w - label_w - 60.0;
    let mut s = format!(
        r#"<svg id="chart-risk-by-brand" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="Risk by brand" xmlns="http://www.w3.org/2000/svg">"#
    );
    for (i, b) in shown.iter().enumerate() {
        let y = top + row_h * i as f64;
        let name = b.brand.as_deref().unwrap_or("(unknown · 未知)");
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty:.1}" text-anchor="end" font-size="12">{n}</text>"#,
            lx = label_w - 6.0,
            ty = y + row_h * 0.65,
            n = esc(name)
        );
        let mut x = label_w;
        for (count, (color, level)) in
            b.risk
                .iter()
                .zip([(HIGH, "high 高"), (MEDIUM, "medium 中"), (LOW, "low 低")])
        {
            let bw = *count as f64 / max * span;
            if *count > 0 {
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="{color}"><title>{n} · {level}: {c}</title></rect>"#,
                    bh = row_h - 6.0,
                    n = esc(name),
                    c = thousands(*count)
                );
            }
            x += bw;
        }
        let _ = write!(
            s,
            r#"<text x="{tx:.1}" y="{ty:.1}" font-size="11">{c}</text>"#,
            tx = x + 4.0,
            ty = y + row_h * 0.65,
            c = thousands(b.reports)
        );
    }
    let ly = h - 10.0;
    for (i, (color, label)) in [
        (HIGH, "high · 高风险"),
        (MEDIUM, "medium · 中风险"),
        (LOW, "low · 低风险"),
    ]
    .iter()
    .enumerate()
    {
        let lx = label_w + 120.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{ry}" width="10" height="10" fill="{color}"/><text x="{tx}" y="{ly}" font-size="11">{label}</text>"#,
            ry = ly - 9.0,
            tx = lx + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

fn grade_distribution(rows: &[Row]) -> Vec<(String, i64, &'static str)> {
    let mut counts = [0i64; 5];
    for r in rows {
        let g = r.grade.as_deref().map(str::trim).unwrap_or("");
        let i = match g.to_ascii_uppercase().as_str() {
            "A" => 0,
            "B" => 1,
            "C" => 2,
            "D" => 3,
            _ => 4,
        };
        counts[i] += 1;
    }
    let colors = [LOW, "#a3c46c", MEDIUM, HIGH, "#999"];
    ["A", "B", "C", "D", "unknown · 未知"]
        .iter()
        .zip(counts)
        .zip(colors)
        .map(|((l, c), color)| (l.to_string(), c, color))
        .collect()
}

fn yearly_km_histogram(rows: &[Row]) -> Vec<(String, i64, &'static str)> {
    let mut counts = [0i64; KM_BINS];
    for km in rows.iter().filter_map(|r| r.yearly_km) {
        let i = ((km.max(0.0) / KM_BIN) as usize).min(KM_BINS - 1);
        counts[i] += 1;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let from = (i as f64 * KM_BIN / 1000.0) as i64;
            let label = if i + 1 == KM_BINS {
                format!("{from}k+")
            } else {
                format!("{from}–{}k", from + (KM_BIN / 1000.0) as i64)
            };
            (label, *c, NEUTRAL)
        })
        .collect()
}

fn status_text(s: Option<i32>) -> &'static str {
    match s {
        Some(1) => "accident · 是",
        Some(0) => "none · 否",
        _ => "unknown · 未知",
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI","PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card .n{font-size:24px;font-weight:600}.card .l{font-size:12px;color:#555}
.card.high .n{color:#c0392b}
.charts{display:flex;flex-wrap:wrap;gap:24px}
.charts figure{margin:0}.charts figcaption{font-weight:600;font-size:14px;margin-bottom:4px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;white-space:nowrap}
td.vin{font-family:ui-monospace,Menlo,Consolas,monospace}
ul.reasons{margin:0;padding-left:16px}
"#;

/// The whole page.
pub fn render(a: &Audit) -> PolarsResult<String> {
    let rows = rows(&a.vehicle_flags)?;
    let (brands, total) = fleet(&a.fleet_summary)?;
    let high = a.count(RiskLevel::High);
    let rollbacks = a
        .reasons
        .iter()
        .filter(|r| {
            r.iter()
                .any(|x| matches!(x, Reason::OdometerRollback { .. }))
        })
        .count();
    let mut s = String::with_capacity(64 * 1024);
    s.push_str(r#"<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">"#);
    s.push_str(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#);
    let _ = write!(
        s,
        "<title>Fleet audit · 车队审计 · {}</title><style>{STYLE}</style></head><body>",
        a.as_of
    );
    let _ = write!(
        s,
        r#"<h1>Fleet audit · 车队审计报告</h1><div class="sub">As of · 审计日期 {} — odometer rollback tolerance · 里程回滚容差 {} km — vmr {}</div>"#,
        a.as_of,
        thousands(a.tolerance_km),
        env!("CARGO_PKG_VERSION")
    );

    // Headline numbers.
    let card = |s: &mut String, class: &str, n: String, label: &str| {
        let _ = write!(
            s,
            r#"<div class="card {class}"><div class="n">{n}</div><div class="l">{label}</div></div>"#
        );
    };
    s.push_str(r#"<section id="headline"><div class="cards">"#);
    card(
        &mut s,
        "",
        thousands(a.requests.vehicles),
        "Vehicles requested · 查询车辆",
    );
    card(
        &mut s,
        "",
        thousands(rows.len() as i64),
        "Reports bought · 已购报告",
    );
    card(
        &mut s,
        "",
        format!(
            "{} / {}",
            thousands(a.requests.failed),
            thousands(a.requests.expired)
        ),
        "Failed / expired · 失败 / 超时",
    );
    card(
        &mut s,
        "high",
        thousands(high as i64),
        "High risk · 高风险车辆",
    );
    card(
        &mut s,
        "high",
        thousands(rollbacks as i64),
        "Odometer rollbacks · 里程回滚",
    );
    if let Some(t) = &total {
        card(&mut s, "", pct(t.accident_rate), "Accident rate · 事故率");
        card(
            &mut s,
            "",
            pct(t.structural_rate),
            "Structural damage · 结构损伤率",
        );
        card(
            &mut s,
            "",
            t.median_km
                .map(|k| format!("{} km", thousands(k.round() as i64)))
                .unwrap_or_else(|| "–".into()),
            "Median yearly km · 年均里程中位数",
        );
        card(
            &mut s,
            "",
            t.median_spent.map(money).unwrap_or_else(|| "–".into()),
            "Median total spent · 维保花费中位数",
        );
    }
    s.push_str("</div></section>");

    // Charts.
    s.push_str(r#"<h2>Charts · 图表</h2><section class="charts">"#);
    let _ = write!(
        s,
        "<figure><figcaption>Accident grade · 事故等级分布</figcaption>{}</figure>",
        bar_chart(
            "chart-accident-grade",
            "Accident grade distribution",
            &grade_distribution(&rows)
        )
    );
    let _ = write!(
        s,
        "<figure><figcaption>Risk by brand · 各品牌风险</figcaption>{}</figure>",
        risk_by_brand(&brands)
    );
    let _ = write!(
        s,
        "<figure><figcaption>Yearly km · 年均行驶里程分布 (vehicles · 车辆数)</figcaption>{}</figure>",
        bar_chart(
            "chart-yearly-km",
            "Distribution of yearly km",
            &yearly_km_histogram(&rows)
        )
    );
    s.push_str("</section>");

    // Brand table.
    s.push_str(
        r#"<h2>By brand · 品牌汇总</h2><table id="brands"><thead><tr><th>Brand · 品牌</th><th>Reports · 报告</th><th>Accident · 事故率</th><th>Structural · 结构损伤</th><th>Rollback · 里程回滚</th><th>Median yearly km · 年均里程</th><th>Median spent · 花费中位数</th><th>High · 高</th><th>Medium · 中</th><th>Low · 低</th></tr></thead><tbody>"#,
    );
    let named = brands.iter().map(|b| {
        let name = b
            .brand
            .as_deref()
            .map(esc)
            .unwrap_or_else(|| "(unknown · 未知)".into());
        (name, b)
    });
    let total_row = total.iter().map(|t| ("<b>Total · 合计</b>".to_owned(), t));
    for (name, b) in named.chain(total_row) {
        let _ = write!(
            s,
            r#"<tr><td>{name}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            thousands(b.reports),
            pct(b.accident_rate),
            pct(b.structural_rate),
            pct(b.rollback_rate),
            b.median_km
                .map(|k| thousands(k.round() as i64))
                .unwrap_or_else(|| "–".into()),
            b.median_spent.map(money).unwrap_or_else(|| "–".into()),
            thousands(b.risk[0]),
            thousands(b.risk[1]),
            thousands(b.risk[2]),
        );
    }
    s.push_str("</tbody></table>");

    // High-risk vehicles.
    let mut listed: Vec<(&Row, &Vec<Reason>)> = rows
        .iter()
        .zip(&a.reasons)
        .filter(|(_, r)| risk::level_of(r) == RiskLevel::High)
        .collect();
    listed.sort_by_key(|(row, r)| {
        let highs = r.iter().filter(|x| x.level() == RiskLevel::High).count();
        (std::cmp::Reverse(highs), row.vin.clone())
    });
    let _ = write!(
        s,
        r#"<h2>High-risk vehicles · 高风险车辆 ({})</h2>"#,
        thousands(listed.len() as i64)
    );
    if listed.len() > MAX_LISTED {
        let _ = write!(
            s,
            r#"<p class="sub">The first {} are listed; all are in vehicle_flags (risk_level = high). · 仅列出前 {} 辆，完整名单见 vehicle_flags。</p>"#,
            thousands(MAX_LISTED as i64),
            thousands(MAX_LISTED as i64)
        );
    }
    s.push_str(
        r#"<table id="high-risk"><thead><tr><th>VIN · 车架号</th><th>Brand · 品牌</th><th>Accident · 事故</th><th>Grade · 等级</th><th>Reasons · 原因</th><th>Last visit · 最近到店</th><th>Total km · 总里程</th><th>Spent · 花费</th></tr></thead><tbody>"#,
    );
    for (row, reasons) in listed.iter().take(MAX_LISTED) {
        let _ = write!(
            s,
            r#"<tr class="vehicle"><td class="vin">{}</td><td>{}</td><td>{}</td><td>{}</td><td><ul class="reasons">"#,
            esc(&row.vin),
            esc(row.brand.as_deref().unwrap_or("–")),
            status_text(row.status),
            esc(row.grade.as_deref().unwrap_or("–")),
        );
        for r in reasons.iter() {
            let _ = write!(s, "<li>{}</li>", esc(&r.describe()));
        }
        let _ = write!(
            s,
            r#"</ul></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            date(row.last_visit),
            row.total_km
                .map(|k| format!("{} km", thousands(k)))
                .unwrap_or_else(|| "–".into()),
            row.spent.map(money).unwrap_or_else(|| "–".into()),
        );
    }
    s.push_str("</tbody></table>");
    s.push_str(
        r#"<p class="sub">Rules · 规则: high = frame/airbag exception, odometer rollback, accident recorded or grade D; medium = engine exception, grade C, accident unknown with exceptions, or no workshop visit for 2+ years; otherwise low. Computed from the exported tables (vehicle_flags, fleet_summary).</p>"#,
    );
    s.push_str("</body></html>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
        assert_eq!(money(12345.5), "¥12,345.50");
        assert_eq!(money(0.0), "¥0.00");
        assert_eq!(pct(Some(0.1234)), "12.3%");
    }

    #[test]
    fn text_from_data_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        let svg = bar_chart("c", "t", &[("<b>".into(), 3, NEUTRAL)]);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
    }
}
