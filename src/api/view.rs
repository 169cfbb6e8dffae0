//! A read-only view of a REPORT, borrowed from the stored body: what export reads.
//!
//! Export reads each report bought once and keeps nothing, so it parses into this view: text
//! stays a slice of the body (unless the vendor escaped it), unknown keys are skipped without
//! being built, and each scalar keeps only its JSON shape, converted on demand by the scalar
//! rules ([`Kind`]). Proptests in `tests/it/export.rs` hold the view to an owned reference model
//! (`tests/it/export/reference_model.rs`) on any body.

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use super::scalar::{Date, Decimal, Float, Int, Kind, Text, TextKind};

/// One scalar as sent: its JSON shape, text borrowed from the body where it can be.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Scalar<'a> {
    /// The key was absent.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A string, untrimmed; borrowed unless the vendor escaped it.
    Str(Cow<'a, str>),
    /// A whole number the parser read as signed (serde_json: a negative one).
    I64(i64),
    /// A whole number the parser read as unsigned (serde_json: zero or more).
    U64(u64),
    /// A number read as floating point (a fraction, an exponent, or too large for `u64`).
    F64(f64),
    /// `true` or `false`.
    Bool(bool),
    /// An array or an object where a scalar belongs.
    Container,
}

/// A scalar converted to a column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Conv<T> {
    /// Absent, `null`, or a blank string.
    Missing,
    /// A usable value.
    Value(T),
    /// Present but not convertible (counted as coerced to null).
    Invalid,
}

impl<T> Conv<T> {
    /// The converted value, or `None` when missing or invalid.
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
    /// Converts by `K`'s rules, exactly as [`scalar::Field`](super::scalar::Field) does.
    pub fn to<K: Kind>(&self) -> Conv<K::Out> {
        match self {
            Scalar::Absent | Scalar::Null => Conv::Missing,
            Scalar::Str(s) => {
                let t = trim(s);
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

    pub(crate) fn int(&self) -> Conv<i64> {
        self.to::<Int>()
    }

    pub(crate) fn float(&self) -> Conv<f64> {
        self.to::<Float>()
    }

    pub(crate) fn date(&self) -> Conv<chrono::NaiveDate> {
        self.to::<Date>()
    }

    /// Text by [`Text`]'s rules (trimmed; numbers and booleans as their JSON text), borrowed
    /// from the body when it was a string.
    pub fn text(&self) -> Conv<Cow<'_, str>> {
        self.text_kind::<Text>()
    }

    /// A decimal amount's digits by [`Decimal`]'s rules, borrowed when it was a string.
    pub fn decimal(&self) -> Conv<Cow<'_, str>> {
        self.text_kind::<Decimal>()
    }

    /// A string-valued kind: a string is checked in place and borrowed, anything else is
    /// converted by the kind's rules.
    fn text_kind<K: TextKind>(&self) -> Conv<Cow<'_, str>> {
        match self {
            Scalar::Str(s) => {
                let t = trim(s);
                if t.is_empty() {
                    Conv::Missing
                } else if K::accepts(t) {
                    Conv::Value(Cow::Borrowed(t))
                } else {
                    Conv::Invalid
                }
            }
            other => match other.to::<K>() {
                Conv::Value(s) => Conv::Value(Cow::Owned(s)),
                Conv::Missing => Conv::Missing,
                Conv::Invalid => Conv::Invalid,
            },
        }
    }
}

/// `s` without leading and trailing white space, as `str::trim` has it. Most values start and
/// end with a character that cannot be white space (printable ASCII, or a Chinese character):
/// those are returned as they are without the Unicode-aware scan (a visible share of export
/// time).
pub(crate) fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    // The first byte of the last character: at most three continuation bytes back.
    let last = b
        .iter()
        .rev()
        .take(4)
        .find(|&&c| !(0x80..=0xBF).contains(&c));
    if b.first().is_some_and(never_space) && last.is_some_and(never_space) {
        s
    } else {
        s.trim()
    }
}

