//! The response envelope and what each result means for the caller.
//!
//! Every vendor answer is `{code, msg, taskNo, data}`. [`classify`] turns one HTTP exchange (or
//! the transport error that replaced it) into an [`Outcome`] that says what to do next: store
//! the report, poll again later, retry with backoff, fail this VIN, or stop the whole run. The
//! rules follow the code table of the vendor page; this is the only place that knows them.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::model::{Field, Int, Text};

/// Which vendor endpoint a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Generate,
    Get,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Generate => "/vehicle/maintenance-report/generate",
            Endpoint::Get => "/vehicle/maintenance-report/get",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Get => "get",
        }
    }
}

/// The envelope, parsed leniently: `code` may be a number or a string.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
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

/// Whether a failed exchange may have reached the vendor (and so may have been billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The request never left (connection refused, connect timeout): it cost nothing.
    NotSent,
    /// The request was sent but no usable answer came back: the vendor may have billed it.
    Unknown,
    /// An answer came back (a vendor error code, an HTTP error page): not billed.
    Answered,
}

/// What the caller should do with one call's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Code 200 with a report: store the body, the VIN is done. Billed.
    Report { request_id: Option<String> },
    /// Code 200 from generate without an inline report: poll `get` with this requestId. Billed.
    Accepted { request_id: String },
    /// Code 200 that cannot be used (generate without a requestId). Billed; the VIN fails.
    BilledUnusable { message: String },
    /// Code 701: not ready yet; poll again later.
    NotReady { message: String },
    /// Code 500, an HTTP error, a body that is not JSON, a transport error: retry with backoff.
    Transient {
        http_status: Option<u16>,
        code: Option<i64>,
        detail: String,
        delivery: Delivery,
    },
    /// Codes 400, 702, 703, 999 and any code the page does not list: fail this VIN.
    Fail { code: i64, message: String },
    /// Codes 404, 601–604: the account or address is refused; stop the whole run.
    Stop { code: i64, message: String },
}

/// The parts of an answer the checkpoint records besides the outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub code: Option<i64>,
    pub msg: Option<String>,
    pub task_no: Option<String>,
}

impl Answer {
    /// Whether the vendor billed this call: only code 200 is billed.
    pub fn billed(&self) -> bool {
        self.code == Some(200)
    }
}

const EXCERPT: usize = 160;

/// A short, single-line excerpt of a body for logs and the call log.
pub fn excerpt(body: &[u8]) -> String {
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

/// An answer with no usable code: retried. A 2xx whose body cannot be read may be a billed
/// answer cut short, so its outcome is unknown.
fn unreadable(http_status: u16, what: String) -> Outcome {
    Outcome::Transient {
        http_status: Some(http_status),
        code: None,
        detail: format!("HTTP {http_status}, {what}"),
        delivery: if (200..300).contains(&http_status) {
            Delivery::Unknown
        } else {
            Delivery::Answered
        },
    }
}

/// Classifies one HTTP answer from `endpoint`.
pub fn classify(endpoint: Endpoint, http_status: u16, body: &[u8]) -> (Outcome, Answer) {
    let env: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            let outcome = if http_status == 404 {
                wrong_address(endpoint, body)
            } else {
                let what = if body.is_empty() {
                    "empty body".to_owned()
                } else {
                    format!("not JSON ({e}): {}", excerpt(body))
                };
                unreadable(http_status, what)
            };
            return (outcome, Answer::default());
        }
    };
    let answer = Answer {
        code: env.code.get(),
        msg: env.msg.get(),
        task_no: env.task_no.get(),
    };
    let message = answer.msg.clone().unwrap_or_default();
    let outcome = match answer.code {
        Some(200) => match endpoint {
            Endpoint::Get => Outcome::Report { request_id: None },
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
                        message: format!(
                            "code 200 without a requestId or report: {}",
                            excerpt(body)
                        ),
                    },
                }
            }
        },
        Some(701) => match endpoint {
            Endpoint::Get => Outcome::NotReady { message },
            Endpoint::Generate => {
                // A 701 from generate that names a requestId can be polled; without one there is
                // nothing to poll, so generate is tried again later (701 is never billed).
                let rid = env
                    .data
                    .and_then(|raw| serde_json::from_str::<GenerateData>(raw.get()).ok())
                    .and_then(|d| d.request_id.get());
                match rid {
                    Some(request_id) => Outcome::Accepted { request_id },
                    None => Outcome::Transient {
                        http_status: Some(http_status),
                        code: Some(701),
                        detail: format!("code 701 from generate without a requestId: {message}"),
                        delivery: Delivery::Answered,
                    },
                }
            }
        },
        Some(500) => Outcome::Transient {
            http_status: Some(http_status),
            code: Some(500),
            detail: format!("code 500: {message}"),
            delivery: Delivery::Answered,
        },
        Some(code @ (404 | 601..=604)) => Outcome::Stop { code, message },
        Some(code) => Outcome::Fail { code, message },
        None if http_status == 404 => wrong_address(endpoint, body),
        None => unreadable(
            http_status,
            format!("JSON without a code: {}", excerpt(body)),
        ),
    };
    (outcome, answer)
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
    match endpoint {
        Endpoint::Get => Ok(serde_json::from_slice::<GetBody<T>>(body)?.data),
        Endpoint::Generate => Ok(serde_json::from_slice::<GenerateBody<T>>(body)?
            .data
            .and_then(|d| d.info)),
    }
}

/// What the vendor page says a code means, for messages that tell the user what to do.
pub fn code_advice(code: i64) -> &'static str {
    match code {
        404 => "the request address is wrong: check --base-url",
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
            Outcome::Fail { code: 400, .. }
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
                delivery: Delivery::Answered,
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
