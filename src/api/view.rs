//! A read-only view of a REPORT, borrowed from the stored body: what export reads.
//!
//! [`model::Report`](super::model::Report) owns every value and keeps every unknown field so a
//! report round-trips; that costs two allocations per text field and a tree for every unknown
//! key. Export reads each report bought once and keeps nothing, so it parses into this view
//! instead: text stays a slice of the body (unless the vendor escaped it), unknown keys are
//! skipped without being built, and each scalar keeps only its JSON shape, converted on demand
//! by the same rules as the model ([`Kind`]). The tests below hold the two to the same answers.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::value::SeqAccessDeserializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

use super::model::{Date, Decimal, Float, Int, Key, Kind, Text};

/// One scalar as sent: its JSON shape, text borrowed from the body where it can be.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Scalar<'a> {
    /// The key was absent.
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    /// An array or an object where a scalar belongs.
    Container,
}

/// A scalar converted to a column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Conv<T> {
    /// Absent, `null`, or a blank string.
    Missing,
    Value(T),
    /// Present but not convertible (counted as coerced to null).
    Invalid,
}

impl<T> Conv<T> {
    pub fn value(self) -> Option<T> {
        match self {
            Conv::Value(v) => Some(v),
            _ => None,
        }
    }
}

fn conv<T>(v: Option<T>) -> Conv<T> {
    v.map_or(Conv::Invalid, Conv::Value)
}

impl<'a> Scalar<'a> {
    /// Converts by `K`'s rules, exactly as [`model::Field`](super::model::Field) does.
    pub fn to<K: Kind>(&self) -> Conv<K::Out> {
        match self {
            Scalar::Absent | Scalar::Null => Conv::Missing,
            Scalar::Str(s) => {
                let t = s.trim();
                if t.is_empty() {
                    Conv::Missing
                } else {
                    conv(K::from_str(t))
                }
            }
            Scalar::I64(v) => conv(K::from_i64(*v)),
            Scalar::U64(v) => conv(match i64::try_from(*v) {
                Ok(i) => K::from_i64(i),
                Err(_) => K::from_f64(*v as f64),
            }),
            Scalar::F64(v) => conv(K::from_f64(*v)),
            Scalar::Bool(v) => conv(K::from_bool(*v)),
            Scalar::Container => Conv::Invalid,
        }
    }

    pub fn int(&self) -> Conv<i64> {
        self.to::<Int>()
    }

    pub fn float(&self) -> Conv<f64> {
        self.to::<Float>()
    }

    pub fn date(&self) -> Conv<chrono::NaiveDate> {
        self.to::<Date>()
    }

    /// Text by [`Text`]'s rules (trimmed; numbers and booleans as their JSON text), borrowed
    /// from the body when it was a string.
    pub fn text(&self) -> Conv<Cow<'_, str>> {
        match self {
            Scalar::Str(s) => {
                let t = s.trim();
                if t.is_empty() {
                    Conv::Missing
                } else {
                    Conv::Value(Cow::Borrowed(t))
                }
            }
            other => match other.to::<Text>() {
                Conv::Value(s) => Conv::Value(Cow::Owned(s)),
                Conv::Missing => Conv::Missing,
                Conv::Invalid => Conv::Invalid,
            },
        }
    }

    /// A decimal amount's digits by [`Decimal`]'s rules, borrowed when it was a string.
    pub fn decimal(&self) -> Conv<Cow<'_, str>> {
        match self {
            Scalar::Str(s) => {
                let t = s.trim();
                if t.is_empty() {
                    Conv::Missing
                } else if Decimal::from_str(t).is_some() {
                    Conv::Value(Cow::Borrowed(t))
                } else {
                    Conv::Invalid
                }
            }
            other => match other.to::<Decimal>() {
                Conv::Value(s) => Conv::Value(Cow::Owned(s)),
                Conv::Missing => Conv::Missing,
                Conv::Invalid => Conv::Invalid,
            },
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Container)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Container)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// What a container-shaped field (`overview`, `result_content`, `exceptions`) held, when it was
/// not the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotThere {
    /// Absent, `null`, or a blank string: nothing to read, nothing wrong.
    #[default]
    Empty,
    /// Some other value: the container is unusable (counted).
    Malformed,
}

/// Reads a value that is not the expected container: `Empty` for null and blank strings,
/// `Malformed` for anything else (consumed without being built).
struct NotThereVisitor;