/// Whether a character starting with byte `b` can never be white space. Every white-space
/// character is ASCII (below `!`) or starts with 0xC2 (U+0085, U+00A0), 0xE1 (U+1680), 0xE2
/// (U+2000–U+205F) or 0xE3 (U+3000); printable ASCII and the lead bytes 0xC3–0xDF, 0xE4–0xEF
/// and 0xF0–0xF4 start none.
fn never_space(b: &u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xC3..=0xDF | 0xE4..=0xEF | 0xF0..=0xF4)
}

/// A JSON value read by its shape: scalars as they are, an array through `S` and an object
/// through `M` (`IgnoredAny` skips either unbuilt). Every type of the view is read through it.
enum Shape<'a, S, M> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Array(S),
    Object(M),
}

impl<S, M> Shape<'_, S, M> {
    /// What a value that is not the expected container stands for: nothing for `null` and
    /// blank strings, an unusable value for anything else.
    fn not_there(&self) -> NotThere {
        match self {
            Shape::Null => NotThere::Empty,
            Shape::Str(s) if trim(s).is_empty() => NotThere::Empty,
            _ => NotThere::Malformed,
        }
    }
}

struct ShapeVisitor<S, M>(PhantomData<(S, M)>);

impl<'de, S: Deserialize<'de>, M: Deserialize<'de>> Visitor<'de> for ShapeVisitor<S, M> {
    type Value = Shape<'de, S, M>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Shape::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Shape::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Shape::U64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Shape::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Shape::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Shape::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        S::deserialize(SeqAccessDeserializer::new(seq)).map(Shape::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        M::deserialize(MapAccessDeserializer::new(map)).map(Shape::Object)
    }
}

impl<'de, S: Deserialize<'de>, M: Deserialize<'de>> Deserialize<'de> for Shape<'de, S, M> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    // Inlined into each field's read, with `Shape`'s and `Key`'s: the compiler's own choice
    // varies from build to build, and outlined they cost the parse 9 % more instructions
    // (callgrind, the same export of 10,000 reports).
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Shape::<IgnoredAny, IgnoredAny>::deserialize(d)? {
            Shape::Null => Scalar::Null,
            Shape::Bool(v) => Scalar::Bool(v),
            Shape::I64(v) => Scalar::I64(v),
            Shape::U64(v) => Scalar::U64(v),
            Shape::F64(v) => Scalar::F64(v),
            Shape::Str(s) => Scalar::Str(s),
            Shape::Array(_) | Shape::Object(_) => Scalar::Container,
        })
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

/// A container field: the container, or what stood in its place.
#[derive(Debug, Clone, PartialEq)]
pub enum Held<T> {
    /// The container, read.
    Is(T),
    /// No container: what stood in its place.
    Not(NotThere),
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held::Not(NotThere::Empty)
    }
}

/// Reads a field that should be an array of `T`.
fn held_array<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Held<Vec<T>>, D::Error> {
    Ok(match Shape::<Vec<T>, IgnoredAny>::deserialize(d)? {
        Shape::Array(list) => Held::Is(list),
        other => Held::Not(other.not_there()),
    })
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
        Ok(match Shape::<Value, Value>::deserialize(d)? {
            Shape::Null => Finding::Blank,
            Shape::Str(s) if trim(&s).is_empty() => Finding::Blank,
            Shape::Str(s) => Finding::Str(s),
            Shape::Bool(v) => Finding::Other(Value::Bool(v).to_string()),
            Shape::I64(v) => Finding::Other(Value::from(v).to_string()),
            Shape::U64(v) => Finding::Other(Value::from(v).to_string()),
            Shape::F64(v) => Finding::Other(Value::from(v).to_string()),
            Shape::Array(v) | Shape::Object(v) => Finding::Other(v.to_string()),
        })
    }
}

/// A list of findings (`exceptions`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Findings<'a>(pub Held<Vec<Finding<'a>>>);

