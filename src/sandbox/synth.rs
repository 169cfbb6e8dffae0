//! Synthetic REPORTs: what the sandbox sells for a VIN.
//!
//! Every report is a pure function of the VIN and the seed, so a test can ask [`truth`] what the
//! sandbox will do for a VIN and check the end-to-end result exactly. The report has the vendor's
//! shape and the vendor's untidiness (numbers as strings, `""`, `null`, absent fields, unknown
//! fields and parts) so clients are exercised against what real traffic looks like. The outcome
//! (inline, deferred, 703, 702) and the odometer rollback are decided from independent hashes,
//! so they do not shift when the report body's generator changes.

use chrono::{Datelike, Duration as Days, NaiveDate};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// The inline share [`truth`] assumes; [`super::SandboxConfig::inline_rate`] defaults to it.
pub(crate) const DEFAULT_INLINE_RATE: f64 = 0.3;
/// Share of deferred VINs whose `get` ends in 702.
const FAIL_702_RATE: f64 = 0.04;
/// Share of reported VINs with an odometer rollback.
const ROLLBACK_RATE: f64 = 0.05;
/// WMIs the vendor does not cover: generate answers 703.
const UNSUPPORTED_WMIS: [&str; 2] = ["LRW", "LNB"];

/// What the sandbox does for a VIN at generate and get (named apart from the client's
/// `api::Outcome`, which classes one answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Fate {
    /// Generate answers 200 with the report in `data.info`.
    Inline,
    /// Generate answers 200 with a requestId only; get answers 701 until ready, then the report.
    Deferred,
    /// Generate answers 703 (brand not supported); nothing is billed.
    Unsupported703,
    /// Generate answers 200 with a requestId; get answers 701 until ready, then 702 for good.
    Fails702,
}

/// The facts a test needs to check a downstream result against the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VinTruth {
    /// What the sandbox does for the VIN at generate and get.
    pub fate: Fate,
    /// The report's records, in date order, contain exactly one drop in mileage.
    pub has_rollback: bool,
    /// Size of that drop in km (2,000–30,000); 0 without rollback.
    pub rollback_km: u64,
}

impl VinTruth {
    /// Whether the sandbox ever answers 200 with a report for this VIN.
    pub fn has_report(&self) -> bool {
        matches!(self.fate, Fate::Inline | Fate::Deferred)
    }
}

/// What the sandbox will do for `vin` with `seed`, at the default inline rate (0.3).
pub fn truth(vin: &str, seed: u64) -> VinTruth {
    truth_with_rate(vin, seed, DEFAULT_INLINE_RATE)
}

/// [`truth`] for a sandbox configured with another `inline_rate`.
pub fn truth_with_rate(vin: &str, seed: u64, inline_rate: f64) -> VinTruth {
    let wmi = wmi(vin);
    if UNSUPPORTED_WMIS.contains(&wmi.as_str()) {
        return VinTruth {
            fate: Fate::Unsupported703,
            has_rollback: false,
            rollback_km: 0,
        };
    }
    let fate = if unit(vin, seed, b"inline") < inline_rate {
        Fate::Inline
    } else if unit(vin, seed, b"fail702") < FAIL_702_RATE {
        Fate::Fails702
    } else {
        Fate::Deferred
    };
    let rollback = rollback_km(vin, seed).filter(|_| fate != Fate::Fails702);
    let has_rollback = rollback.is_some();
    let rollback_km = rollback.unwrap_or(0);
    VinTruth {
        fate,
        has_rollback,
        rollback_km,
    }
}

/// The odometer drop planted in this VIN's report, if any. Independent of the inline rate, so a
/// report is the same whichever way it is delivered.
fn rollback_km(vin: &str, seed: u64) -> Option<u64> {
    (unit(vin, seed, b"rollback") < ROLLBACK_RATE)
        .then(|| 2_000 + hash(vin, seed, b"rollback_km") % 28_001)
}

/// How a deferred generate answer spells "no report yet": `data.info` absent, `{}` or `null`.
pub(crate) fn deferred_info(vin: &str, seed: u64) -> Option<Value> {
    match hash(vin, seed, b"info") % 3 {
        0 => None,
        1 => Some(Value::Object(Map::new())),
        _ => Some(Value::Null),
    }
}

/// The first three characters, upper-cased: the make's world manufacturer identifier.
pub(crate) fn wmi(vin: &str) -> String {
    vin.trim()
        .chars()
        .take(3)
        .collect::<String>()
        .to_uppercase()
}

