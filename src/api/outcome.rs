//! The response envelope and what each result means for the caller.
//!
//! Every vendor answer is `{code, msg, taskNo, data}`. [`classify`] turns one HTTP exchange (or
//! the transport error that replaced it) into an [`Outcome`] that says what to do next: store
//! the report, poll again later, retry with backoff, fail this VIN, or stop the whole run. The
//! rules follow the code table of the vendor page; this is the only place that knows them.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::scalar::{Field, Int, Text};

/// Which vendor endpoint a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `generate`: buys a report for one VIN.
    Generate,
    /// `get`: fetches the report behind a requestId.
    Get,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Generate => "/vehicle/maintenance-report/generate",
            Endpoint::Get => "/vehicle/maintenance-report/get",
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Get => "get",
        }
    }
}

/// The envelope, parsed leniently: `code` may be a number or a string.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(default)]
    pub code: Field<Int>,
    #[serde(default)]
    pub msg: Field<Text>,
    #[serde(rename = "taskNo", default)]
    pub task_no: Field<Text>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct GenerateData<'a> {
    #[serde(rename = "requestId", default)]
    request_id: Field<Text>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
}

/// What a call may have cost: the money rules' classes (docs/design.md, "Money rules"), from
/// the wire to the call log's `billed` and `delivery` columns. An [`Outcome::Transient`] is
/// never `Billed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Code 200 in a 2xx answer: billed.
    Billed,
    /// The request never left (connection refused, connect timeout, DNS): it cost nothing.
    NotSent,
    /// The request was written but no readable answer came back (a read timeout, a reset, a 2xx
    /// body that is not JSON, cut short or without `code`): the vendor may have billed it.
    Unknown,
    /// An answer came back that is never billed: any non-2xx HTTP status whatever its body (a
    /// gateway's 503/429, an HTML 502 page), or the vendor's own code 500.
    NotBilled,
}

/// What the caller should do with one call's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Code 200 with a report: store the body, the VIN is done. Billed.
    Report {
        /// The requestId a generate answer names beside its report; `None` from get.
        request_id: Option<String>,
    },
    /// Code 200 from generate without an inline report: poll `get` with this requestId. Billed.
    Accepted {
        /// The requestId to poll.
        request_id: String,
    },
    /// Code 200 that cannot be used (generate without a requestId or report, get without a
    /// report object). Billed: the body is kept and the VIN fails as `billed_unusable`.
    BilledUnusable {
        /// Why the answer cannot be used, with an excerpt of its body.
        message: String,
    },
    /// Code 701: not ready yet; poll again later.
    NotReady {
        /// The vendor's `msg`.
        message: String,
    },
    /// No usable answer: retried (not sent, not billed) or, for a generate whose outcome is
    /// unknown, parked as `uncertain`. `retry_after` is the server's `Retry-After`, if any.
    Transient {
        /// The HTTP status, if an answer came back at all.
        http_status: Option<u16>,
        /// The vendor's code, if the body carried one.
        code: Option<i64>,
        /// What went wrong, in one line for logs and the call log.
        detail: String,
        /// What the call may have cost.
        delivery: Delivery,
        /// The wait the server asked for in `Retry-After`, if any.
        retry_after: Option<std::time::Duration>,
    },
    /// Code 400: a bad parameter, or (when many in a row) a bad sign, secret or clock.
    BadRequest {
        /// The vendor's `msg`.
        message: String,
    },
    /// Codes 702, 703, 999 and any code the page does not list.
    Fail {
        /// The vendor's code.
        code: i64,
        /// The vendor's `msg`.
        message: String,
    },
    /// Codes 404, 601–604: the account or address is refused; stop the whole run.
    Stop {
        /// The vendor's code, or the HTTP status (404 or a redirect's 3xx) that stopped the run.
        code: i64,
        /// The vendor's `msg`, or a description of the HTTP answer.
        message: String,
    },
}