impl<'de> Deserialize<'de> for Findings<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        held_array(d).map(Findings)
    }
}

/// A `result_content` element.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every slot is a record: boxing them cost an allocation per record"
)]
pub enum Slot<'a> {
    /// An object, read as a maintenance record.
    Record(RecordView<'a>),
    /// Anything but an object.
    NotARecord,
}

impl<'de> Deserialize<'de> for Slot<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut slot = Slot::NotARecord;
        SlotInPlace(&mut slot).deserialize(d)?;
        Ok(slot)
    }
}

/// `result_content`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordsView<'a>(pub Held<Vec<Slot<'a>>>);

impl<'de> Deserialize<'de> for RecordsView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RecordsView(
            match Shape::<Slots<'de>, IgnoredAny>::deserialize(d)? {
                Shape::Array(slots) => Held::Is(slots.0),
                other => Held::Not(other.not_there()),
            },
        ))
    }
}

/// The elements of `result_content`, each read where it stands in the list: a record holds
/// ten scalars, and building each one aside and moving it into the list (as a `Vec<Slot>`
/// deserialize does, several moves per element) was a tenth of export's time.
struct Slots<'a>(Vec<Slot<'a>>);

impl<'de> Deserialize<'de> for Slots<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Slots<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of maintenance records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Room for twice the usual count (sixteen): growing the list copies every record
                // in it, which showed in profiles as often as not.
                let mut list = Vec::with_capacity(32);
                loop {
                    list.push(Slot::Record(RecordView::default()));
                    let Some(place) = list.last_mut() else {
                        return Ok(Slots(list));
                    };
                    if seq.next_element_seed(SlotInPlace(place))?.is_none() {
                        list.pop();
                        return Ok(Slots(list));
                    }
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// Reads one `result_content` element into the slot it goes to: an object as a record (into
/// the record already there), anything else as not a record. [`Slot`]'s `Deserialize` is this
/// rule too.
struct SlotInPlace<'p, 'de>(&'p mut Slot<'de>);

impl SlotInPlace<'_, '_> {
    fn not_a_record<E>(self) -> Result<(), E> {
        *self.0 = Slot::NotARecord;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for SlotInPlace<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotInPlace<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        match self.0 {
            Slot::Record(r) => r.fill(map),
            other => {
                let mut r = RecordView::default();
                r.fill(map)?;
                *other = Slot::Record(r);
                Ok(())
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_a_record()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.not_a_record()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// One part of the overview, as its value stood.
#[derive(Debug, Clone, PartialEq)]
pub enum PartSlot<'a> {
    /// `null`.
    Null,
    /// A value that is not an object.
    NotAPart,
    /// An object, read as an overview part.
    Part(PartView<'a>),
}

impl<'de> Deserialize<'de> for PartSlot<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Shape::<IgnoredAny, PartView<'de>>::deserialize(d)? {
            Shape::Null => PartSlot::Null,
            Shape::Object(p) => PartSlot::Part(p),
            _ => PartSlot::NotAPart,
        })
    }
}

/// Overview parts by name, in the vendor's order.
pub(crate) type Parts<'a> = Vec<(Cow<'a, str>, PartSlot<'a>)>;

/// The overview object's parts; a key sent twice keeps its first position and its last value,
/// as in a `serde_json::Map`.
struct PartsMap<'a>(Parts<'a>);

impl<'de> Deserialize<'de> for PartsMap<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PartsMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the overview object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut parts: Parts<'de> = Vec::with_capacity(8);
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let part: PartSlot<'de> = map.next_value()?;
                    match parts.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = part,
                        None => parts.push((key, part)),
                    }
                }
                Ok(PartsMap(parts))
            }
        }
        d.deserialize_map(V)
    }
}

/// `overview`: its parts in the vendor's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OverviewView<'a>(pub Held<Parts<'a>>);