impl<'de> Visitor<'de> for NotThereVisitor {
    type Value = NotThere;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<NotThere, E> {
        Ok(NotThere::Malformed)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<NotThere, E> {
        Ok(NotThere::Malformed)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<NotThere, E> {
        Ok(NotThere::Malformed)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<NotThere, E> {
        Ok(NotThere::Malformed)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NotThere, E> {
        Ok(if v.trim().is_empty() {
            NotThere::Empty
        } else {
            NotThere::Malformed
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<NotThere, E> {
        Ok(NotThere::Empty)
    }
    fn visit_none<E: de::Error>(self) -> Result<NotThere, E> {
        Ok(NotThere::Empty)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NotThere, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NotThere, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(NotThere::Malformed)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NotThere, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(NotThere::Malformed)
    }
}

/// A container field: the container, or what stood in its place.
#[derive(Debug, Clone, PartialEq)]
pub enum Held<T> {
    Is(T),
    Not(NotThere),
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held::Not(NotThere::Empty)
    }
}

/// One element of an overview part's `exceptions` list.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding<'a> {
    /// `null` or a blank string: no finding, but it keeps its position.
    Blank,
    /// A string, untrimmed.
    Str(Cow<'a, str>),
    /// Any other value, as its JSON text.
    Other(String),
}

impl<'de> Deserialize<'de> for Finding<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Finding<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finding")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Finding<'de>, E> {
                Ok(if v.trim().is_empty() {
                    Finding::Blank
                } else {
                    Finding::Str(Cow::Borrowed(v))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Finding<'de>, E> {
                Ok(if v.trim().is_empty() {
                    Finding::Blank
                } else {
                    Finding::Str(Cow::Owned(v.to_owned()))
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Finding<'de>, E> {
                Ok(Finding::Blank)
            }
            fn visit_none<E: de::Error>(self) -> Result<Finding<'de>, E> {
                Ok(Finding::Blank)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Finding<'de>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Finding<'de>, E> {
                Ok(Finding::Other(Value::Bool(v).to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Finding<'de>, E> {
                Ok(Finding::Other(Value::from(v).to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Finding<'de>, E> {
                Ok(Finding::Other(Value::from(v).to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Finding<'de>, E> {
                Ok(Finding::Other(Value::from(v).to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Finding<'de>, A::Error> {
                let v = Value::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Finding::Other(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Finding<'de>, A::Error> {
                let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Finding::Other(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A container visitor: the `seq` and `map` functions read an array and an object; any other
/// value becomes [`NotThere`].
macro_rules! held_visitor {
    ($name:ident, $out:ty, $what:literal, seq => $seq:path, map => $map:path) => {
        struct $name;
        impl<'de> Visitor<'de> for $name {
            type Value = Held<$out>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($what)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                $seq(seq)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                $map(map)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                NotThereVisitor.visit_bool(v).map(Held::Not)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                NotThereVisitor.visit_i64(v).map(Held::Not)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                NotThereVisitor.visit_u64(v).map(Held::Not)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                NotThereVisitor.visit_f64(v).map(Held::Not)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                NotThereVisitor.visit_str(v).map(Held::Not)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Held::Not(NotThere::Empty))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Held::Not(NotThere::Empty))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// An object where an array belongs: consumed unbuilt, unusable.
fn malformed_map<'de, T, A: MapAccess<'de>>(mut map: A) -> Result<Held<T>, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(Held::Not(NotThere::Malformed))
}

/// An array where an object belongs: consumed unbuilt, unusable.
fn malformed_seq<'de, T, A: SeqAccess<'de>>(mut seq: A) -> Result<Held<T>, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(Held::Not(NotThere::Malformed))
}

/// An array, element by element.
fn list<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Held<Vec<T>>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(8));
    while let Some(x) = seq.next_element::<T>()? {
        out.push(x);
    }
    Ok(Held::Is(out))
}

/// Overview parts by name, in the vendor's order.
pub type Parts<'a> = Vec<(Cow<'a, str>, PartSlot<'a>)>;

/// The overview's parts; a key sent twice keeps its first position and its last value.
fn parts<'de, A: MapAccess<'de>>(mut map: A) -> Result<Held<Parts<'de>>, A::Error> {
    let mut parts: Parts<'de> = Vec::with_capacity(8);
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let part: PartSlot<'de> = map.next_value()?;
        match parts.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = part,
            None => parts.push((key, part)),
        }
    }
    Ok(Held::Is(parts))
}

/// A list of findings (`exceptions`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Findings<'a>(pub Held<Vec<Finding<'a>>>);

held_visitor!(FindingsVisitor, Vec<Finding<'de>>, "a list of findings",
    seq => list, map => malformed_map);

impl<'de> Deserialize<'de> for Findings<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FindingsVisitor).map(Findings)
    }
}

/// A `result_content` element.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot<'a> {
    Record(Box<RecordView<'a>>),
    /// Anything but an object.
    NotARecord,
}

impl<'de> Deserialize<'de> for Slot<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RecordOrNot::deserialize(d)? {
            RecordOrNot(Some(r)) => Ok(Slot::Record(Box::new(r))),
            RecordOrNot(None) => Ok(Slot::NotARecord),
        }
    }
}

struct RecordOrNot<'a>(Option<RecordView<'a>>);

impl<'de> Deserialize<'de> for RecordOrNot<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RecordOrNot<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a maintenance record")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RecordView::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|r| RecordOrNot(Some(r)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RecordOrNot(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RecordOrNot(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
        d.deserialize_any(V)
    }
}

/// `result_content`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordsView<'a>(pub Held<Vec<Slot<'a>>>);

held_visitor!(RecordsVisitor, Vec<Slot<'de>>, "an array of maintenance records",
    seq => list, map => malformed_map);

impl<'de> Deserialize<'de> for RecordsView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordsVisitor).map(RecordsView)
    }
}

/// One part of the overview, as its value stood.
#[derive(Debug, Clone, PartialEq)]
pub enum PartSlot<'a> {
    Null,
    /// A value that is not an object.
    NotAPart,
    Part(PartView<'a>),
}

impl<'de> Deserialize<'de> for PartSlot<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PartSlot<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an overview part")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                PartView::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(PartSlot::Part)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(PartSlot::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(PartSlot::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PartSlot::NotAPart)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(PartSlot::NotAPart)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(PartSlot::NotAPart)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(PartSlot::NotAPart)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(PartSlot::NotAPart)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(PartSlot::NotAPart)
            }
        }
        d.deserialize_any(V)
    }
}