impl Outcome {
    /// Whether the vendor gave a real answer about the VIN (200, 701, 702, 703): what ends a
    /// streak of 400s and proves the account, sign and clock are fine.
    pub(crate) fn is_vendor_verdict(&self, code: Option<i64>) -> bool {
        matches!(code, Some(200 | 701 | 702 | 703)) && !matches!(self, Outcome::Transient { .. })
    }

    /// Whether the call got no usable answer at all (what a maintenance window looks like).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Outcome::Transient { .. })
    }

    /// The wait the vendor asked for (`Retry-After`, more than zero) with an answer it did not
    /// bill: the whole account pauses for it (docs/design.md, "Money rules").
    pub(crate) fn asked_wait(&self) -> Option<std::time::Duration> {
        match self {
            Outcome::Transient {
                delivery: Delivery::NotBilled,
                retry_after: Some(w),
                ..
            } if !w.is_zero() => Some(*w),
            _ => None,
        }
    }

    /// A non-2xx answer (a gateway's, never billed) that names no wait: the account backs off
    /// briefly.
    pub(crate) fn refused_unasked(&self) -> bool {
        self.asked_wait().is_none()
            && matches!(
                self,
                Outcome::Transient {
                    delivery: Delivery::NotBilled,
                    http_status: Some(s),
                    ..
                } if !(200..300).contains(s)
            )
    }

    /// Whether nobody can tell if the vendor billed this call.
    pub(crate) fn is_unknown(&self) -> bool {
        matches!(
            self,
            Outcome::Transient {
                delivery: Delivery::Unknown,
                ..
            }
        )
    }
}

/// The parts of an answer the checkpoint records besides the outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The envelope's `code`; `None` for a non-2xx answer or a body without a readable code.
    pub code: Option<i64>,
    /// The envelope's `msg`, if any.
    pub msg: Option<String>,
    /// The envelope's `taskNo`, if any (never kept from a non-2xx answer).
    pub task_no: Option<String>,
    /// What lenient reading repaired in a body that was not strict JSON ([`super::lenient`]).
    pub repaired: Option<String>,
}

impl Answer {
    /// Whether the vendor billed this call: only code 200 in a 2xx answer is billed (a non-2xx
    /// answer never carries a code here).
    pub fn billed(&self) -> bool {
        self.code == Some(200)
    }
}

const EXCERPT: usize = 160;

/// A short, single-line excerpt of a body for logs and the call log.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT)
        .collect();
    if text.chars().count() > EXCERPT {
        format!("{}…", one_line.trim_end())
    } else {
        one_line.trim_end().to_owned()
    }
}

fn non_empty_raw(raw: Option<&RawValue>) -> bool {
    match raw {
        None => false,
        Some(r) => {
            let t = r.get().trim();
            !(t == "null" || t == "{}" || t == "\"\"" || t == "[]" || t.is_empty())
        }
    }
}

/// An HTTP 404: the address is wrong, whatever the body says.
fn wrong_address(endpoint: Endpoint, body: &[u8]) -> Outcome {
    Outcome::Stop {
        code: 404,
        message: format!("HTTP 404 for {}: {}", endpoint.path(), excerpt(body)),
    }
}

/// An HTTP redirect: vmr never follows one (the signed request would go to another host), so the
/// configured address is wrong; stop the run as for a 404.
fn redirected(endpoint: Endpoint, http_status: u16, location: Option<&str>) -> Outcome {
    Outcome::Stop {
        code: i64::from(http_status),
        message: format!(
            "HTTP {http_status} for {}: the address redirects to {}; vmr never follows a redirect (the signed request would go to another host)",
            endpoint.path(),
            location.map_or_else(|| "an unnamed target".to_owned(), |l| format!("{l:?}"))
        ),
    }
}

