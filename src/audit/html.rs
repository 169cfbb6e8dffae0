//! `audit.html`: the audit as one self-contained page a fleet manager opens from an email.
//!
//! No scripts, no fonts, no network: the charts are inline SVG drawn here (`charts`), the
//! styles are inline, so the page looks the same offline, in a mail client's viewer or printed.
//! Labels are English and Chinese; the vendor's own text (brand names, grades) is shown as it
//! came. The page is written with `maud` templates, one function per section, which escape
//! every value they interpolate, since most of it is data from outside.

mod charts;
mod data;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use polars::prelude::PolarsResult;

use super::Audit;
use super::fmt::{NONE, date, money, pct, round_km, thousands};
use super::risk::{self, Reason, RiskLevel};
use data::{Fleet, Row};

/// High-risk vehicles listed in the page; the rest are in `vehicle_flags`.
pub const MAX_LISTED: usize = 1_000;

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

const UNKNOWN_BRAND: &str = "(unknown · 未知)";

const BRAND_COLUMNS: [&str; 10] = [
    "Brand · 品牌",
    "Reports · 报告",
    "Accident · 事故率",
    "Structural · 结构损伤",
    "Rollback · 里程回滚",
    "Median yearly km · 年均里程",
    "Median spent · 花费中位数",
    "High · 高",
    "Medium · 中",
    "Low · 低",
];

const VEHICLE_COLUMNS: [&str; 8] = [
    "VIN · 车架号",
    "Brand · 品牌",
    "Accident · 事故",
    "Grade · 等级",
    "Reasons · 原因",
    "Last visit · 最近到店",
    "Total km · 总里程",
    "Spent · 花费",
];

/// The whole page: the head, then each section in reading order.
pub fn render(a: &Audit) -> PolarsResult<String> {
    let rows = data::rows(&a.vehicle_flags)?;
    let (brands, total) = data::fleet(&a.fleet_summary)?;
    let page = html! {
        (DOCTYPE)
        html lang="zh-CN" {
            (head(a))
            body {
                (title(a))
                (headline(a, &rows, total.as_ref()))
                (charts_section(&rows, &brands))
                (since_last_audit(a, &rows))
                (brand_table(&brands, total.as_ref()))
                (high_risk(a, &rows))
                (rules())
            }
        }
    };
    let mut s = page.into_string();
    s.push('\n');
    Ok(s)
}

/// `<head>`: charset, viewport, the tab's title and the inline style sheet.
fn head(a: &Audit) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { "Fleet audit · 车队审计 · " (a.as_of) }
            // Not escaped: STYLE is this file's own constant, not data, and `<style>` is raw
            // text, where an escaped `"` would stay `&quot;` and break the font list.
            style { (PreEscaped(STYLE)) }
        }
    }
}

/// The page's title and what the audit was run with.
fn title(a: &Audit) -> Markup {
    html! {
        h1 { "Fleet audit · 车队审计报告" }
        div.sub {
            "As of · 审计日期 " (a.as_of)
            " — odometer rollback tolerance · 里程回滚容差 " (thousands(a.tolerance_km))
            " km — vmr " (env!("CARGO_PKG_VERSION"))
        }
    }
}

/// One headline number with its label; `class` is `""` or `"high"`.
fn card(class: &str, n: &str, label: &str) -> Markup {
    html! {
        div class={ "card " (class) } {
            div.n { (n) }
            div.l { (label) }
        }
    }
}

/// The headline numbers: what was asked, bought and found, then the fleet's totals.
fn headline(a: &Audit, rows: &[Row], total: Option<&Fleet>) -> Markup {
    let high = a.count(RiskLevel::High);
    let rollbacks = a
        .reasons
        .iter()
        .filter(|r| {
            r.iter()
                .any(|x| matches!(x, Reason::OdometerRollback { .. }))
        })
        .count();
    let failed_expired = format!(
        "{} / {}",
        thousands(a.requests.failed),
        thousands(a.requests.expired)
    );
    html! {
        section id="headline" {
            div.cards {
                (card("", &thousands(a.requests.vehicles), "Vehicles requested · 查询车辆"))
                (card("", &thousands(rows.len() as i64), "Reports bought · 已购报告"))
                (card("", &failed_expired, "Failed / expired · 失败 / 超时"))
                (card("high", &thousands(high as i64), "High risk · 高风险车辆"))
                (card("high", &thousands(rollbacks as i64), "Odometer rollbacks · 里程回滚"))
                @if let Some(t) = total {
                    (fleet_cards(t))
                }
            }
        }
    }
}