/// FNV-1a over the VIN and a purpose tag, finished with splitmix64 and the seed. Stable across
/// builds and platforms, unlike `std`'s hasher.
fn hash(vin: &str, seed: u64, purpose: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vin
        .trim()
        .bytes()
        .chain([0xff])
        .chain(purpose.iter().copied())
    {
        h ^= u64::from(b.to_ascii_uppercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(h ^ splitmix(seed))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from the hash.
pub(crate) fn unit(vin: &str, seed: u64, purpose: &[u8]) -> f64 {
    (hash(vin, seed, purpose) >> 11) as f64 / (1u64 << 53) as f64
}

/// Makes by WMI, with a few models each (a model is sometimes appended to `brand_name`).
const MAKES: &[(&str, &str, &[&str])] = &[
    ("LSV", "上汽大众", &["帕萨特", "朗逸", "途观", "桑塔纳"]),
    ("LFV", "一汽-大众", &["迈腾", "速腾", "宝来", "高尔夫"]),
    ("LHG", "广汽本田", &["雅阁", "飞度", "缤智"]),
    ("LVH", "东风本田", &["思域", "CR-V", "XR-V"]),
    ("LBV", "华晨宝马", &["3系", "5系", "X1"]),
    ("LE4", "北京奔驰", &["C级", "E级", "GLC"]),
    ("LGB", "东风日产", &["轩逸", "天籁", "奇骏"]),
    ("LVS", "长安福特", &["福克斯", "蒙迪欧", "翼虎"]),
    ("LFM", "一汽丰田", &["卡罗拉", "RAV4", "亚洲龙"]),
    ("LVG", "广汽丰田", &["凯美瑞", "汉兰达", "雷凌"]),
    ("LSG", "上汽通用", &["别克英朗", "别克君威", "雪佛兰科鲁兹"]),
    ("LDC", "神龙汽车", &["标致408", "雪铁龙C5"]),
    ("LBE", "北京现代", &["伊兰特", "索纳塔", "途胜"]),
    ("LJD", "东风悦达起亚", &["K3", "K5", "智跑"]),
    ("LGW", "长城汽车", &["哈弗H6", "哈弗M6"]),
    ("LB3", "吉利汽车", &["帝豪", "博越", "星越"]),
    ("LC0", "比亚迪", &["秦", "宋", "唐", "汉"]),
    ("LS5", "长安汽车", &["CS75", "逸动", "CS55"]),
    ("LZW", "上汽通用五菱", &["宏光", "宝骏510"]),
    ("LVV", "奇瑞汽车", &["瑞虎8", "艾瑞泽5", "瑞虎7"]),
];

/// The make for a WMI, or a generic name for WMIs outside the table.
pub(crate) fn brand_for_wmi(wmi: &str) -> &'static str {
    MAKES
        .iter()
        .find(|(w, _, _)| *w == wmi)
        .map(|(_, name, _)| *name)
        .unwrap_or("其他品牌")
}

const SERVICE: &[(&str, &str)] = &[
    ("常规保养,更换机油、机油滤芯", "机油;机油滤清器"),
    ("更换机油、机滤、空滤", "机油;机油滤清器;空气滤清器"),
    ("更换空调滤芯", "空调滤清器"),
    ("更换火花塞、汽油滤清器", "火花塞;汽油滤清器"),
    ("更换刹车油", "制动液"),
];
const REPAIR: &[(&str, &str)] = &[
    ("更换前刹车片", "前刹车片"),
    ("前保险杠喷漆", "油漆"),
    ("更换左前大灯", "左前大灯总成"),
    ("更换蓄电池", "蓄电池"),
    ("钣金修复右后门", "钣金;油漆"),
    ("更换雨刮片", "雨刮片"),
];
const CHECK: &[(&str, &str)] = &[("全车检查", ""), ("四轮定位", ""), ("空调系统检测", "冷媒")];
const OTHER: &[(&str, &str)] = &[
    ("洗车", ""),
    ("更换轮胎", "轮胎"),
    ("加装行车记录仪", "行车记录仪"),
];

const APPEARANCE: &[&str] = &[
    "前保:油漆",
    "后保:钣金",
    "左前门：更换",
    "右后叶子板:油漆",
    "保险杠:拆卸",
    "前机盖：钣金",
    "左后视镜更换",
];
const ENGINE: &[&str] = &["发动机:大修", "缸垫：更换", "正时皮带:更换"];
const AIRBAG: &[&str] = &["主驾气囊:更换", "副驾气囊：更换"];
const FRAME: &[&str] = &["左前纵梁:校正", "右前纵梁：切割", "后围板:更换", "A柱损伤"];
const CHASSIS: &[&str] = &["前减震器:更换", "下摆臂：更换"];

/// A number as the vendor might send it.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Dec(f64),
}

impl Num {
    fn as_number(self) -> Value {
        match self {
            Num::Int(i) => json!(i),
            Num::Dec(f) => json!(f),
        }
    }
    fn as_string(self) -> Value {
        match self {
            Num::Int(i) => Value::String(i.to_string()),
            Num::Dec(f) => Value::String(format!("{f}")),
        }
    }
}

/// Puts `n` into `map[key]` in one of the vendor's spellings: a number, a numeric string, `""`,
/// `null`, or no field at all.
fn put_untidy(rng: &mut StdRng, map: &mut Map<String, Value>, key: &str, n: Num) {
    let v = match rng.random_range(0..20) {
        0..=8 => n.as_number(),
        9..=16 => n.as_string(),
        17 => Value::String(String::new()),
        18 => Value::Null,
        _ => return,
    };
    map.insert(key.to_owned(), v);
}

/// A number that must stay readable (mileage): a number or a numeric string, never missing.
fn num_or_string(rng: &mut StdRng, n: Num) -> Value {
    if rng.random_bool(0.6) {
        n.as_number()
    } else {
        n.as_string()
    }
}

fn rng_for(vin: &str, seed: u64) -> StdRng {
    StdRng::seed_from_u64(hash(vin, seed, b"report"))
}

/// One maintenance record before it is written out.
struct Visit {
    date: NaiveDate,
    mileage: i64,
}

/// The full REPORT for `vin`, as generate's `data.info` or get's `data`: the report as first
/// bought.
pub fn report(vin: &str, seed: u64) -> Value {
    report_aged(vin, seed, 0)
}

/// The REPORT for `vin` bought `age_days` after the first report (see [`Aging`]): the same
/// history, plus the visits made since, and for a few vehicles a new accident or a history whose
/// odometer readings were rolled back. `report_aged(vin, seed, 0)` is [`report`].
pub fn report_aged(vin: &str, seed: u64, age_days: u32) -> Value {
    report_with(vin, seed, age_days).0
}

/// What the sandbox's report of `vin` says changed between the report bought `from_days` and
/// the one bought `to_days` after the first (`from_days < to_days`), for tests to check an
/// audit of changes against.
pub fn aging_truth(vin: &str, seed: u64, from_days: u32, to_days: u32) -> AgingTruth {
    let (_, before) = report_with(vin, seed, from_days);
    let (_, after) = report_with(vin, seed, to_days);
    let new: Vec<u8> = after.codes[before.codes.len().min(after.codes.len())..].to_vec();
    AgingTruth {
        new_records: new.len() as u32,
        new_repairs: new.iter().filter(|c| **c == 2).count() as u32,
        became_accident: after.accident && !before.accident,
        km_since_previous: after.max_km.zip(before.max_km).map(|(a, b)| a - b),
        rollback_between_km: match (after.max_km, before.max_km) {
            (Some(a), Some(b)) if a < b => (b - a) as u64,
            _ => 0,
        },
    }
}

/// How a report bought again differs from the previous one, as the sandbox made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgingTruth {
    /// Maintenance records added since.
    pub new_records: u32,
    /// Of those, repairs (`type_code` 2).
    pub new_repairs: u32,
    /// The report now shows an accident (a frame finding, grade D) it did not show before.
    pub became_accident: bool,
    /// The highest odometer reading now minus the previous report's (negative after a rollback
    /// between the reports); `None` when either report has no reading.
    pub km_since_previous: Option<i64>,
    /// How far the highest reading now is below the previous report's; 0 when it is not.
    pub rollback_between_km: u64,
}