/// A 2xx answer with no usable code: it may be a billed answer cut short, so its outcome is
/// unknown.
pub(crate) fn unreadable(http_status: u16, what: String) -> Outcome {
    Outcome::Transient {
        http_status: Some(http_status),
        code: None,
        detail: format!("HTTP {http_status}, {what}"),
        delivery: Delivery::Unknown,
        retry_after: None,
    }
}

fn not_billed(http_status: u16, code: Option<i64>, detail: String) -> Outcome {
    Outcome::Transient {
        http_status: Some(http_status),
        code,
        detail,
        delivery: Delivery::NotBilled,
        retry_after: None,
    }
}

/// Classifies one HTTP answer from `endpoint` (the money rules' table: a non-2xx status is
/// never billed whatever its body; a 2xx is classed by the vendor's `code`).
pub fn classify(endpoint: Endpoint, http_status: u16, body: &[u8]) -> (Outcome, Answer) {
    classify_at(endpoint, http_status, body, None)
}

/// [`classify`], with the `Location` a redirect named (for the message that stops the run).
pub(crate) fn classify_at(
    endpoint: Endpoint,
    http_status: u16,
    body: &[u8],
    location: Option<&str>,
) -> (Outcome, Answer) {
    let parsed: Result<Envelope, _> = serde_json::from_slice(body);
    if !(200..300).contains(&http_status) {
        return gateway_answer(endpoint, http_status, body, parsed.ok(), location);
    }
    // A complete document that is not strict JSON (raw control characters in strings, bytes
    // that are not UTF-8) is read leniently: it may be a billed report (docs/design.md).
    let repaired;
    let (env, note) = match parsed {
        Ok(e) => (e, None),
        Err(e) => {
            repaired = super::lenient::repair(body);
            match repaired
                .as_ref()
                .and_then(|r| Some((serde_json::from_str::<Envelope>(&r.text).ok()?, r.note())))
            {
                Some((env, note)) => (env, Some(note)),
                None => {
                    let what = if body.is_empty() {
                        "empty body".to_owned()
                    } else {
                        format!("not JSON ({e}): {}", excerpt(body))
                    };
                    return (unreadable(http_status, what), Answer::default());
                }
            }
        }
    };
    let answer = Answer {
        code: env.code.get(),
        msg: env.msg.get(),
        task_no: env.task_no.get(),
        repaired: note,
    };
    let message = answer.msg.clone().unwrap_or_default();
    let outcome = match answer.code {
        Some(200) => billed_answer(endpoint, &env, body),
        Some(701) => not_ready(endpoint, &env, http_status, message),
        // The vendor's maintenance code, and gateway codes relayed inside a 2xx body.
        Some(code @ (429 | 500..=599)) => {
            not_billed(http_status, Some(code), format!("code {code}: {message}"))
        }
        Some(400) => Outcome::BadRequest { message },
        Some(code @ (404 | 601..=604)) => Outcome::Stop { code, message },
        Some(code) => Outcome::Fail { code, message },
        None => unreadable(
            http_status,
            format!("JSON without a code: {}", excerpt(body)),
        ),
    };
    (outcome, answer)
}

/// A non-2xx answer: a gateway or proxy answered (503, 429, an HTML 502 page), so the vendor
/// never billed it, whatever the body says; its code is kept for the call log only. An HTTP
/// 404 means the address is wrong.
fn gateway_answer(
    endpoint: Endpoint,
    http_status: u16,
    body: &[u8],
    env: Option<Envelope>,
    location: Option<&str>,
) -> (Outcome, Answer) {
    if http_status == 404 {
        return (wrong_address(endpoint, body), Answer::default());
    }
    let code = env.as_ref().and_then(|e| e.code.get());
    let detail = match code {
        Some(c) => format!("HTTP {http_status} (code {c}): {}", excerpt(body)),
        None => format!("HTTP {http_status}: {}", excerpt(body)),
    };
    let answer = Answer {
        code: None,
        msg: env.and_then(|e| e.msg.get()),
        task_no: None,
        repaired: None,
    };
    // A gateway's 504 comes after it forwarded the request and gave up waiting for the vendor,
    // which may well have billed it: unknown, like a read timeout (docs/design.md, "Money
    // rules").
    if http_status == 504 {
        let outcome = Outcome::Transient {
            http_status: Some(http_status),
            code,
            detail: format!("{detail} (a gateway timeout: the vendor may have billed the call)"),
            delivery: Delivery::Unknown,
            retry_after: None,
        };
        return (outcome, answer);
    }
    if (300..400).contains(&http_status) {
        return (redirected(endpoint, http_status, location), answer);
    }
    (not_billed(http_status, code, detail), answer)
}