/// The headline numbers of `fleet_summary`'s total row.
fn fleet_cards(t: &Fleet) -> Markup {
    let median_km = t
        .median_km
        .map(|k| format!("{} km", round_km(k)))
        .unwrap_or_else(|| NONE.into());
    let median_spent = t.median_spent.map(money).unwrap_or_else(|| NONE.into());
    html! {
        (card("", &pct(t.accident_rate), "Accident rate · 事故率"))
        (card("", &pct(t.structural_rate), "Structural damage · 结构损伤率"))
        (card("", &median_km, "Median yearly km · 年均里程中位数"))
        (card("", &median_spent, "Median total spent · 维保花费中位数"))
    }
}

/// The three charts side by side.
fn charts_section(rows: &[Row], brands: &[Fleet]) -> Markup {
    let grades = charts::grade_distribution(rows);
    let yearly_km = charts::yearly_km_histogram(rows);
    html! {
        h2 { "Charts · 图表" }
        section.charts {
            figure {
                figcaption { "Accident grade · 事故等级分布" }
                (charts::bar_chart("chart-accident-grade", "Accident grade distribution", &grades))
            }
            figure {
                figcaption { "Risk by brand · 各品牌风险" }
                (charts::risk_by_brand(brands))
            }
            figure {
                figcaption { "Yearly km · 年均行驶里程分布 (vehicles · 车辆数)" }
                (charts::bar_chart("chart-yearly-km", "Distribution of yearly km", &yearly_km))
            }
        }
    }
}

