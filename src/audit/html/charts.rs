//! The page's three charts, drawn as inline SVG: accident grades, risk by brand, yearly km.
//!
//! They are built with the same `maud` templates as the rest of the page, so brand names and
//! labels are escaped like any other text, and the page needs no script or chart library. SVG
//! shapes are written with an explicit end tag (`<rect …></rect>`): inside HTML, `<rect …/>`
//! and `<rect …></rect>` are the same element, and maud's `;` would leave the tag open.

use maud::{Markup, html};

use super::data::{Fleet, Row};
use crate::audit::fmt::thousands;

/// Brands drawn in the risk-by-brand chart (most vehicles first).
const MAX_BRANDS: usize = 15;
/// Yearly-km histogram: bins of this width, the last one open-ended.
const KM_BIN: f64 = 5_000.0;
const KM_BINS: usize = 10;

pub(crate) const HIGH: &str = "#c0392b";
pub(crate) const MEDIUM: &str = "#e6a23c";
pub(crate) const LOW: &str = "#67a86b";
pub(crate) const NEUTRAL: &str = "#4a7ab5";

const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// One bar: its label, its value and its colour.
pub(crate) type Bar = (String, i64, &'static str);

/// A coordinate with one decimal, as every shape is placed.
fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// A vertical bar chart with a value above each bar.
pub(crate) fn bar_chart(id: &str, title: &str, bars: &[Bar]) -> Markup {
    let (w, h, top, bottom, left) = (560.0, 260.0, 28.0, 44.0, 16.0);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let slot = (w - 2.0 * left) / bars.len().max(1) as f64;
    let bar_w = slot * 0.7;
    let base = h - bottom;
    html! {
        svg id=(id) class="chart" viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h)
            role="img" aria-label=(title) xmlns=(SVG_NS) {
            line x1=(left) y1=(base) x2=(w - left) y2=(base) stroke="#999" {}
            @for (i, (label, value, color)) in bars.iter().enumerate() {
                @let bh = (*value as f64 / max) * (base - top);
                @let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
                @let cx = px(x + bar_w / 2.0);
                @let v = thousands(*value);
                rect class="bar" x=(px(x)) y=(px(base - bh)) width=(px(bar_w)) height=(px(bh))
                    fill=(color) {
                    title { (label) ": " (v) }
                }
                text x=(cx) y=(px(base - bh - 4.0)) text-anchor="middle" font-size="12" { (v) }
                text x=(cx) y=(px(base + 16.0)) text-anchor="middle" font-size="11" { (label) }
            }
        }
    }
}

/// Horizontal stacked bars: high / medium / low vehicles per brand.
pub(crate) fn risk_by_brand(brands: &[Fleet]) -> Markup {
    let shown = &brands[..brands.len().min(MAX_BRANDS)];
    let (w, row_h, label_w, top) = (560.0, 24.0, 170.0, 8.0);
    let h = top * 2.0 + row_h * shown.len().max(1) as f64 + 24.0;
    let max = shown.iter().map(|b| b.reports).max().unwrap_or(0).max(1) as f64;
    let span = w - label_w - 60.0;
    html! {
        svg id="chart-risk-by-brand" class="chart" viewBox={ "0 0 " (w) " " (h) } width=(w)
            height=(h) role="img" aria-label="Risk by brand" xmlns=(SVG_NS) {
            @for (i, b) in shown.iter().enumerate() {
                (brand_bar(b, top + row_h * i as f64, row_h, label_w, (max, span)))
            }
            (legend(label_w, h - 10.0))
        }
    }
}

/// One brand's row of [`risk_by_brand`]: its name, a segment per level, its report count. A
/// count of `max` vehicles is `span` wide.
fn brand_bar(b: &Fleet, y: f64, row_h: f64, label_w: f64, (max, span): (f64, f64)) -> Markup {
    let name = b.brand.as_deref().unwrap_or("(unknown · 未知)");
    let ty = px(y + row_h * 0.65);
    let levels = [(HIGH, "high 高"), (MEDIUM, "medium 中"), (LOW, "low 低")];
    // Each segment starts where the previous one ended.
    let mut x = label_w;
    let segments: Vec<(f64, f64, i64, &str, &str)> = b
        .risk
        .iter()
        .zip(levels)
        .map(|(count, (color, level))| {
            let (sx, bw) = (x, *count as f64 / max * span);
            x += bw;
            (sx, bw, *count, color, level)
        })
        .collect();
    html! {
        text x=(label_w - 6.0) y=(ty) text-anchor="end" font-size="12" { (name) }
        @for (sx, bw, count, color, level) in segments {
            @if count > 0 {
                rect class="bar" x=(px(sx)) y=(px(y)) width=(px(bw)) height=(px(row_h - 6.0))
                    fill=(color) {
                    title { (name) " · " (level) ": " (thousands(count)) }
                }
            }
        }
        text x=(px(x + 4.0)) y=(ty) font-size="11" { (thousands(b.reports)) }
    }
}

/// The colour key under [`risk_by_brand`], on the baseline `ly`.
fn legend(label_w: f64, ly: f64) -> Markup {
    let keys = [
        (HIGH, "high · 高风险"),
        (MEDIUM, "medium · 中风险"),
        (LOW, "low · 低风险"),
    ];
    html! {
        @for (i, (color, label)) in keys.iter().enumerate() {
            @let lx = label_w + 120.0 * i as f64;
            rect x=(lx) y=(ly - 9.0) width="10" height="10" fill=(color) {}
            text x=(lx + 14.0) y=(ly) font-size="11" { (label) }
        }
    }
}

/// Vehicles per accident grade A–D, the rest as unknown.
pub(crate) fn grade_distribution(rows: &[Row]) -> Vec<Bar> {
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

/// Vehicles per bin of [`KM_BIN`] yearly km, the last bin open-ended.
pub(crate) fn yearly_km_histogram(rows: &[Row]) -> Vec<Bar> {
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

/// Km driven since the previous report: bins of [`SINCE_BIN`] km, below zero (a rollback
/// between the reports) first, the last bin open-ended. Vehicles bought once are not counted.
pub(crate) fn km_since_previous_histogram(rows: &[Row]) -> Vec<Bar> {
    let mut below = 0i64;
    let mut counts = [0i64; SINCE_BINS];
    for km in rows.iter().filter_map(|r| r.km_since_previous) {
        if km < 0 {
            below += 1;
        } else {
            counts[((km / SINCE_BIN) as usize).min(SINCE_BINS - 1)] += 1;
        }
    }
    let mut bars = vec![("< 0".to_owned(), below, HIGH)];
    bars.extend(counts.iter().enumerate().map(|(i, c)| {
        let from = i as i64 * SINCE_BIN / 1000;
        let label = if i + 1 == SINCE_BINS {
            format!("{from}k+")
        } else {
            format!("{from}–{}k", from + SINCE_BIN / 1000)
        };
        (label, *c, NEUTRAL)
    }));
    bars
}

/// Km-since-previous histogram: bins of this width, the last one open-ended.
const SINCE_BIN: i64 = 2_000;
const SINCE_BINS: usize = 8;