/// A code-200 answer (billed): the report, the requestId to poll, or neither (billed but
/// unusable).
fn billed_answer(endpoint: Endpoint, env: &Envelope, body: &[u8]) -> Outcome {
    match endpoint {
        Endpoint::Get => {
            let is_object = env
                .data
                .is_some_and(|d| d.get().trim_start().starts_with('{'));
            if is_object && non_empty_raw(env.data) {
                Outcome::Report { request_id: None }
            } else {
                Outcome::BilledUnusable {
                    message: format!("code 200 from get without a report: {}", excerpt(body)),
                }
            }
        }
        Endpoint::Generate => {
            let data: Option<GenerateData> = env
                .data
                .and_then(|raw| serde_json::from_str::<GenerateData>(raw.get()).ok());
            match data {
                Some(d) if non_empty_raw(d.info) => Outcome::Report {
                    request_id: d.request_id.get(),
                },
                Some(GenerateData {
                    request_id: rid, ..
                }) if rid.get().is_some() => Outcome::Accepted {
                    request_id: rid.get().unwrap_or_default(),
                },
                _ => Outcome::BilledUnusable {
                    message: format!("code 200 without a requestId or report: {}", excerpt(body)),
                },
            }
        }
    }
}

/// Code 701. A 701 from generate that names a requestId can be polled; without one there is
/// nothing to poll, so generate is tried again later (701 is never billed).
fn not_ready(endpoint: Endpoint, env: &Envelope, http_status: u16, message: String) -> Outcome {
    match endpoint {
        Endpoint::Get => Outcome::NotReady { message },
        Endpoint::Generate => {
            let rid = env
                .data
                .and_then(|raw| serde_json::from_str::<GenerateData>(raw.get()).ok())
                .and_then(|d| d.request_id.get());
            match rid {
                Some(request_id) => Outcome::Accepted { request_id },
                None => not_billed(
                    http_status,
                    Some(701),
                    format!("code 701 from generate without a requestId: {message}"),
                ),
            }
        }
    }
}

/// The REPORT inside a stored body: `data.info` for generate, `data` for get. `None` when the
/// body has no such object.
pub fn report_json(endpoint: Endpoint, body: &[u8]) -> Option<&RawValue> {
    let env: Envelope = serde_json::from_slice(body).ok()?;
    match endpoint {
        Endpoint::Get => env.data,
        Endpoint::Generate => {
            let data: GenerateData = serde_json::from_str(env.data?.get()).ok()?;
            data.info
        }
    }
}

#[derive(Deserialize)]
struct GetBody<T> {
    #[serde(default = "none")]
    data: Option<T>,
}

#[derive(Deserialize)]
struct GenerateBody<T> {
    #[serde(default = "none")]
    data: Option<GenerateInfo<T>>,
}

