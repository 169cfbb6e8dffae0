//! The reference REPORT model the export's borrowed view is held to.
//!
//! vmr reads reports through `vmr::api::view` (borrowed, unknown keys skipped unbuilt). This is
//! the plain way to read one: an owned tree that keeps every value and every unknown field in
//! `extra` maps, so a parse followed by a serialize loses nothing the vendor sent. It shares
//! only the scalar rules (`vmr::api::scalar`) with the view and spells the wire names on its
//! own, so the property tests in `export.rs` compare two independent readings of each body.

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;
use vmr::api::scalar::{Date, Decimal, Field, Float, Int, Kind, Text};

fn skip_field<K: Kind>(f: &Field<K>) -> bool {
    f.is_absent()
}

/// A value that must have a container shape (object or array) but may arrive as anything.
///
/// Anything else (`""`, `null`, a number) parses as `Malformed` with nothing inside, so one
/// odd field never makes the whole report unreadable.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Shaped<T> {
    #[default]
    Absent,
    Ok(T),
    /// Present but of the wrong shape; kept verbatim for the round trip.
    Malformed(Value),
}

impl<T> Shaped<T> {
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
pub(crate) struct OverviewPart {
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
    pub(crate) fn findings(&self) -> Vec<String> {
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
pub(crate) struct Record {
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
pub(crate) enum RecordSlot {
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
pub(crate) enum Records {
    #[default]
    Absent,
    List(Vec<RecordSlot>),
    Malformed(Value),
}

impl Records {
    /// Records with their 0-based position in `result_content`; non-record entries are skipped
    /// but keep their position counted.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Record)> {
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
pub(crate) struct Report {
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

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

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
/// field (a later duplicate wins, as in `serde_json::Map`), any other key into `extra`. Fails
/// only on a value that is not an object. (`#[serde(flatten)]` would fail on a duplicate key.)
macro_rules! keyed_object {
    ($ty:ty, $what:literal, { $($name:literal => $field:ident),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::default();
                        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                            match key.as_ref() {
                                $($name => out.$field = map.next_value()?,)*
                                _ => {
                                    let v: Value = map.next_value()?;
                                    out.extra.insert(key.into_owned(), v);
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

keyed_object!(OverviewPart, "an overview part", {
    "is_exception" => is_exception,
    "label" => label,
    "exceptions" => exceptions,
});

keyed_object!(Record, "a maintenance record", {
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

keyed_object!(Report, "a REPORT object", {
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

impl Report {
    /// The overview parts in the vendor's order. A part whose value is not an object still
    /// yields a row (with nothing known about it), so no part the vendor named is dropped.
    pub(crate) fn overview_parts(&self) -> Vec<(&str, OverviewPart)> {
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
}

/// The model's own checks, from when it was the library's.
mod tests {
    use super::*;
    use chrono::NaiveDate;
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
}
