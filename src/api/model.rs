//! The REPORT model: what one maintenance-history report holds, parsed leniently.
//!
//! The vendor mixes types freely: any scalar may arrive as a JSON number, a numeric string, an
//! empty string, `null`, or not at all. Every scalar here is a [`Lenient`] that accepts all of
//! those and tells apart "missing" from "present but unusable", so the export can count what it
//! coerced to null. Unknown fields are kept in `extra` maps at every level, so a parse followed by
//! a serialize loses nothing the vendor sent. Parsing goes straight from bytes to these types
//! (no intermediate `serde_json::Value` for the bulky parts), because export parses every report
//! bought.

use chrono::NaiveDate;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;

/// One scalar field as the vendor sent it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Lenient<T> {
    /// Absent, `null`, or an empty (or all-blank) string.
    #[default]
    Missing,
    /// A usable value.
    Value(T),
    /// Present but not convertible; holds the raw text for diagnostics.
    Invalid(String),
}

impl<T: Clone> Lenient<T> {
    /// The typed value, or `None` when missing or invalid.
    pub fn get(&self) -> Option<T> {
        match self {
            Lenient::Value(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl<T> Lenient<T> {
    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Lenient::Value(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_invalid(&self) -> bool {
        matches!(self, Lenient::Invalid(_))
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Lenient::Missing)
    }
}

/// How a kind of scalar is read from each JSON shape. Implemented by the marker types below.
pub trait Kind {
    type Out;
    fn from_str(s: &str) -> Option<Self::Out>;
    fn from_i64(v: i64) -> Option<Self::Out>;
    fn from_f64(v: f64) -> Option<Self::Out>;
    fn from_bool(_v: bool) -> Option<Self::Out> {
        None
    }
}

/// Whole numbers (kilometres, counts, codes, Unix seconds). Fractions round half away from zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Int;
/// Floating-point numbers (the yearly averages).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Float;
/// Free text; numbers and booleans are kept as their JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Text;
/// Calendar dates: `YYYY-MM-DD`, `YYYY/MM/DD`, or a date-time whose date part is taken.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Date;
/// Decimal amounts, kept as their canonical decimal text so no precision is lost to `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Decimal;

fn f64_to_i64(v: f64) -> Option<i64> {
    if v.is_finite() && v.abs() < 9.0e18 {
        Some(v.round() as i64)
    } else {
        None
    }
}

impl Kind for Int {
    type Out = i64;
    fn from_str(s: &str) -> Option<i64> {
        s.parse::<i64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(f64_to_i64))
    }
    fn from_i64(v: i64) -> Option<i64> {
        Some(v)
    }
    fn from_f64(v: f64) -> Option<i64> {
        f64_to_i64(v)
    }
}

impl Kind for Float {
    type Out = f64;
    fn from_str(s: &str) -> Option<f64> {
        s.parse::<f64>().ok().filter(|v| v.is_finite())
    }
    fn from_i64(v: i64) -> Option<f64> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<f64> {
        v.is_finite().then_some(v)
    }
}

/// A kind whose value is the (trimmed) string itself, when the kind accepts it: text and
/// decimals. Lets a reader check a borrowed string without copying it.
pub trait TextKind: Kind<Out = String> {
    fn accepts(s: &str) -> bool;
}

impl TextKind for Text {
    fn accepts(_s: &str) -> bool {
        true
    }
}

impl Kind for Text {
    type Out = String;
    fn from_str(s: &str) -> Option<String> {
        Self::accepts(s).then(|| s.to_owned())
    }
    fn from_i64(v: i64) -> Option<String> {
        Some(v.to_string())
    }
    fn from_f64(v: f64) -> Option<String> {
        Some(v.to_string())
    }
    fn from_bool(v: bool) -> Option<String> {
        Some(v.to_string())
    }
}

impl Kind for Date {
    type Out = NaiveDate;
    fn from_str(s: &str) -> Option<NaiveDate> {
        parse_date(s)
    }
    fn from_i64(_v: i64) -> Option<NaiveDate> {
        None
    }
    fn from_f64(_v: f64) -> Option<NaiveDate> {
        None
    }
}

/// Parses the date forms the vendor uses; a date-time contributes its date part.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    // The date part is everything before a 'T' or a space, whichever comes first.
    let date_part = s.split(['T', ' ']).next().unwrap_or(s);
    // The usual shape, `YYYY-MM-DD` or `YYYY/MM/DD`, read directly: chrono's format parser is a
    // visible share of export time. Anything else takes chrono's path.
    let b = date_part.as_bytes();
    if b.len() == 10 && (b[4] == b'-' || b[4] == b'/') && b[7] == b[4] {
        let num = |r: &[u8]| {
            r.iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        if let (Some(y), Some(m), Some(d)) = (num(&b[0..4]), num(&b[5..7]), num(&b[8..10])) {
            return NaiveDate::from_ymd_opt(y as i32, m, d);
        }
    }
    NaiveDate::parse_from_str(date_part, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(date_part, "%Y/%m/%d"))
        .ok()
}

impl TextKind for Decimal {
    /// What parses as a finite number.
    fn accepts(s: &str) -> bool {
        s.parse::<f64>().is_ok_and(|v| v.is_finite())
    }
}

impl Kind for Decimal {
    type Out = String;
    fn from_str(s: &str) -> Option<String> {
        // Keep the vendor's digits.
        let t = s.trim();
        Self::accepts(t).then(|| t.to_owned())
    }
    fn from_i64(v: i64) -> Option<String> {
        Some(v.to_string())
    }
    fn from_f64(v: f64) -> Option<String> {
        v.is_finite().then(|| v.to_string())
    }
}

/// The raw, typed-by-shape JSON value, kept so that a serialize writes back what was read.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    /// An array or object where a scalar belongs.
    Json(Value),
}

/// A lenient scalar together with the wire value it came from.
///
/// `value` is what code uses; `raw` lets a round trip reproduce the vendor's representation
/// (`"3"` stays a string, `3` stays a number).
#[derive(Debug, Clone, PartialEq)]
pub struct Field<K: Kind> {
    pub value: Lenient<K::Out>,
    raw: Option<Raw>,
    /// `true` when the key was present with `null`.
    null: bool,
    _kind: PhantomData<K>,
}

impl<K: Kind> Default for Field<K> {
    fn default() -> Self {
        Field {
            value: Lenient::Missing,
            raw: None,
            null: false,
            _kind: PhantomData,
        }
    }
}

impl<K: Kind> Field<K>
where
    K::Out: Clone,
{
    pub fn get(&self) -> Option<K::Out> {
        self.value.get()
    }
}

impl<K: Kind> Field<K> {
    pub fn as_ref(&self) -> Option<&K::Out> {
        self.value.as_ref()
    }

    pub fn is_invalid(&self) -> bool {
        self.value.is_invalid()
    }

    /// `true` when the key was absent from the object (as opposed to `null` or `""`).
    pub fn is_absent(&self) -> bool {
        self.raw.is_none() && !self.null
    }

    fn from_raw(raw: Raw, value: Lenient<K::Out>) -> Self {
        Field {
            value,
            raw: Some(raw),
            null: false,
            _kind: PhantomData,
        }
    }
}

struct FieldVisitor<K>(PhantomData<K>);

fn lenient<T>(v: Option<T>, raw: impl FnOnce() -> String) -> Lenient<T> {
    match v {
        Some(v) => Lenient::Value(v),
        None => Lenient::Invalid(raw()),
    }
}

impl<'de, K: Kind> Visitor<'de> for FieldVisitor<K> {
    type Value = Field<K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::from_raw(
            Raw::Bool(v),
            lenient(K::from_bool(v), || v.to_string()),
        ))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::from_raw(
            Raw::I64(v),
            lenient(K::from_i64(v), || v.to_string()),
        ))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let value = match i64::try_from(v) {
            Ok(i) => lenient(K::from_i64(i), || v.to_string()),
            Err(_) => lenient(K::from_f64(v as f64), || v.to_string()),
        };
        Ok(Field::from_raw(Raw::U64(v), value))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::from_raw(
            Raw::F64(v),
            lenient(K::from_f64(v), || v.to_string()),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        let value = if t.is_empty() {
            Lenient::Missing
        } else {
            lenient(K::from_str(t), || v.to_owned())
        };
        Ok(Field::from_raw(Raw::Str(v.to_owned()), value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field {
            null: true,
            ..Field::default()
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        let text = v.to_string();
        Ok(Field::from_raw(Raw::Json(v), Lenient::Invalid(text)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let text = v.to_string();
        Ok(Field::from_raw(Raw::Json(v), Lenient::Invalid(text)))
    }
}

impl<'de, K: Kind> Deserialize<'de> for Field<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(PhantomData))
    }
}

impl<K: Kind> Serialize for Field<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.raw {
            None => s.serialize_unit(),
            Some(Raw::Str(v)) => s.serialize_str(v),
            Some(Raw::I64(v)) => s.serialize_i64(*v),
            Some(Raw::U64(v)) => s.serialize_u64(*v),
            Some(Raw::F64(v)) => s.serialize_f64(*v),
            Some(Raw::Bool(v)) => s.serialize_bool(*v),
            Some(Raw::Json(v)) => v.serialize(s),
        }
    }
}