/// What [`report_with`] made, beside the body: each record's type code in the order the
/// records were made (the first report's, then the newer ones), whether the report shows a
/// serious accident, and its highest odometer reading.
struct Made {
    codes: Vec<u8>,
    accident: bool,
    max_km: Option<i64>,
}

/// How a VIN's report moves on with time. The visits after the first report come from their
/// own random stream, one visit after the other from the end of 2025, so a report bought later
/// holds every newer visit an earlier one held, and more. A few vehicles (5 % each, decided by
/// their own hashes, never both, never one with a rollback inside its first report) change for
/// the worse once their report is bought again: a new frame finding (an accident, grade D), or
/// a history whose every reading is lower than the first report's (rolled back by
/// [`Aging::rollback_km`] at the top, 8,000–30,000 km), the newer visits staying below the old
/// top by at least half of that.
struct Aging {
    /// Days since the first report.
    days: u32,
    new_accident: bool,
    rollback_km: Option<i64>,
}

/// Share of vehicles that show a new accident when bought again.
const AGED_ACCIDENT_RATE: f64 = 0.05;
/// Share of vehicles whose history reads lower when bought again.
const AGED_ROLLBACK_RATE: f64 = 0.05;

impl Aging {
    fn of(vin: &str, seed: u64, days: u32, first: &[Visit], serious: bool) -> Aging {
        let top = first.iter().map(|v| v.mileage).max().unwrap_or(0);
        let planted = rollback_km(vin, seed).is_some();
        let roll = unit(vin, seed, b"aged_rollback") < AGED_ROLLBACK_RATE;
        let rollback_km = (days > 0 && roll && !planted)
            .then(|| 8_000 + (hash(vin, seed, b"aged_rollback_km") % 22_001) as i64)
            .filter(|drop| top > drop + 2_000);
        let new_accident = days > 0
            && rollback_km.is_none()
            && !serious
            && !roll
            && unit(vin, seed, b"aged_accident") < AGED_ACCIDENT_RATE;
        Aging {
            days,
            new_accident,
            rollback_km,
        }
    }

