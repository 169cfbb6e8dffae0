//! The scalar rules: how one vendor scalar becomes a typed value.
//!
//! The vendor mixes types freely: any scalar may arrive as a JSON number, a numeric string, an
//! empty string, `null`, or not at all. A [`Kind`] says how each JSON shape converts to one
//! type (whole numbers, floats, text, dates, decimals); [`Lenient`] tells apart "missing" from
//! "present but unusable", so the export can count what it coerced to null. [`Field`] is an
//! owned lenient scalar (what the response envelope reads) and keeps the wire value it came
//! from, so a serialize writes back what was read. The export's borrowed view
//! ([`view::Scalar`](super::view::Scalar)) converts by the same kinds.

use chrono::NaiveDate;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// Whether the value was present but could not be converted.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Lenient::Invalid(_))
    }

    /// Whether the value was absent, `null`, or a blank string.
    pub fn is_missing(&self) -> bool {
        matches!(self, Lenient::Missing)
    }
}

/// How a kind of scalar is read from each JSON shape. Implemented by the marker types below.
pub trait Kind {
    /// The type a value of this kind converts to.
    type Out;
    /// Converts a JSON string (trimmed, never empty); `None` when this kind cannot take it.
    fn from_str(s: &str) -> Option<Self::Out>;
    /// Converts a JSON whole number; `None` when this kind cannot take it.
    fn from_i64(v: i64) -> Option<Self::Out>;
    /// Converts a JSON number with a fraction (or one too large for `i64`); `None` when this kind
    /// cannot take it.
    fn from_f64(v: f64) -> Option<Self::Out>;
    /// Converts a JSON boolean; by default no kind takes one.
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
pub(crate) trait TextKind: Kind<Out = String> {
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

/// The year, month and day of `YYYY-MM-DD` or `YYYY/MM/DD` (exactly ten bytes, digits where
/// digits go), not yet checked as a date.
pub(crate) fn ymd_digits(b: &[u8]) -> Option<(i32, u32, u32)> {
    if b.len() != 10 || !(b[4] == b'-' || b[4] == b'/') || b[7] != b[4] {
        return None;
    }
    let num = |r: &[u8]| {
        r.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    Some((num(&b[0..4])? as i32, num(&b[5..7])?, num(&b[8..10])?))
}

/// Parses the date forms the vendor uses; a date-time contributes its date part.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    // The date part is everything before a 'T' or a space, whichever comes first.
    let date_part = s.split(['T', ' ']).next().unwrap_or(s);
    // The usual shape, `YYYY-MM-DD` or `YYYY/MM/DD`, read directly: chrono's format parser is a
    // visible share of export time. Anything else takes chrono's path.
    if let Some((y, m, d)) = ymd_digits(date_part.as_bytes()) {
        return NaiveDate::from_ymd_opt(y, m, d);
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
    /// The value as this kind reads it.
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
    /// The typed value, or `None` when missing or invalid.
    pub fn get(&self) -> Option<K::Out> {
        self.value.get()
    }
}

impl<K: Kind> Field<K> {
    /// Whether the value was present but could not be converted.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field<K: Kind>(v: Value) -> Field<K> {
        serde_json::from_value(v).expect("any scalar parses")
    }

    #[test]
    fn whole_numbers_from_every_wire_shape() {
        for (v, want) in [
            (json!(9636), Some(9636)),
            (json!("9636"), Some(9636)),
            (json!(" 9636 "), Some(9636)),
            (json!("9636.6"), Some(9637)),
            (json!(-2.5), Some(-3)),
            (json!(""), None),
            (json!(null), None),
        ] {
            assert_eq!(field::<Int>(v.clone()).get(), want, "{v}");
        }
        assert!(field::<Int>(json!("about 9k")).is_invalid());
        assert!(field::<Int>(json!({"a": 1})).is_invalid());
        assert!(field::<Int>(json!([1])).is_invalid());
        assert!(field::<Int>(json!(true)).is_invalid());
        assert!(field::<Int>(json!(1e300)).is_invalid());
    }

    #[test]
    fn floats_dates_decimals_and_text() {
        assert_eq!(field::<Float>(json!("2.5")).get(), Some(2.5));
        assert_eq!(field::<Float>(json!(3)).get(), Some(3.0));
        assert!(field::<Float>(json!("inf")).is_invalid());
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(field::<Date>(json!("2015/12/13")).get(), date(2015, 12, 13));
        assert_eq!(
            field::<Date>(json!("2016-05-25 10:11:12")).get(),
            date(2016, 5, 25)
        );
        assert_eq!(
            field::<Date>(json!("2022-01-05T00:00:00Z")).get(),
            date(2022, 1, 5)
        );
        assert_eq!(field::<Date>(json!("2022-1-5")).get(), date(2022, 1, 5));
        assert!(field::<Date>(json!("not a date")).is_invalid());
        assert!(field::<Date>(json!(20220105)).is_invalid());
        assert_eq!(
            field::<Decimal>(json!(" 100.50 ")).get().as_deref(),
            Some("100.50")
        );
        assert_eq!(field::<Decimal>(json!(99.9)).get().as_deref(), Some("99.9"));
        assert!(field::<Decimal>(json!("1,5")).is_invalid());
        assert_eq!(field::<Text>(json!(3)).get().as_deref(), Some("3"));
        assert_eq!(field::<Text>(json!(true)).get().as_deref(), Some("true"));
        assert_eq!(
            field::<Text>(json!(" 大众 ")).get().as_deref(),
            Some("大众")
        );
        assert!(Text::accepts("x") && Decimal::accepts("-1e3") && !Decimal::accepts("NaN"));
    }

    #[test]
    fn a_field_writes_back_what_was_read() {
        for v in [
            json!("3"),
            json!(3),
            json!(""),
            json!(2.5),
            json!(false),
            json!({"a": [1]}),
        ] {
            let f = field::<Int>(v.clone());
            assert_eq!(serde_json::to_value(&f).expect("serializes"), v);
            assert!(!f.is_absent());
        }
        let null = field::<Int>(json!(null));
        assert!(!null.is_absent() && null.value.is_missing());
        assert!(Field::<Int>::default().is_absent());
    }
}