fn skip_field<K: Kind>(f: &Field<K>) -> bool {
    f.is_absent()
}

/// A value that must have a container shape (object or array) but may arrive as anything.
///
/// Anything else (`""`, `null`, a number) parses as `Malformed` with nothing inside, so one
/// odd field never makes the whole report unreadable.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Shaped<T> {
    #[default]
    Absent,
    Ok(T),
    /// Present but of the wrong shape; kept verbatim for the round trip.
    Malformed(Value),
}

impl<T> Shaped<T> {
    pub fn as_ok(&self) -> Option<&T> {
        match self {
            Shaped::Ok(v) => Some(v),
            _ => None,
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self, Shaped::Absent)
    }
}

struct ShapedVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for ShapedVisitor<T> {
    type Value = Shaped<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(shape(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(shape(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Shaped::Malformed(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Shaped::Malformed(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Shaped::Malformed(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Shaped::Malformed(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Shaped::Malformed(Value::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Shaped::Malformed(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn shape<T: DeserializeOwned>(v: Value) -> Shaped<T> {
    // Deserializing from `&Value` reads it in place instead of cloning it first.
    match T::deserialize(&v) {
        Ok(t) => Shaped::Ok(t),
        Err(_) => Shaped::Malformed(v),
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapedVisitor(PhantomData))
    }
}

impl<T: Serialize> Serialize for Shaped<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shaped::Absent => s.serialize_unit(),
            Shaped::Ok(v) => v.serialize(s),
            Shaped::Malformed(v) => v.serialize(s),
        }
    }
}

/// One part of the body overview (appearance, engine, airbag, frame, or any other the vendor
/// sends).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OverviewPart {
    #[serde(default, skip_serializing_if = "skip_field")]
    pub is_exception: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub label: Field<Text>,
    #[serde(default, skip_serializing_if = "Shaped::is_absent")]
    pub exceptions: Shaped<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl OverviewPart {
    /// The findings as text; non-string entries are rendered as their JSON text, blanks dropped.
    pub fn findings(&self) -> Vec<String> {
        match &self.exceptions {
            Shaped::Ok(list) => list
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) if s.trim().is_empty() => None,
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One maintenance record (an element of `result_content`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "skip_field")]
    pub date: Field<Date>,
    #[serde(rename = "mainTainDate", default, skip_serializing_if = "skip_field")]
    pub maintain_date: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub materal: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub remark: Field<Text>,
    #[serde(rename = "type", default, skip_serializing_if = "skip_field")]
    pub type_label: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub content: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub mileage: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub type_code: Field<Int>,
    #[serde(rename = "payType", default, skip_serializing_if = "skip_field")]
    pub pay_type: Field<Text>,
    #[serde(rename = "totalMoney", default, skip_serializing_if = "skip_field")]
    pub total_money: Field<Decimal>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `result_content` element: a record, or whatever else the vendor put in the array.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordSlot {
    Record(Box<Record>),
    NotARecord(Value),
}

struct RecordSlotVisitor;

impl<'de> Visitor<'de> for RecordSlotVisitor {
    type Value = RecordSlot;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a maintenance record")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Record::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(|r| RecordSlot::Record(Box::new(r)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(RecordSlot::NotARecord)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(RecordSlot::NotARecord(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(RecordSlot::NotARecord(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RecordSlot::NotARecord(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(RecordSlot::NotARecord(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RecordSlot::NotARecord(Value::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RecordSlot::NotARecord(Value::Null))
    }
}

impl<'de> Deserialize<'de> for RecordSlot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordSlotVisitor)
    }
}

impl Serialize for RecordSlot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RecordSlot::Record(r) => r.serialize(s),
            RecordSlot::NotARecord(v) => v.serialize(s),
        }
    }
}

/// `result_content`: the records in the vendor's order, or a wrong-shaped value kept verbatim.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Records {
    #[default]
    Absent,
    List(Vec<RecordSlot>),
    Malformed(Value),
}