    /// The visits since the first report, up to `days` after the end of 2025.
    fn newer_visits(&self, vin: &str, seed: u64, first: &[Visit]) -> Vec<Visit> {
        if self.days == 0 {
            return Vec::new();
        }
        let mut rng = StdRng::seed_from_u64(hash(vin, seed, b"aged_visits"));
        let start = date(2025, 12, 31);
        let until = start + Days::days(i64::from(self.days));
        let top = first.iter().map(|v| v.mileage).max().unwrap_or(0);
        let (mut mileage, cap) = match self.rollback_km {
            Some(drop) => (top - drop, top - drop / 2),
            None => (top, i64::MAX),
        };
        let mut day = start;
        let mut out = Vec::new();
        loop {
            day += Days::days(rng.random_range(20..200));
            let step = rng.random_range(300..6_000);
            if day > until {
                return out;
            }
            mileage = (mileage + step).min(cap);
            out.push(Visit { date: day, mileage });
        }
    }
}

/// The record of the `i`-th visit after the first report, from its own random stream.
fn newer_record(vin: &str, seed: u64, i: usize, v: &Visit) -> (Value, u8) {
    let mut rng = StdRng::seed_from_u64(hash(vin, seed, b"aged_record") ^ i as u64);
    record_coded(&mut rng, v)
}

