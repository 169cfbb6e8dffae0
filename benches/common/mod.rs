//! Helpers shared by the benches.

use serde_json::{Map, Value, json};

/// The report with every numeric string made a number and every blank or null field dropped:
/// what a tidy vendor would send.
pub(crate) fn tidy(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !(v.is_null() || v.as_str().is_some_and(|s| s.is_empty())))
                .map(|(k, v)| (k, tidy(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(tidy).collect()),
        Value::String(s) => match (s.parse::<i64>(), s.parse::<f64>()) {
            (Ok(i), _) => json!(i),
            (_, Ok(f)) if f.is_finite() => json!(f),
            _ => Value::String(s),
        },
        other => other,
    }
}
