//! Reading a body that is a complete JSON document but not strict JSON.
//!
//! Real gateways hand back billed answers that serde refuses: a raw line break or tab inside a
//! string (a remark typed in a workshop system), or a field in GBK bytes instead of UTF-8. Such a
//! body is usually the same every time it is asked for, so refusing it means paying for it again
//! and again (docs/design.md, "Money rules"). [`repair`] turns such a body into strict JSON:
//! bytes that are not UTF-8 become U+FFFD, and control characters inside strings become their
//! escapes. It repairs only a complete document (balanced, ending where the body ends): a body
//! cut short stays unreadable, because what is missing cannot be known. The engine, export, the
//! lake export and audit (through export) all read stored bodies through this one function, so
//! a body is read the same way everywhere; the checkpoint keeps the raw bytes as they came.

use serde::de::IgnoredAny;
use std::borrow::Cow;
use std::fmt::Write as _;

/// A body made strict, and what was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The body as strict JSON.
    pub text: String,
    /// Control characters inside strings that were escaped.
    pub control_chars: usize,
    /// Whether bytes that are not UTF-8 were replaced by U+FFFD.
    pub invalid_utf8: bool,
}

impl Repaired {
    /// What was repaired, in words (for the VIN's message and the export manifest).
    pub fn note(&self) -> String {
        let mut parts = Vec::new();
        if self.control_chars > 0 {
            parts.push(format!(
                "{} raw control character{} inside strings escaped",
                self.control_chars,
                if self.control_chars == 1 { "" } else { "s" }
            ));
        }
        if self.invalid_utf8 {
            parts.push("bytes that are not UTF-8 read as U+FFFD (the raw bytes are kept)".into());
        }
        format!("read leniently: {}", parts.join("; "))
    }
}

/// The body as strict JSON when it is a complete JSON document whose only faults are raw
/// control characters inside strings or bytes that are not UTF-8; `None` when it needs no
/// repair (it is strict already) or cannot be repaired (cut short, not JSON at all).
pub fn repair(body: &[u8]) -> Option<Repaired> {
    let (out, control_chars, invalid_utf8) = escape(body);
    if control_chars == 0 && !invalid_utf8 {
        return None;
    }
    // Complete documents only: one value, and nothing after it but whitespace.
    serde_json::from_str::<IgnoredAny>(&out).ok()?;
    Some(Repaired {
        text: out,
        control_chars,
        invalid_utf8,
    })
}

/// Whether `body` is the start of a JSON document that ends too soon: an answer cut short, which
/// may be a billed report (read leniently, so raw control characters and bytes that are not
/// UTF-8 do not hide where it ends). A complete document, an HTML page or an empty body is not.
pub fn cut_short(body: &[u8]) -> bool {
    if !matches!(body.trim_ascii_start().first(), Some(b'{' | b'[')) {
        return false;
    }
    let (text, _, _) = escape(body);
    serde_json::from_str::<IgnoredAny>(&text)
        .is_err_and(|e| e.classify() == serde_json::error::Category::Eof)
}

/// The body as UTF-8 (lossy) with the control characters inside its strings escaped; how many
/// were, and whether bytes were not UTF-8.
fn escape(body: &[u8]) -> (String, usize, bool) {
    let text = String::from_utf8_lossy(body);
    let invalid_utf8 = matches!(text, Cow::Owned(_));
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut control_chars = 0;
    for c in text.chars() {
        if !in_string {
            in_string = c == '"';
            out.push(c);
            continue;
        }
        if escaped {
            escaped = false;
            out.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                out.push(c);
            }
            '"' => {
                in_string = false;
                out.push(c);
            }
            '\n' => {
                control_chars += 1;
                out.push_str("\\n");
            }
            '\r' => {
                control_chars += 1;
                out.push_str("\\r");
            }
            '\t' => {
                control_chars += 1;
                out.push_str("\\t");
            }
            c if (c as u32) < 0x20 => {
                control_chars += 1;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    (out, control_chars, invalid_utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_control_characters_inside_strings_are_escaped() {
        let body = b"{\"code\":200,\"data\":{\"remark\":\"line one\nline\ttwo\x01\"}}";
        let r = repair(body).expect("repairable");
        let v: serde_json::Value = serde_json::from_str(&r.text).expect("strict now");
        assert_eq!(v["data"]["remark"], "line one\nline\ttwo\u{1}");
        assert_eq!(r.control_chars, 3);
        assert!(!r.invalid_utf8);
        assert!(
            r.note().contains("3 raw control characters"),
            "{}",
            r.note()
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_become_the_replacement_character() {
        // 大众 in GBK.
        let (gbk, _, _) = encoding_rs::GBK.encode("大众");
        let mut body = b"{\"code\":200,\"data\":{\"brand_name\":\"".to_vec();
        body.extend_from_slice(&gbk);
        body.extend_from_slice(b"\"}}");
        let r = repair(&body).expect("repairable");
        let v: serde_json::Value = serde_json::from_str(&r.text).expect("strict now");
        assert_eq!(
            v["data"]["brand_name"],
            String::from_utf8_lossy(&gbk).as_ref()
        );
        assert!(r.invalid_utf8);
    }

    #[test]
    fn whitespace_between_tokens_and_escapes_are_left_alone() {
        // Strict already: nothing to repair.
        assert_eq!(repair(b"{\n\t\"a\": \"x\\n\\\"y\"\n}"), None);
        // A raw line break after an escaped quote is still inside the string.
        let r = repair(b"{\"a\":\"say \\\"hi\n\\\"\"}").expect("repairable");
        let v: serde_json::Value = serde_json::from_str(&r.text).expect("strict");
        assert_eq!(v["a"], "say \"hi\n\"");
    }

    #[test]
    fn only_a_json_document_that_ends_too_soon_is_cut_short() {
        assert!(cut_short(b"{\"code\":200,\"data\":{\"remark\":\"a\nb"));
        assert!(cut_short(b"  [1,2"));
        assert!(!cut_short(b"{\"code\":200}"));
        assert!(!cut_short(b"<html>502</html>"));
        assert!(!cut_short(b""));
        assert!(!cut_short(b"{\"code\":200} trailing"));
    }

    #[test]
    fn a_body_cut_short_or_not_json_is_never_repaired() {
        assert_eq!(repair(b"{\"code\":200,\"data\":{\"remark\":\"a\nb"), None);
        assert_eq!(
            repair(b"{\"code\":200,\"data\":{\"remark\":\"a\nb\"}"),
            None
        );
        assert_eq!(repair(b"<html>\n\xff</html>"), None);
        assert_eq!(repair(b""), None);
        // Trailing garbage after a complete value is not a complete document.
        assert_eq!(repair(b"{\"a\":\"x\ny\"} {"), None);
    }
}