/// `overview`: its parts in the vendor's order. A key sent twice keeps its first position and
/// its last value, as in the model's `serde_json::Map`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OverviewView<'a>(pub Held<Parts<'a>>);

held_visitor!(OverviewVisitor, Parts<'de>, "the overview object",
    seq => malformed_seq, map => parts);

impl<'de> Deserialize<'de> for OverviewView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OverviewVisitor).map(OverviewView)
    }
}

/// `Deserialize` for a view struct: the named keys into their fields (a later duplicate wins),
/// every other key skipped unbuilt. Fails only on a value that is not an object.
macro_rules! view_object {
    ($ty:ident, $what:literal, { $($key:literal => $field:ident),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty<'de>, A::Error> {
                        let mut out = $ty::default();
                        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                            match key.as_ref() {
                                $($key => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
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

/// An overview part.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PartView<'a> {
    pub is_exception: Scalar<'a>,
    pub label: Scalar<'a>,
    pub exceptions: Findings<'a>,
}

view_object!(PartView, "an overview part", {
    "is_exception" => is_exception,
    "label" => label,
    "exceptions" => exceptions,
});

/// A maintenance record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordView<'a> {
    pub date: Scalar<'a>,
    pub maintain_date: Scalar<'a>,
    pub materal: Scalar<'a>,
    pub remark: Scalar<'a>,
    pub type_label: Scalar<'a>,
    pub content: Scalar<'a>,
    pub mileage: Scalar<'a>,
    pub type_code: Scalar<'a>,
    pub pay_type: Scalar<'a>,
    pub total_money: Scalar<'a>,
}

view_object!(RecordView, "a maintenance record", {
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

/// A REPORT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportView<'a> {
    pub overview: OverviewView<'a>,
    pub first_time_to_shop: Scalar<'a>,
    pub last_time_to_shop: Scalar<'a>,
    pub content_numbers: Scalar<'a>,
    pub brand_pic: Scalar<'a>,
    pub brand_name: Scalar<'a>,
    pub vin_no: Scalar<'a>,
    pub avg_upkeep_year: Scalar<'a>,
    pub avg_mileage_year: Scalar<'a>,
    pub total_mileage: Scalar<'a>,
    pub first_mileage: Scalar<'a>,
    pub last_mileage: Scalar<'a>,
    pub accident_grade: Scalar<'a>,
    pub is_accident: Scalar<'a>,
    pub is_accident_reason: Scalar<'a>,
    pub updatetime: Scalar<'a>,
    pub result_content: RecordsView<'a>,
}

view_object!(ReportView, "a REPORT object", {
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
