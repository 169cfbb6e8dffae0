//! JSON-shaped inputs for the `report_shaped` target: `arbitrary` builds a REPORT with the
//! vendor's keys and values of every type the API page allows or a vendor sends anyway
//! (numbers as strings, `""`, `null`, absent keys, wrong containers), wrapped in a generate or
//! get envelope. Shared, through `#[path]`, by the fuzz target and the corpus replay in
//! `tests/it/fuzz_corpus.rs`, so a committed input means the same body in both.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value, json};

/// A JSON value as a sloppy vendor writes one.
#[derive(Arbitrary, Debug)]
pub(super) enum Val {
    Null,
    Empty,
    Bool(bool),
    Int(i64),
    Small(i8),
    Float(f64),
    /// A number written as a string: `"12000"`, `"-0.005"`, `"1e3"`.
    NumText(i32, u8),
    Text(String),
    Date(u16, u8, u8, u8),
    List(Vec<Val>),
    Obj(Vec<(String, Val)>),
}

impl Val {
    fn json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Empty => json!(""),
            Val::Bool(b) => json!(b),
            Val::Int(i) => json!(i),
            Val::Small(i) => json!(i),
            // NaN and infinities have no JSON form; a vendor cannot send them either.
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::NumText(n, style) => match style % 4 {
                0 => json!(n.to_string()),
                1 => json!(format!("{}.{:03}", n / 1000, (n % 1000).unsigned_abs())),
                2 => json!(format!("{n}e{}", style % 7)),
                _ => json!(format!(" {n} ")),
            },
            Val::Text(s) => json!(s),
            Val::Date(y, m, d, style) => {
                let (y, m, d) = (1990 + y % 60, 1 + m % 13, 1 + d % 32);
                match style % 5 {
                    0 => json!(format!("{y}-{m:02}-{d:02}")),
                    1 => json!(format!("{y}/{m}/{d}")),
                    2 => json!(format!("{y}-{m:02}-{d:02}T08:30:00")),
                    3 => json!(i64::from(y - 1970) * 31_557_600 + i64::from(m) * 2_629_800),
                    _ => json!(format!("{y}年{m}月{d}日")),
                }
            }
            Val::List(v) => Value::Array(v.iter().map(Val::json).collect()),
            Val::Obj(kv) => Value::Object(kv.iter().map(|(k, v)| (k.clone(), v.json())).collect()),
        }
    }
}

/// One key of an object: absent, or present with a value.
type Field = Option<Val>;

#[derive(Arbitrary, Debug)]
pub(super) struct Record {
    date: Field,
    main_tain_date: Field,
    kind: Field,
    content: Field,
    mileage: Field,
    type_code: Field,
    total_money: Field,
    pay_type: Field,
    materal: Field,
    remark: Field,
    extra: Option<(String, Val)>,
}

#[derive(Arbitrary, Debug)]
pub(super) struct Part {
    name: u8,
    is_exception: Field,
    label: Field,
    exceptions: Option<Vec<Val>>,
    /// The part is not an object at all.
    not_object: Option<Val>,
}

#[derive(Arbitrary, Debug)]
pub(super) struct Report {
    overview: Option<Vec<Part>>,
    overview_not_object: Option<Val>,
    first_time_to_shop: Field,
    last_time_to_shop: Field,
    content_numbers: Field,
    brand_name: Field,
    vin_no: Field,
    avg_upkeep_year: Field,
    avg_mileage_year: Field,
    total_mileage: Field,
    first_mileage: Field,
    last_mileage: Field,
    accident_grade: Field,
    is_accident: Field,
    is_accident_reason: Field,
    updatetime: Field,
    result_content: Option<Vec<Record>>,
    result_content_not_list: Option<Val>,
    /// Where the REPORT sits: generate's `data.info` (true) or get's `data`.
    generate: bool,
}

const PARTS: [&str; 8] = [
    "appearance",
    "engine",
    "frame",
    "airbag",
    "gearbox",
    "electrical",
    "sunroof",
    "unknown_part",
];

fn put(m: &mut Map<String, Value>, key: &str, f: &Field) {
    if let Some(v) = f {
        m.insert(key.to_owned(), v.json());
    }
}

impl Report {
    /// The REPORT object.
    pub(super) fn json(&self) -> Value {
        let mut m = Map::new();
        if let Some(v) = &self.overview_not_object {
            m.insert("overview".into(), v.json());
        } else if let Some(parts) = &self.overview {
            let mut o = Map::new();
            for p in parts {
                let name = PARTS[usize::from(p.name) % PARTS.len()];
                let value = match &p.not_object {
                    Some(v) => v.json(),
                    None => {
                        let mut part = Map::new();
                        put(&mut part, "is_exception", &p.is_exception);
                        put(&mut part, "label", &p.label);
                        if let Some(list) = &p.exceptions {
                            part.insert(
                                "exceptions".into(),
                                Value::Array(list.iter().map(Val::json).collect()),
                            );
                        }
                        Value::Object(part)
                    }
                };
                o.insert(name.into(), value);
            }
            m.insert("overview".into(), Value::Object(o));
        }
        put(&mut m, "first_time_to_shop", &self.first_time_to_shop);
        put(&mut m, "last_time_to_shop", &self.last_time_to_shop);
        put(&mut m, "content_numbers", &self.content_numbers);
        put(&mut m, "brand_name", &self.brand_name);
        put(&mut m, "vinNO", &self.vin_no);
        put(&mut m, "avg_upkeep_year", &self.avg_upkeep_year);
        put(&mut m, "avg_mileage_year", &self.avg_mileage_year);
        put(&mut m, "total_mileage", &self.total_mileage);
        put(&mut m, "first_mileage", &self.first_mileage);
        put(&mut m, "last_mileage", &self.last_mileage);
        put(&mut m, "accident_grade", &self.accident_grade);
        put(&mut m, "is_accident", &self.is_accident);
        put(&mut m, "is_accident_reason", &self.is_accident_reason);
        put(&mut m, "updatetime", &self.updatetime);
        if let Some(v) = &self.result_content_not_list {
            m.insert("result_content".into(), v.json());
        } else if let Some(records) = &self.result_content {
            let list = records
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    put(&mut o, "date", &r.date);
                    put(&mut o, "mainTainDate", &r.main_tain_date);
                    put(&mut o, "type", &r.kind);
                    put(&mut o, "content", &r.content);
                    put(&mut o, "mileage", &r.mileage);
                    put(&mut o, "type_code", &r.type_code);
                    put(&mut o, "totalMoney", &r.total_money);
                    put(&mut o, "payType", &r.pay_type);
                    put(&mut o, "materal", &r.materal);
                    put(&mut o, "remark", &r.remark);
                    if let Some((k, v)) = &r.extra {
                        o.insert(k.clone(), v.json());
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("result_content".into(), Value::Array(list));
        }
        Value::Object(m)
    }

    /// The whole body as the vendor sends it, and the endpoint it came from.
    pub(super) fn body(&self) -> (&'static str, Vec<u8>) {
        let report = self.json();
        let (endpoint, data) = if self.generate {
            ("generate", json!({"requestId": "req-1", "info": report}))
        } else {
            ("get", report)
        };
        let body = json!({"code": 200, "msg": "成功", "taskNo": "t-1", "data": data});
        (
            endpoint,
            serde_json::to_vec(&body).expect("a Value serialises"),
        )
    }
}

/// The body an input of the `report_shaped` target stands for, if it decodes.
pub(super) fn body_of(data: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    let report = Report::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    Some(report.body())
}