/// The REPORT bought `age_days` after the first, and what went into it.
///
/// Long on purpose: it writes the REPORT's fields in the vendor's order, one after the other,
/// which reads best as one list. The report's own random stream is drawn exactly as for the
/// first report whatever the age, so the first report's fields and records stay as they were.
fn report_with(vin: &str, seed: u64, age_days: u32) -> (Value, Made) {
    let rollback = rollback_km(vin, seed);
    let mut rng = rng_for(vin, seed);
    let wmi = wmi(vin);

    let mut first = visits(&mut rng, rollback);
    let mut r = Map::new();

    let (mut overview, mut accident) = overview(&mut rng);
    let aging = Aging::of(vin, seed, age_days, &first, accident.grade == 'D');
    if aging.new_accident {
        let finding = FRAME[(hash(vin, seed, b"aged_frame") % FRAME.len() as u64) as usize];
        overview.insert(
            "frame".into(),
            json!({"is_exception": 1, "label": "车架", "exceptions": [finding]}),
        );
        let component = finding.split([':', '：']).next().unwrap_or(finding);
        accident.reason.push_str(component);
        accident.reason.push(';');
        accident.grade = 'D';
        accident.is_accident = 1;
    }
    let newer = aging.newer_visits(vin, seed, &first);
    if let Some(drop) = aging.rollback_km {
        // Every reading of the history is lower now, the top by exactly `drop`.
        let top = first.iter().map(|v| v.mileage).max().unwrap_or(0);
        for v in &mut first {
            v.mileage = v.mileage * (top - drop) / top;
        }
    }
    let visits: Vec<&Visit> = first.iter().chain(newer.iter()).collect();
    r.insert("overview".into(), Value::Object(overview));

    let first_visit = visits.first().copied();
    let last = visits.last().copied();
    let date_str = |v: Option<&Visit>| {
        v.map(|v| Value::String(v.date.format("%Y-%m-%d").to_string()))
            .unwrap_or_else(|| Value::String(String::new()))
    };
    r.insert("first_time_to_shop".into(), date_str(first_visit));
    put_untidy(
        &mut rng,
        &mut r,
        "content_numbers",
        Num::Int(visits.len() as i64),
    );
    let pic = if rng.random_bool(0.5) {
        format!("https://img.jumdata.com/brand/{}.png", wmi.to_lowercase())
    } else {
        String::new()
    };
    r.insert("brand_pic".into(), Value::String(pic));
    let make = brand_for_wmi(&wmi);
    let models = MAKES
        .iter()
        .find(|(w, _, _)| *w == wmi)
        .map(|(_, _, m)| *m)
        .unwrap_or(&[]);
    let brand = match models.choose(&mut rng) {
        Some(model) if rng.random_bool(0.5) => format!("{make} {model}"),
        _ => make.to_owned(),
    };
    r.insert("brand_name".into(), Value::String(brand));
    r.insert(
        "vinNO".into(),
        Value::String(format!("{wmi}**************")),
    );

    let years = match (first_visit, last) {
        (Some(f), Some(l)) => ((l.date - f.date).num_days() as f64 / 365.25).max(1.0),
        _ => 1.0,
    };
    let upkeep = (visits.len() as f64 / years * 2.0).round() / 2.0;
    put_untidy(&mut rng, &mut r, "avg_upkeep_year", as_num(upkeep));
    let max_mileage = visits.iter().map(|v| v.mileage).max().unwrap_or(0);
    let per_year = (max_mileage as f64 / years / 100.0).round() * 100.0;
    if visits.is_empty() || rng.random_bool(0.2) {
        r.insert("avg_mileage_year".into(), Value::String(String::new()));
    } else if rng.random_bool(0.2) {
        put_untidy(
            &mut rng,
            &mut r,
            "avg_mileage_year",
            Num::Dec(per_year + 0.5),
        );
    } else {
        put_untidy(&mut rng, &mut r, "avg_mileage_year", as_num(per_year));
    }
    put_untidy(&mut rng, &mut r, "total_mileage", Num::Int(max_mileage));
    r.insert(
        "accident_grade".into(),
        Value::String(accident.grade.to_string()),
    );
    r.insert(
        "is_accident_reason".into(),
        Value::String(accident.reason.clone()),
    );
    if let Some(f) = first_visit {
        put_untidy(&mut rng, &mut r, "first_mileage", Num::Int(f.mileage));
    } else {
        r.insert("first_mileage".into(), Value::String(String::new()));
    }
    r.insert("is_accident".into(), json!(accident.is_accident));

    let (mut records, mut codes) = records(&mut rng, &first);
    for (i, v) in newer.iter().enumerate() {
        let (record, code) = newer_record(vin, seed, i, v);
        records.push(record);
        codes.push(code);
    }
    r.insert("result_content".into(), Value::Array(records));
    let horizon = date(2025, 12, 31) + Days::days(i64::from(age_days));
    let updated = last
        .map(|l| l.date)
        .unwrap_or_else(|| date(2020, 1, 1))
        .checked_add_signed(Days::days(rng.random_range(1..400)))
        .unwrap_or(horizon)
        .min(horizon);
    r.insert(
        "updatetime".into(),
        Value::String(updated.format("%Y-%m-%d").to_string()),
    );
    r.insert("last_time_to_shop".into(), date_str(last));
    match last {
        Some(l) if rng.random_bool(0.7) => {
            put_untidy(&mut rng, &mut r, "last_mileage", Num::Int(l.mileage))
        }
        _ => {
            r.insert("last_mileage".into(), Value::String(String::new()));
        }
    }
    // Fields the vendor added without notice: a client must keep them.
    if rng.random_bool(0.15) {
        r.insert("report_version".into(), Value::String("2.1".into()));
    }
    if rng.random_bool(0.1) {
        r.insert(
            "vehicle_color".into(),
            Value::String(
                ["白色", "黑色", "银色"]
                    .choose(&mut rng)
                    .unwrap_or(&"白色")
                    .to_string(),
            ),
        );
    }
    let made = Made {
        codes,
        accident: accident.is_accident == 1,
        max_km: visits.iter().map(|v| v.mileage).max(),
    };
    (Value::Object(r), made)
}

