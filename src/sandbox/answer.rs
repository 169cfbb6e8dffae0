//! The vendor's answer bodies, as the sandbox writes them: `{"msg", "code", "taskNo", "data"}`
//! over HTTP 200 with a JSON content type. The endpoints (`server`) and the injected faults
//! (`fault`) both answer through these, so neither depends on the other.

use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};

/// A vendor answer with a non-200 code: `{"msg": .., "code": ..}` over HTTP 200.
pub(crate) fn vendor_error(code: u16, msg: &str) -> Response {
    json_response(&json!({"msg": msg, "code": code}))
}

/// A billed answer: code 200 with its taskNo and data.
pub(crate) fn success(task_no: String, data: Value) -> Response {
    json_response(&json!({"msg": "成功", "code": 200, "taskNo": task_no, "data": data}))
}

/// Any JSON value as an HTTP 200 answer with the vendor's content type.
pub(crate) fn json_response(v: &Value) -> Response {
    let body = serde_json::to_vec(v).expect("a serde_json::Value always serializes");
    let mut r = Response::new(body.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

/// The placeholder a raw `brand_name` replaces after serialising (`--raw-body-rate`).
const RAW_PLACEHOLDER: &str = "@@vmr-sandbox-raw-brand@@";

/// A billed answer whose REPORT (at `report_at`: `["info"]` for generate, `[]` for get, inside
/// `data`) carries `raw` as its `brand_name` bytes, so the body is not strict JSON.
pub(crate) fn success_raw(
    task_no: String,
    mut data: Value,
    report_at: &[&str],
    raw: &[u8],
) -> Response {
    let mut report = &mut data;
    for key in report_at {
        report = &mut report[*key];
    }
    if let Some(obj) = report.as_object_mut() {
        obj.insert("brand_name".into(), Value::String(RAW_PLACEHOLDER.into()));
    }
    let body =
        serde_json::to_vec(&json!({"msg": "成功", "code": 200, "taskNo": task_no, "data": data}))
            .expect("a serde_json::Value always serializes");
    let mut out = Vec::with_capacity(body.len() + raw.len());
    let mut rest = &body[..];
    while let Some(at) = find(rest, RAW_PLACEHOLDER.as_bytes()) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(raw);
        rest = &rest[at + RAW_PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    let mut r = Response::new(out.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A gateway's 504: it forwarded the call and gave up waiting for the vendor's answer.
pub(crate) fn gateway_timeout() -> Response {
    let mut r = Response::new(
        "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            .into(),
    );
    *r.status_mut() = axum::http::StatusCode::GATEWAY_TIMEOUT;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}