/// What changed for the vehicles bought again: how many, the ones now high risk because of a
/// change (and which), and the km driven since their previous report.
fn since_last_audit(a: &Audit, rows: &[Row]) -> Markup {
    let refreshed = rows.iter().filter(|r| r.versions >= 2).count();
    let changed: Vec<(&Row, &[Reason])> = rows
        .iter()
        .zip(a.reasons.iter().map(Vec::as_slice))
        .filter(|(r, reasons)| {
            risk::level_of(reasons) == RiskLevel::High
                && (r.became_accident || r.new_structural || r.rollback_between)
        })
        .collect();
    let km = charts::km_since_previous_histogram(rows);
    html! {
        h2 { "Since the last audit · 自上次审计以来" }
        section id="since-last-audit" {
            @if refreshed == 0 {
                p.sub { "No vehicle has a second report yet. · 尚无车辆重新查询报告。" }
            } @else {
                div.cards {
                    (card("", &thousands(refreshed as i64), "Vehicles refreshed · 重新查询车辆"))
                    (card("high", &thousands(changed.len() as i64), "Newly high risk · 新增高风险"))
                    (card("high", &thousands(rows.iter().filter(|r| r.rollback_between).count() as i64),
                        "Rollbacks between reports · 两次报告间里程回滚"))
                }
                figure {
                    figcaption { "Km since the previous report · 距上次报告行驶里程 (vehicles · 车辆数)" }
                    (charts::bar_chart("chart-km-since-previous", "Km driven since the previous report", &km))
                }
                @if !changed.is_empty() {
                    table id="newly-high-risk" {
                        thead { tr {
                            th { "VIN · 车架号" }
                            th { "What changed · 变化" }
                            th { "New records · 新增记录" }
                            th { "Km since previous · 新增里程" }
                        } }
                        tbody {
                            @for (row, _) in changed.iter().take(MAX_LISTED) {
                                tr {
                                    td.vin { (row.vin) }
                                    td { ul.reasons {
                                        @if row.rollback_between {
                                            li { "Odometer lower than the previous report · 两次报告间里程回滚" }
                                        }
                                        @if row.became_accident {
                                            li { "Accident status or grade worse · 事故状态或等级变差" }
                                        }
                                        @if row.new_structural {
                                            li { "New frame/airbag exception · 新增车架/气囊异常" }
                                        }
                                    } }
                                    td.num { (row.new_records.map(i64::from).map(thousands).unwrap_or_else(|| NONE.into())) }
                                    td.num { (row.km_since_previous.map(thousands).unwrap_or_else(|| NONE.into())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `fleet_summary` as a table: one row per brand, then the total.
fn brand_table(brands: &[Fleet], total: Option<&Fleet>) -> Markup {
    html! {
        h2 { "By brand · 品牌汇总" }
        table id="brands" {
            thead { tr { @for c in BRAND_COLUMNS { th { (c) } } } }
            tbody {
                @for b in brands {
                    (brand_row(html! { (b.brand.as_deref().unwrap_or(UNKNOWN_BRAND)) }, b))
                }
                @if let Some(t) = total {
                    (brand_row(html! { b { "Total · 合计" } }, t))
                }
            }
        }
    }
}

/// One row of the brand table, under the (already rendered) `name`.
fn brand_row(name: Markup, b: &Fleet) -> Markup {
    html! {
        tr {
            td { (name) }
            td.num { (thousands(b.reports)) }
            td.num { (pct(b.accident_rate)) }
            td.num { (pct(b.structural_rate)) }
            td.num { (pct(b.rollback_rate)) }
            td.num { (b.median_km.map(round_km).unwrap_or_else(|| NONE.into())) }
            td.num { (b.median_spent.map(money).unwrap_or_else(|| NONE.into())) }
            @for n in b.risk {
                td.num { (thousands(n)) }
            }
        }
    }
}

/// The high-risk vehicles with the most high reasons first, then by VIN.
fn high_risk_first<'a>(
    rows: &'a [Row],
    reasons: &'a [Vec<Reason>],
) -> Vec<(&'a Row, &'a [Reason])> {
    let mut listed: Vec<(&Row, &[Reason])> = rows
        .iter()
        .zip(reasons.iter().map(Vec::as_slice))
        .filter(|(_, r)| risk::level_of(r) == RiskLevel::High)
        .collect();
    listed.sort_by_key(|(row, r)| {
        let highs = r.iter().filter(|x| x.level() == RiskLevel::High).count();
        (std::cmp::Reverse(highs), row.vin.clone())
    });
    listed
}

/// The high-risk vehicles, at most [`MAX_LISTED`] of them, each with its reasons.
fn high_risk(a: &Audit, rows: &[Row]) -> Markup {
    let listed = high_risk_first(rows, &a.reasons);
    let max = thousands(MAX_LISTED as i64);
    html! {
        h2 { "High-risk vehicles · 高风险车辆 (" (thousands(listed.len() as i64)) ")" }
        @if listed.len() > MAX_LISTED {
            p.sub {
                "The first " (max) " are listed; all are in vehicle_flags (risk_level = high). · "
                "仅列出前 " (max) " 辆，完整名单见 vehicle_flags。"
            }
        }
        table id="high-risk" {
            thead { tr { @for c in VEHICLE_COLUMNS { th { (c) } } } }
            tbody {
                @for (row, reasons) in listed.iter().take(MAX_LISTED) {
                    (vehicle_row(row, reasons))
                }
            }
        }
    }
}

fn status_text(s: Option<i32>) -> &'static str {
    match s {
        Some(1) => "accident · 是",
        Some(0) => "none · 否",
        _ => "unknown · 未知",
    }
}

/// One row of the high-risk table.
fn vehicle_row(row: &Row, reasons: &[Reason]) -> Markup {
    let total_km = row
        .total_km
        .map(|k| format!("{} km", thousands(k)))
        .unwrap_or_else(|| NONE.into());
    html! {
        tr.vehicle {
            td.vin { (row.vin) }
            td { (row.brand.as_deref().unwrap_or(NONE)) }
            td { (status_text(row.status)) }
            td { (row.grade.as_deref().unwrap_or(NONE)) }
            td {
                ul.reasons {
                    @for r in reasons { li { (r.describe()) } }
                }
            }
            td.num { (date(row.last_visit)) }
            td.num { (total_km) }
            td.num { (row.spent.map(money).unwrap_or_else(|| NONE.into())) }
        }
    }
}

/// The rules in one paragraph, so the page explains itself.
fn rules() -> Markup {
    html! {
        p.sub {
            "Rules · 规则: high = frame/airbag exception, odometer rollback (within a report, or "
            "between the previous report and the latest), accident recorded or grade D; medium = engine exception, grade C, accident unknown with exceptions, or no "
            "workshop visit for 2+ years; otherwise low. Computed from the exported tables "
            "(vehicle_flags, fleet_summary)."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_data_is_escaped() {
        let row = Row {
            vin: "V".into(),
            brand: Some(r#"<script>alert("x")</script> & 'y'"#.into()),
            status: None,
            grade: None,
            last_visit: None,
            total_km: None,
            yearly_km: None,
            spent: None,
            versions: 1,
            km_since_previous: None,
            new_records: None,
            became_accident: false,
            new_structural: false,
            rollback_between: false,
        };
        let html = vehicle_row(&row, &[]).into_string();
        assert!(
            html.contains("<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'y'</td>"),
            "{html}"
        );
        let svg = charts::bar_chart("c", "t", &[("<b>".into(), 3, charts::NEUTRAL)]).into_string();
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
    }
}