impl<'de> Deserialize<'de> for OverviewView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OverviewView(
            match Shape::<IgnoredAny, PartsMap<'de>>::deserialize(d)? {
                Shape::Object(parts) => Held::Is(parts.0),
                other => Held::Not(other.not_there()),
            },
        ))
    }
}

/// An object key, borrowed from the input when it has no escapes (the usual case), so matching
/// keys allocates nothing.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A view struct and its `Deserialize`, from one list of `field: Type = "wireName"`: each
/// listed key is read into its field (a later duplicate wins, as in `serde_json::Map`), any
/// other key is skipped unbuilt, and only a value that is not an object fails.
///
/// Written out instead of `#[serde(flatten)]`-style derives, which buffer every object (a whole
/// report, with all its records) into an intermediate tree before converting it.
macro_rules! view_object {
    ($(#[$doc:meta])* $name:ident, $what:literal {
        $($field:ident: $fty:ident = $wire:literal),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name<'a> {
            $(
                #[doc = concat!("The value under the `", $wire, "` key.")]
                pub $field: $fty<'a>,
            )*
        }

        impl<'de> Deserialize<'de> for $name<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                        let mut out = $name::default();
                        out.fill(map)?;
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }

        impl<'de> $name<'de> {
            /// Reads an object's keys into `self`, field by field where it stands.
            fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match key.as_ref() {
                        $($wire => self.$field = map.next_value()?,)*
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(())
            }
        }
    };
}

view_object!(
    /// An overview part.
    PartView, "an overview part" {
        is_exception: Scalar = "is_exception",
        label: Scalar = "label",
        exceptions: Findings = "exceptions",
    }
);

view_object!(
    /// A maintenance record (an element of `result_content`).
    RecordView, "a maintenance record" {
        date: Scalar = "date",
        maintain_date: Scalar = "mainTainDate",
        materal: Scalar = "materal",
        remark: Scalar = "remark",
        type_label: Scalar = "type",
        content: Scalar = "content",
        mileage: Scalar = "mileage",
        type_code: Scalar = "type_code",
        pay_type: Scalar = "payType",
        total_money: Scalar = "totalMoney",
    }
);

view_object!(
    /// A REPORT.
    ReportView, "a REPORT object" {
        overview: OverviewView = "overview",
        first_time_to_shop: Scalar = "first_time_to_shop",
        last_time_to_shop: Scalar = "last_time_to_shop",
        content_numbers: Scalar = "content_numbers",
        brand_pic: Scalar = "brand_pic",
        brand_name: Scalar = "brand_name",
        vin_no: Scalar = "vinNO",
        avg_upkeep_year: Scalar = "avg_upkeep_year",
        avg_mileage_year: Scalar = "avg_mileage_year",
        total_mileage: Scalar = "total_mileage",
        first_mileage: Scalar = "first_mileage",
        last_mileage: Scalar = "last_mileage",
        accident_grade: Scalar = "accident_grade",
        is_accident: Scalar = "is_accident",
        is_accident_reason: Scalar = "is_accident_reason",
        updatetime: Scalar = "updatetime",
        result_content: RecordsView = "result_content",
    }
);

#[cfg(test)]
mod tests {
    use super::trim;

    #[test]
    fn trim_is_str_trim() {
        for s in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{3000}车\u{3000}",
            "车",
            "a\u{a0}",
            "\u{85}x",
            "\t1 ",
            "~",
            "!x!",
            "\u{7f}",
            "x\u{2029}",
            "\u{3000}",
            "车\u{3000}",
            "\u{3000}车",
            "车 ",
            "车\u{a0}",
            "\u{a0}车",
            "\u{1680}x",
            "x\u{202f}",
            "x\u{205f}",
            "é",
            " é ",
            "😀",
            "😀 ",
            "\u{fffd}",
            "x\u{feff}",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn no_white_space_starts_with_a_never_space_byte() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let lead = c.encode_utf8(&mut buf).as_bytes()[0];
            if super::never_space(&lead) {
                assert!(!c.is_whitespace(), "{c:?}");
            }
        }
    }
}