fn as_num(x: f64) -> Num {
    if x.fract() == 0.0 {
        Num::Int(x as i64)
    } else {
        Num::Dec(x)
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid constant date")
}

/// Visit dates (strictly increasing) and odometer readings (strictly increasing, except for one
/// drop of exactly `rollback_km` when the VIN has a rollback).
fn visits(rng: &mut StdRng, rollback: Option<u64>) -> Vec<Visit> {
    let has_rollback = rollback.is_some();
    let drop_km = rollback.unwrap_or(0) as i64;
    let n = if has_rollback {
        rng.random_range(3..=40)
    } else if rng.random_bool(0.05) {
        0
    } else {
        rng.random_range(1..=40)
    };
    let end = date(2025, 12, 31);
    let mut day = date(2012, 1, 1) + Days::days(rng.random_range(0..(365 * 8)));
    let mut mileage: i64 = rng.random_range(5..3_000);
    let rollback_at = if has_rollback {
        rng.random_range(1..n)
    } else {
        usize::MAX
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            let gap = rng.random_range(20..260);
            day = (day + Days::days(gap)).min(end);
            if out.last().is_some_and(|v: &Visit| v.date >= day) {
                // Out of calendar: stop here rather than repeat a date.
                break;
            }
            mileage += rng.random_range(300..9_000);
        }
        if i + 1 == rollback_at {
            // The reading the rollback undercuts must leave room for a drop to stay positive.
            mileage = mileage.max(drop_km + rng.random_range(1_000..20_000));
        }
        if i == rollback_at {
            let prev = out.last().map(|v: &Visit| v.mileage).unwrap_or(mileage);
            mileage = prev - drop_km;
        }
        out.push(Visit { date: day, mileage });
    }
    // Visits that ran into the end of 2025 may have cut the rollback visit off: make the last
    // visit the rollback instead. There are at least two visits, as the first is before 2021.
    if has_rollback && out.len() <= rollback_at && out.len() >= 2 {
        let i = out.len() - 2;
        let before = out[i].mileage.max(drop_km + 1_000);
        out[i].mileage = before;
        out[i + 1].mileage = before - drop_km;
    }
    out
}

/// The records of `visits`, with each one's type code.
fn records(rng: &mut StdRng, visits: &[Visit]) -> (Vec<Value>, Vec<u8>) {
    let (mut out, codes): (Vec<Value>, Vec<u8>) =
        visits.iter().map(|v| record_coded(rng, v)).unzip();
    // Records come in date order, mostly.
    if out.len() >= 2 && rng.random_bool(0.15) {
        let i = rng.random_range(0..out.len() - 1);
        out.swap(i, i + 1);
    }
    (out, codes)
}

/// One maintenance record, with the wire untidiness of the vendor page.
///
/// Long on purpose: one field after the other, in the vendor's order, each with its own ways of
/// being untidy.
fn record_coded(rng: &mut StdRng, v: &Visit) -> (Value, u8) {
    let code: u8 = match rng.random_range(0..10) {
        0..=4 => 1,
        5..=7 => 2,
        8 => 3,
        _ => 4,
    };
    let (label, pool) = match code {
        1 => ("保养", SERVICE),
        2 => ("汽车维修", REPAIR),
        3 => ("检查", CHECK),
        _ => ("其他", OTHER),
    };
    let (content, materal) = *pool.choose(rng).unwrap_or(&("", ""));
    let mut m = Map::new();
    m.insert(
        "date".into(),
        Value::String(v.date.format("%Y-%m-%d").to_string()),
    );
    // China time: the visit's day at 08:00–18:00 +08:00.
    let mut ts = v.date.num_days_from_ce() as i64 - 719_163;
    if rng.random_bool(0.05) {
        ts += rng.random_range(-3..=3);
    }
    let secs = ts * 86_400 + rng.random_range(0..36_000);
    m.insert("mainTainDate".into(), num_or_string(rng, Num::Int(secs)));
    m.insert("materal".into(), Value::String(materal.into()));
    let remark = match rng.random_range(0..10) {
        0..=5 => Value::Null,
        6..=7 => Value::String(String::new()),
        8 => Value::String("客户自备机油".into()),
        _ => Value::String("下次保养提醒".into()),
    };
    m.insert("remark".into(), remark);
    m.insert("type".into(), Value::String(label.into()));
    m.insert("content".into(), Value::String(content.into()));
    m.insert("mileage".into(), num_or_string(rng, Num::Int(v.mileage)));
    let type_code = if rng.random_bool(0.9) {
        Value::String(code.to_string())
    } else {
        json!(code)
    };
    m.insert("type_code".into(), type_code);
    let pay = match rng.random_range(0..10) {
        0..=4 => Value::Null,
        5..=6 => Value::String(String::new()),
        7 => Value::String("现金".into()),
        8 => Value::String("保险".into()),
        _ => Value::String("微信".into()),
    };
    m.insert("payType".into(), pay);
    let money = match code {
        1 => rng.random_range(200..1_500),
        2 => rng.random_range(100..8_000),
        3 => rng.random_range(0..300),
        _ => rng.random_range(20..2_000),
    };
    let money = if rng.random_bool(0.2) {
        Num::Dec(money as f64 + 0.5)
    } else {
        Num::Int(money)
    };
    put_untidy(rng, &mut m, "totalMoney", money);
    (Value::Object(m), code)
}

struct Accident {
    grade: char,
    is_accident: i64,
    reason: String,
}