#[derive(Deserialize)]
struct GenerateInfo<T> {
    #[serde(default = "none")]
    info: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

/// The REPORT inside a stored body parsed straight into `T`, in one pass over the body (what
/// [`report_json`] finds, without scanning the body twice). `Ok(None)` when the body has no
/// `data` (get) or `data.info` (generate); an error when the body is not JSON or the REPORT
/// does not parse as `T`.
pub fn parse_report<'a, T: Deserialize<'a>>(
    endpoint: Endpoint,
    body: &'a [u8],
) -> Result<Option<T>, serde_json::Error> {
    // A body that is valid UTF-8 as a whole (nearly every one) is checked once, at SIMD
    // speed, and parsed as text: serde_json then validates no string again. Any other body is
    // parsed as bytes, exactly as before, so what fails and why is unchanged.
    fn from<'a, U: Deserialize<'a>>(body: &'a [u8]) -> Result<U, serde_json::Error> {
        match simdutf8::basic::from_utf8(body) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(body),
        }
    }
    match endpoint {
        Endpoint::Get => Ok(from::<GetBody<T>>(body)?.data),
        Endpoint::Generate => Ok(from::<GenerateBody<T>>(body)?.data.and_then(|d| d.info)),
    }
}

/// What the vendor page says a code means, for messages that tell the user what to do.
pub(crate) fn code_advice(code: i64) -> &'static str {
    match code {
        404 => "the request address is wrong: check --base-url",
        300..=399 => {
            "the address redirects elsewhere: check --base-url (vmr never follows a redirect)"
        }
        601 => "the API is not enabled for this account: ask the vendor to enable it",
        602 => "the account is disabled: contact the vendor",
        603 => "the balance is exhausted: top up the account, then run again",
        604 => "the API is disabled: contact the vendor",
        _ => "see the vendor's message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(body: &str) -> Outcome {
        classify(Endpoint::Generate, 200, body.as_bytes()).0
    }
    fn get(body: &str) -> Outcome {
        classify(Endpoint::Get, 200, body.as_bytes()).0
    }

    #[test]
    fn every_code_on_the_vendor_page() {
        assert!(matches!(
            get(r#"{"code":200,"msg":"成功","taskNo":"1","data":{"brand_name":"x"}}"#),
            Outcome::Report { .. }
        ));
        assert!(matches!(
            get(r#"{"code":400,"msg":"参数错误"}"#),
            Outcome::BadRequest { .. }
        ));
        assert!(matches!(
            get(r#"{"code":404,"msg":"接口地址不正确"}"#),
            Outcome::Stop { code: 404, .. }
        ));
        assert!(matches!(
            get(r#"{"code":500,"msg":"系统维护"}"#),
            Outcome::Transient {
                code: Some(500),
                ..
            }
        ));
        for c in 601..=604 {
            assert!(
                matches!(get(&format!(r#"{{"code":{c},"msg":"x"}}"#)), Outcome::Stop { code, .. } if code == c)
            );
        }
        assert!(matches!(
            get(r#"{"code":999,"msg":"其他"}"#),
            Outcome::Fail { code: 999, .. }
        ));
        assert!(matches!(
            get(r#"{"code":701,"msg":"报告还未生成"}"#),
            Outcome::NotReady { .. }
        ));
        assert!(matches!(
            get(r#"{"code":702,"msg":"查询失败"}"#),
            Outcome::Fail { code: 702, .. }
        ));
        assert!(matches!(
            generate(r#"{"code":703,"msg":"暂不支持该品牌"}"#),
            Outcome::Fail { code: 703, .. }
        ));
        assert!(matches!(
            generate(r#"{"code":"603","msg":"余额不足请充值"}"#),
            Outcome::Stop { code: 603, .. }
        ));
    }

    #[test]
    fn generate_inline_versus_deferred() {
        let inline =
            r#"{"code":200,"taskNo":"9","data":{"requestId":"r1","info":{"brand_name":"大众"}}}"#;
        assert_eq!(
            generate(inline),
            Outcome::Report {
                request_id: Some("r1".into())
            }
        );
        for body in [
            r#"{"code":200,"data":{"requestId":"r1"}}"#,
            r#"{"code":200,"data":{"requestId":"r1","info":{}}}"#,
            r#"{"code":200,"data":{"requestId":"r1","info":null}}"#,
            r#"{"code":"200","data":{"requestId":"r1","info":""}}"#,
        ] {
            assert_eq!(
                generate(body),
                Outcome::Accepted {
                    request_id: "r1".into()
                },
                "{body}"
            );
        }
        let (o, a) = classify(Endpoint::Generate, 200, br#"{"code":200,"data":{}}"#);
        assert!(matches!(o, Outcome::BilledUnusable { .. }));
        assert!(a.billed());
        let (o, a) = classify(
            Endpoint::Generate,
            200,
            br#"{"code":701,"data":{"requestId":"r9"}}"#,
        );
        assert_eq!(
            o,
            Outcome::Accepted {
                request_id: "r9".into()
            }
        );
        assert!(!a.billed());
    }

    #[test]
    fn broken_bodies_are_transient() {
        let (o, _) = classify(Endpoint::Get, 502, b"<html><body>Bad Gateway</body></html>");
        assert!(matches!(
            o,
            Outcome::Transient {
                http_status: Some(502),
                delivery: Delivery::NotBilled,
                ..
            }
        ));
        let (o, _) = classify(Endpoint::Get, 200, br#"{"code":200,"data":{"overv"#);
        assert!(matches!(
            o,
            Outcome::Transient {
                delivery: Delivery::Unknown,
                ..
            }
        ));
        let (o, a) = classify(Endpoint::Get, 200, b"");
        assert!(matches!(o, Outcome::Transient { .. }));
        assert!(!a.billed());
        let (o, _) = classify(Endpoint::Get, 404, b"<html>not found</html>");
        assert!(matches!(o, Outcome::Stop { code: 404, .. }));
    }

    #[test]
    fn a_non_2xx_status_is_never_billed_whatever_the_body_says() {
        for (status, body) in [
            (503, r#"{"code":503,"msg":"Service Unavailable"}"#),
            (429, r#"{"code":429,"msg":"Too Many Requests"}"#),
            (
                500,
                r#"{"code":200,"msg":"成功","data":{"requestId":"r1"}}"#,
            ),
            (502, "<html>Bad Gateway</html>"),
        ] {
            for ep in [Endpoint::Generate, Endpoint::Get] {
                let (o, a) = classify(ep, status, body.as_bytes());
                assert!(
                    matches!(
                        o,
                        Outcome::Transient {
                            delivery: Delivery::NotBilled,
                            ..
                        }
                    ),
                    "{status} {body}: {o:?}"
                );
                assert!(!a.billed(), "{status} {body}");
            }
        }
    }

    #[test]
    fn a_2xx_without_a_readable_code_is_unknown() {
        for body in [
            "",
            "<html>ok</html>",
            r#"{"msg":"成功"}"#,
            r#"{"code":200,"da"#,
        ] {
            for ep in [Endpoint::Generate, Endpoint::Get] {
                let (o, _) = classify(ep, 200, body.as_bytes());
                assert!(o.is_unknown(), "{body}: {o:?}");
            }
        }
    }

    #[test]
    fn a_gateway_504_is_unknown_and_a_redirect_stops_the_run() {
        for ep in [Endpoint::Generate, Endpoint::Get] {
            let (o, a) = classify(ep, 504, b"<html>504 Gateway Time-out</html>");
            assert!(o.is_unknown(), "{o:?}");
            assert!(!a.billed());
            let (o, _) = classify(ep, 307, b"");
            assert!(matches!(o, Outcome::Stop { code: 307, .. }), "{o:?}");
        }
        let (Outcome::Stop { message, .. }, _) = classify_at(
            Endpoint::Generate,
            308,
            b"",
            Some("https://other.example/x"),
        ) else {
            panic!("a redirect stops")
        };
        assert!(message.contains("https://other.example/x"), "{message}");
    }

    #[test]
    fn a_wait_is_asked_only_by_an_unbilled_answer_with_retry_after() {
        let (mut o, _) = classify(Endpoint::Generate, 429, br#"{"code":429}"#);
        assert_eq!(o.asked_wait(), None);
        assert!(o.refused_unasked());
        if let Outcome::Transient { retry_after, .. } = &mut o {
            *retry_after = Some(std::time::Duration::from_secs(4));
        }
        assert_eq!(o.asked_wait(), Some(std::time::Duration::from_secs(4)));
        assert!(!o.refused_unasked());
        // A code-500 answer in a 2xx body is not a gateway's refusal.
        let (o, _) = classify(Endpoint::Get, 200, br#"{"code":500}"#);
        assert!(!o.refused_unasked());
        // An unknown answer never asks for a wait, whatever its headers.
        let (o, _) = classify(Endpoint::Generate, 504, b"");
        assert_eq!(o.asked_wait(), None);
    }

    #[test]
    fn a_billed_body_that_is_not_strict_json_is_read_leniently() {
        let body = "{\"code\":200,\"msg\":\"成功\",\"data\":{\"brand_name\":\"大众\n\t\"}}";
        let (o, a) = classify(Endpoint::Get, 200, body.as_bytes());
        assert!(matches!(o, Outcome::Report { .. }), "{o:?}");
        assert!(a.billed());
        assert!(a.repaired.as_deref().is_some_and(|n| n.contains("control")));
        let (gbk, _, _) = encoding_rs::GBK.encode("大众");
        let mut body = br#"{"code":200,"data":{"requestId":"r1","info":{"brand_name":""#.to_vec();
        body.extend_from_slice(&gbk);
        body.extend_from_slice(br#""}}}"#);
        let (o, a) = classify(Endpoint::Generate, 200, &body);
        assert_eq!(
            o,
            Outcome::Report {
                request_id: Some("r1".into())
            }
        );
        assert!(a.repaired.is_some());
        // Cut short: still unknown.
        let (o, a) = classify(Endpoint::Get, 200, &body[..body.len() - 2]);
        assert!(o.is_unknown());
        assert!(!a.billed());
    }

    #[test]
    fn gateway_codes_in_a_2xx_body_are_retried_not_failed() {
        for body in [
            r#"{"code":503}"#,
            r#"{"code":429}"#,
            r#"{"code":"500","msg":"x"}"#,
        ] {
            let (o, a) = classify(Endpoint::Generate, 200, body.as_bytes());
            assert!(
                matches!(
                    o,
                    Outcome::Transient {
                        delivery: Delivery::NotBilled,
                        ..
                    }
                ),
                "{body}"
            );
            assert!(!a.billed());
        }
    }

    #[test]
    fn get_200_without_a_report_object_is_billed_but_unusable() {
        for body in [
            r#"{"code":200,"data":null}"#,
            r#"{"code":200}"#,
            r#"{"code":200,"data":"x"}"#,
            r#"{"code":200,"data":{}}"#,
        ] {
            let (o, a) = classify(Endpoint::Get, 200, body.as_bytes());
            assert!(matches!(o, Outcome::BilledUnusable { .. }), "{body}");
            assert!(a.billed());
        }
    }

    #[test]
    fn report_is_found_in_both_shapes() {
        let g = br#"{"code":200,"data":{"requestId":"r","info":{"a":1}}}"#;
        assert_eq!(
            report_json(Endpoint::Generate, g).map(|r| r.get()),
            Some(r#"{"a":1}"#)
        );
        let p = br#"{"code":200,"data":{"a":2}}"#;
        assert_eq!(
            report_json(Endpoint::Get, p).map(|r| r.get()),
            Some(r#"{"a":2}"#)
        );
    }

    #[test]
    fn excerpt_is_short_and_single_line() {
        let long = "x\n".repeat(500);
        let e = excerpt(long.as_bytes());
        assert!(!e.contains('\n'));
        assert!(e.chars().count() <= EXCERPT + 1);
    }
}