impl Records {
    /// Records with their 0-based position in `result_content`; non-record entries are skipped
    /// but keep their position counted.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Record)> {
        let list: &[RecordSlot] = match self {
            Records::List(l) => l,
            _ => &[],
        };
        list.iter().enumerate().filter_map(|(i, s)| match s {
            RecordSlot::Record(r) => Some((i, r.as_ref())),
            RecordSlot::NotARecord(_) => None,
        })
    }

    fn is_absent(&self) -> bool {
        matches!(self, Records::Absent)
    }
}

struct RecordsVisitor;

impl<'de> Visitor<'de> for RecordsVisitor {
    type Value = Records;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of maintenance records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        while let Some(slot) = seq.next_element::<RecordSlot>()? {
            out.push(slot);
        }
        Ok(Records::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Records::Malformed)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Records::Malformed(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Records::Malformed(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Records::Malformed(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Records::Malformed(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Records::Malformed(Value::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Records::Malformed(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Deserialize<'de> for Records {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordsVisitor)
    }
}

impl Serialize for Records {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Records::Absent => s.serialize_unit(),
            Records::List(l) => l.serialize(s),
            Records::Malformed(v) => v.serialize(s),
        }
    }
}

/// One maintenance-history report (the vendor's REPORT object).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Overview parts in the vendor's order, keyed by part name.
    #[serde(default, skip_serializing_if = "Shaped::is_absent")]
    pub overview: Shaped<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub first_time_to_shop: Field<Date>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub last_time_to_shop: Field<Date>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub content_numbers: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub brand_pic: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub brand_name: Field<Text>,
    #[serde(rename = "vinNO", default, skip_serializing_if = "skip_field")]
    pub vin_no: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub avg_upkeep_year: Field<Float>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub avg_mileage_year: Field<Float>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub total_mileage: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub first_mileage: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub last_mileage: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub accident_grade: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub is_accident: Field<Int>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub is_accident_reason: Field<Text>,
    #[serde(default, skip_serializing_if = "skip_field")]
    pub updatetime: Field<Date>,
    #[serde(default, skip_serializing_if = "Records::is_absent")]
    pub result_content: Records,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An object key, borrowed from the input when it has no escapes (the usual case), so matching
/// keys allocates nothing.
pub(crate) struct Key<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `Deserialize` for a struct read key by key from a JSON object: each listed key into its
/// field (a later duplicate wins, as in `serde_json::Map`), and any other key handed to
/// `$unknown`, which sees the struct as `$out`, the key as `$key` and the map as `$map`. Fails
/// only on a value that is not an object. `$ty` may name `'de`, the input's lifetime.
///
/// Written out instead of `#[serde(flatten)]`, which buffers every object (a whole report, with
/// all its records) into an intermediate tree before converting it.
macro_rules! keyed_object {
    ($ty:ty, $what:literal, |$out:ident, $key:ident, $map:ident| $unknown:block,
     { $($name:literal => $field:ident),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<$ty, A::Error> {
                        let mut $out = <$ty>::default();
                        while let Some(Key($key)) = $map.next_key::<Key<'de>>()? {
                            match $key.as_ref() {
                                $($name => $out.$field = $map.next_value()?,)*
                                _ => $unknown,
                            }
                        }
                        Ok($out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

/// The wire names of an overview part's fields and the struct fields that hold them, for the
/// owned model and the export view alike: `overview_part_keys!(Type, "what", |out, key, map| {
/// unknown key })`.
macro_rules! overview_part_keys {
    ($($head:tt)*) => {
        keyed_object!($($head)*, {
            "is_exception" => is_exception,
            "label" => label,
            "exceptions" => exceptions,
        });
    };
}

/// The same for a maintenance record.
macro_rules! record_keys {
    ($($head:tt)*) => {
        keyed_object!($($head)*, {
            "date" => date,
            "mainTainDate" => maintain_date,
            "materal" => materal,
            "remark" => remark,
            "type" => type_label,
            "content" => content,
            "mileage" => mileage,
            "type_code" => type_code,
            "payType" => pay_type,
            "totalMoney" => total_money,
        });
    };
}

/// The same for a REPORT.
macro_rules! report_keys {
    ($($head:tt)*) => {
        keyed_object!($($head)*, {
            "overview" => overview,
            "first_time_to_shop" => first_time_to_shop,
            "last_time_to_shop" => last_time_to_shop,
            "content_numbers" => content_numbers,
            "brand_pic" => brand_pic,
            "brand_name" => brand_name,
            "vinNO" => vin_no,
            "avg_upkeep_year" => avg_upkeep_year,
            "avg_mileage_year" => avg_mileage_year,
            "total_mileage" => total_mileage,
            "first_mileage" => first_mileage,
            "last_mileage" => last_mileage,
            "accident_grade" => accident_grade,
            "is_accident" => is_accident,
            "is_accident_reason" => is_accident_reason,
            "updatetime" => updatetime,
            "result_content" => result_content,
        });
    };
}

overview_part_keys!(OverviewPart, "an overview part", |out, key, map| {
    let v: Value = map.next_value()?;
    out.extra.insert(key.into_owned(), v);
});

record_keys!(Record, "a maintenance record", |out, key, map| {
    let v: Value = map.next_value()?;
    out.extra.insert(key.into_owned(), v);
});

report_keys!(Report, "a REPORT object", |out, key, map| {
    let v: Value = map.next_value()?;
    out.extra.insert(key.into_owned(), v);
});

impl Report {
    /// The overview parts in the vendor's order. A part whose value is not an object still
    /// yields a row (with nothing known about it), so no part the vendor named is dropped.
    pub fn overview_parts(&self) -> Vec<(&str, OverviewPart)> {
        match &self.overview {
            Shaped::Ok(map) => map
                .iter()
                .map(|(k, v)| {
                    // Deserializing from `&Value` borrows it: no clone of the part.
                    let part = OverviewPart::deserialize(v).unwrap_or_default();
                    (k.as_str(), part)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A report is "empty" when it carries no field at all (`{}`), which generate uses to say
    /// "not inline".
    pub fn is_empty(&self) -> bool {
        *self == Report::default()
    }
}

/// Splits an overview finding at the first ASCII or full-width colon:
/// `"前保:油漆"` → (`"前保"`, `Some("油漆")`); no colon → (whole, `None`).
/// Empty sides become `None` for the finding and stay `""`-free for the component.
pub fn split_finding(raw: &str) -> (String, Option<String>) {
    match raw.find([':', '：']) {
        Some(i) => {
            let sep_len = raw[i..].chars().next().map(char::len_utf8).unwrap_or(1);
            let component = raw[..i].trim().to_owned();
            let finding = raw[i + sep_len..].trim();
            (component, (!finding.is_empty()).then(|| finding.to_owned()))
        }
        None => (raw.trim().to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rep(v: Value) -> Report {
        serde_json::from_value(v).expect("report parses")
    }

    #[test]
    fn scalars_accept_every_wire_shape() {
        for (v, want) in [
            (json!(9636), Some(9636)),
            (json!("9636"), Some(9636)),
            (json!(" 9636 "), Some(9636)),
            (json!("9636.6"), Some(9637)),
            (json!(""), None),
            (json!(null), None),
        ] {
            let r = rep(json!({ "total_mileage": v }));
            assert_eq!(r.total_mileage.get(), want, "{v}");
        }
        assert_eq!(rep(json!({})).total_mileage.get(), None);
        let bad = rep(json!({"total_mileage": "about 9k"}));
        assert!(bad.total_mileage.is_invalid());
        let obj = rep(json!({"total_mileage": {"a": 1}}));
        assert!(obj.total_mileage.is_invalid());
    }

    #[test]
    fn floats_dates_and_decimals() {
        let r = rep(json!({
            "avg_mileage_year": "2.5", "avg_upkeep_year": 3,
            "first_time_to_shop": "2015/12/13", "last_time_to_shop": "2016-05-25 10:11:12",
            "updatetime": "2022-01-05T00:00:00Z",
            "result_content": [{"totalMoney": "100.50", "date": "not a date"}, {"totalMoney": 99.9}]
        }));
        assert_eq!(r.avg_mileage_year.get(), Some(2.5));
        assert_eq!(r.avg_upkeep_year.get(), Some(3.0));
        assert_eq!(
            r.first_time_to_shop.get(),
            NaiveDate::from_ymd_opt(2015, 12, 13)
        );
        assert_eq!(
            r.last_time_to_shop.get(),
            NaiveDate::from_ymd_opt(2016, 5, 25)
        );
        assert_eq!(r.updatetime.get(), NaiveDate::from_ymd_opt(2022, 1, 5));
        let recs: Vec<_> = r.result_content.iter().collect();
        assert_eq!(recs[0].1.total_money.get().as_deref(), Some("100.50"));
        assert!(recs[0].1.date.is_invalid());
        assert_eq!(recs[1].1.total_money.get().as_deref(), Some("99.9"));
    }

    #[test]
    fn wrong_shapes_do_not_fail_the_report() {
        let r = rep(json!({
            "overview": "", "result_content": [1, {"mileage": "5"}, "x"], "brand_name": "大众"
        }));
        assert!(r.overview_parts().is_empty());
        let recs: Vec<_> = r
            .result_content
            .iter()
            .map(|(i, r)| (i, r.mileage.get()))
            .collect();
        assert_eq!(recs, vec![(1, Some(5))]);
        assert_eq!(r.brand_name.get().as_deref(), Some("大众"));
        let r = rep(json!({"result_content": null, "overview": {"engine": 3}}));
        assert_eq!(r.result_content.iter().count(), 0);
        assert_eq!(r.overview_parts().len(), 1);
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let v = json!({
            "overview": {"chassis": {"is_exception": "1", "label": "底盘", "exceptions": ["a：b"], "x": 1}},
            "brand_name": "大众", "content_numbers": "3", "first_mileage": 2197, "last_mileage": "",
            "remark_new": {"nested": [1, 2]},
            "result_content": [{"date": "2018-05-25", "mileage": 9636, "payType": null, "extra_field": "k"}]
        });
        let r = rep(v.clone());
        assert_eq!(serde_json::to_value(&r).expect("serializes"), v);
        assert_eq!(r.extra["remark_new"], json!({"nested": [1, 2]}));
        let parts = r.overview_parts();
        assert_eq!(parts[0].0, "chassis");
        assert_eq!(parts[0].1.is_exception.get(), Some(1));
        assert_eq!(parts[0].1.extra["x"], json!(1));
    }

    #[test]
    fn findings_split_at_first_colon_of_either_width() {
        assert_eq!(
            split_finding("前保:油漆"),
            ("前保".into(), Some("油漆".into()))
        );
        assert_eq!(
            split_finding("左前门：更换"),
            ("左前门".into(), Some("更换".into()))
        );
        assert_eq!(split_finding("a:b:c"), ("a".into(), Some("b:c".into())));
        assert_eq!(split_finding("保险杠拆卸"), ("保险杠拆卸".into(), None));
        assert_eq!(split_finding("前保:"), ("前保".into(), None));
    }
}