/// The overview parts and the accident fields that follow from their findings.
fn overview(rng: &mut StdRng) -> (Map<String, Value>, Accident) {
    let mut parts = Map::new();
    let mut found = [false; 4];
    let mut reason = String::new();
    let spec: [(&str, &str, &[&str], f64); 4] = [
        ("appearance", "外观", APPEARANCE, 0.35),
        ("engine", "发动机", ENGINE, 0.06),
        ("airbag", "安全气囊", AIRBAG, 0.04),
        ("frame", "车架", FRAME, 0.06),
    ];
    for (i, (key, label, pool, p)) in spec.iter().enumerate() {
        let exceptions = findings(rng, pool, *p);
        found[i] = !exceptions.is_empty();
        if i >= 2 {
            for e in &exceptions {
                let component = e.split([':', '：']).next().unwrap_or(e);
                reason.push_str(component);
                reason.push(';');
            }
        }
        parts.insert((*key).into(), part(rng, label, exceptions));
    }
    if rng.random_bool(0.1) {
        let exceptions = findings(rng, CHASSIS, 0.5);
        parts.insert("chassis".into(), part(rng, "底盘", exceptions));
    }
    let [appearance, engine, airbag, frame] = found;
    let grade = if frame || airbag {
        'D'
    } else if engine {
        'C'
    } else if appearance {
        'B'
    } else {
        'A'
    };
    let is_accident = if frame || airbag {
        1
    } else if rng.random_bool(0.1) {
        0
    } else {
        -1
    };
    (
        parts,
        Accident {
            grade,
            is_accident,
            reason,
        },
    )
}

fn findings(rng: &mut StdRng, pool: &[&str], p: f64) -> Vec<String> {
    if !rng.random_bool(p) {
        return Vec::new();
    }
    let n = rng.random_range(1..=pool.len().min(3));
    pool.choose_multiple(rng, n)
        .map(|s| s.to_string())
        .collect()
}

