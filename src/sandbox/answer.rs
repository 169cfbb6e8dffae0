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