fn part(rng: &mut StdRng, label: &str, exceptions: Vec<String>) -> Value {
    let flag = i64::from(!exceptions.is_empty());
    let flag = if rng.random_bool(0.9) {
        json!(flag)
    } else {
        Value::String(flag.to_string())
    };
    json!({ "is_exception": flag, "label": label, "exceptions": exceptions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vins(n: usize) -> impl Iterator<Item = String> {
        const WMIS: [&str; 6] = ["LSV", "LFV", "LHG", "LC0", "WDB", "LZW"];
        (0..n).map(|i| format!("{}A{:013}", WMIS[i % WMIS.len()], i * 7919))
    }

    fn mileage(v: &Value) -> i64 {
        match v {
            Value::Number(n) => n.as_i64().expect("integer mileage"),
            Value::String(s) => s.parse().expect("numeric mileage"),
            other => panic!("mileage {other:?}"),
        }
    }

    /// Mileages in date order, as a downstream audit would read them.
    fn by_date(report: &Value) -> Vec<i64> {
        let mut recs: Vec<(String, i64)> = report["result_content"]
            .as_array()
            .expect("result_content is an array")
            .iter()
            .map(|r| {
                (
                    r["date"].as_str().expect("date").to_owned(),
                    mileage(&r["mileage"]),
                )
            })
            .collect();
        recs.sort();
        recs.into_iter().map(|(_, m)| m).collect()
    }

    #[test]
    fn mileage_is_monotone_unless_rollback() {
        let mut rollbacks = 0;
        for vin in vins(3000) {
            let t = truth(&vin, 7);
            if !t.has_report() {
                continue;
            }
            let ms = by_date(&report(&vin, 7));
            assert!(ms.len() <= 40);
            let drops: Vec<i64> = ms
                .windows(2)
                .map(|w| w[0] - w[1])
                .filter(|d| *d > 0)
                .collect();
            if t.has_rollback {
                rollbacks += 1;
                assert_eq!(drops, vec![t.rollback_km as i64], "{vin}: {ms:?}");
                assert!(t.rollback_km > 1_000 && t.rollback_km <= 30_000);
                assert!(ms.iter().all(|m| *m > 0), "{vin}: {ms:?}");
            } else {
                assert!(drops.is_empty(), "{vin}: {ms:?}");
            }
        }
        assert!(rollbacks > 50 && rollbacks < 250, "{rollbacks} rollbacks");
    }

    #[test]
    fn outcomes_have_the_planned_shares() {
        let mut counts = std::collections::HashMap::new();
        for vin in vins(6000) {
            *counts.entry(truth(&vin, 1).fate).or_insert(0) += 1;
        }
        assert!(!counts.contains_key(&Fate::Unsupported703));
        let inline = counts[&Fate::Inline];
        assert!((1500..2100).contains(&inline), "{counts:?}");
        assert!(counts[&Fate::Fails702] > 50, "{counts:?}");
        assert_eq!(truth("LRWABC12345678901", 1).fate, Fate::Unsupported703);
        assert_eq!(truth("lnbABC12345678901", 1).fate, Fate::Unsupported703);
    }

    #[test]
    fn reports_are_deterministic_and_serialize() {
        for vin in vins(200) {
            let a = serde_json::to_string(&report(&vin, 3)).expect("serializes");
            let b = serde_json::to_string(&report(&vin, 3)).expect("serializes");
            assert_eq!(a, b);
            let back: Value = serde_json::from_str(&a).expect("parses");
            let r = back.as_object().expect("object");
            for key in ["appearance", "engine", "airbag", "frame"] {
                let p = &r["overview"][key];
                assert!(p["exceptions"].is_array() && p["label"].is_string(), "{p}");
            }
            assert!(r["vinNO"].as_str().expect("vinNO").starts_with(&vin[..3]));
            assert!(["A", "B", "C", "D"].contains(&r["accident_grade"].as_str().expect("grade")));
        }
        assert_ne!(
            report("LSVAB123456789012", 1),
            report("LSVAB123456789012", 2)
        );
    }

    #[test]
    fn a_report_bought_later_keeps_its_history_and_adds_the_newer_visits() {
        let (mut accidents, mut rollbacks, mut repairs) = (0, 0, 0);
        for vin in vins(2000) {
            if !truth(&vin, 4).has_report() {
                continue;
            }
            let first = report(&vin, 4);
            let later = report_aged(&vin, 4, 180);
            let latest = report_aged(&vin, 4, 360);
            let a = aging_truth(&vin, 4, 0, 180);
            let list = |r: &Value| r["result_content"].as_array().expect("records").clone();
            let (old, new, newest) = (list(&first), list(&later), list(&latest));
            assert_eq!(new.len(), old.len() + a.new_records as usize, "{vin}");
            // A later report holds every record an earlier one bought again held.
            assert_eq!(newest[..new.len()], new[..], "{vin}");
            let code = |r: &Value| match &r["type_code"] {
                Value::String(s) => s.parse::<u8>().expect("type code"),
                v => v.as_u64().expect("type code") as u8,
            };
            let added_repairs = new[old.len()..].iter().filter(|r| code(r) == 2).count();
            assert_eq!(added_repairs, a.new_repairs as usize, "{vin}");
            repairs += added_repairs;
            let top = |r: &[Value]| r.iter().map(|x| mileage(&x["mileage"])).max().unwrap_or(0);
            if !old.is_empty() {
                assert_eq!(Some(top(&new) - top(&old)), a.km_since_previous, "{vin}");
            }
            if a.rollback_between_km > 0 {
                rollbacks += 1;
                assert!(a.rollback_between_km >= 4_000, "{vin}: {a:?}");
                assert!(!truth(&vin, 4).has_rollback, "{vin}");
            } else {
                // The same history, record for record.
                assert_eq!(new[..old.len()], old[..], "{vin}");
            }
            if a.became_accident {
                accidents += 1;
                assert_ne!(first["accident_grade"], json!("D"), "{vin}");
                assert_eq!(later["accident_grade"], json!("D"), "{vin}");
                assert_eq!(later["is_accident"], json!(1), "{vin}");
            } else {
                assert_eq!(first["overview"], later["overview"], "{vin}");
            }
            // Between the two later reports nothing gets worse: the change happens once.
            let b = aging_truth(&vin, 4, 180, 360);
            assert!(
                !b.became_accident && b.rollback_between_km == 0,
                "{vin}: {b:?}"
            );
        }
        assert!((40..200).contains(&accidents), "{accidents} new accidents");
        assert!(
            (40..200).contains(&rollbacks),
            "{rollbacks} rollbacks between reports"
        );
        assert!(repairs > 100, "{repairs} new repairs");
        // Not bought again: nothing changes.
        let v = "LSVA0000000000001";
        assert_eq!(report_aged(v, 4, 0), report(v, 4));
        assert_eq!(aging_truth(v, 4, 0, 0).new_records, 0);
    }

    #[test]
    fn accident_follows_findings() {
        for vin in vins(500) {
            let r = report(&vin, 5);
            let hit = |k: &str| {
                r["overview"][k]["exceptions"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            };
            let serious = hit("frame") || hit("airbag");
            assert_eq!(r["is_accident"] == json!(1), serious, "{vin}");
            assert_eq!(r["accident_grade"] == json!("D"), serious, "{vin}");
        }
    }
}
