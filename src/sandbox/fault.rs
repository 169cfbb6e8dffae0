//! Injected faults: the ways a real vendor call goes wrong without a clean error code.
//!
//! With `--fault-rate p` each vendor call, before anything is checked or billed, becomes one of
//! these with probability `p`, evenly spread. The sandbox never bills a fault, but a client cannot
//! always know that. Under the client's rules (any non-2xx status is not billed; a 2xx JSON body
//! is billed by its code; a 2xx body that is not JSON, cut short or without a code, or a timeout
//! or reset after the request was written, is unknown):
//!
//! - [`Fault::Code500`] and [`Fault::Html502`] are "not billed": retry with backoff.
//! - [`Fault::Truncated`], [`Fault::Stall`] (for a client whose timeout is shorter than the stall)
//!   and [`Fault::Drop`] are "unknown" outcomes: on a generate the client must assume it may have
//!   been charged, although the sandbox charged nothing. The sandbox's real "billed but never
//!   seen" case is the late answer (`late_bill_rate`, see `server`).
//!
//! Never crash, never store any of them as a result.
//!
//! [`GatewayError`] is the other way a call fails before the vendor sees it: a gateway in front
//! answers HTTP 503 or 429 with a JSON body and `Retry-After` (`--gateway-error-rate`); never
//! billed.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// HTTP 200, JSON code 500 (system maintenance). Not billed, and the client can tell.
    Code500,
    /// HTTP 502 with an HTML page, as a proxy in front of the vendor answers. Not billed, and the
    /// client can tell (non-2xx).
    Html502,
    /// HTTP 200 with a JSON body cut off mid-way. Not billed, but "unknown" to the client.
    Truncated,
    /// No answer for the configured stall, then a code 500; a client with a shorter timeout
    /// gives up first, an "unknown" outcome to it. Not billed.
    Stall,
    /// Response headers, then the connection is reset before the body completes: "unknown" to
    /// the client. Not billed.
    Drop,
}

impl Fault {
    pub(crate) const ALL: [Fault; 5] = [
        Fault::Code500,
        Fault::Html502,
        Fault::Truncated,
        Fault::Stall,
        Fault::Drop,
    ];

    /// A fault with probability `rate`, else `None`.
    pub(crate) fn roll(rate: f64) -> Option<Fault> {
        if rate <= 0.0 {
            return None;
        }
        let mut rng = rand::rng();
        if rng.random::<f64>() >= rate {
            return None;
        }
        Some(Fault::ALL[rng.random_range(0..Fault::ALL.len())])
    }

    /// The answer for this fault; `Stall` sleeps for `stall` first.
    pub(crate) async fn respond(self, stall: Duration) -> Response {
        match self {
            Fault::Code500 => maintenance(),
            Fault::Html502 => (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                 <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n",
            )
                .into_response(),
            Fault::Truncated => {
                let full = r#"{"msg":"成功","code":200,"taskNo":"09522434433117405247","data":{"requestId":"f39MnWfC3r1oErniJ65pn63jgjW6691E","info":{"overview":{"appearance":{"is_exception":1,"label":"外观""#;
                let cut = &full.as_bytes()[..full.len() * 2 / 3];
                let mut r = Response::new(Body::from(Bytes::copy_from_slice(cut)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json;charset=UTF-8"),
                );
                r
            }
            Fault::Stall => {
                tokio::time::sleep(stall).await;
                maintenance()
            }
            Fault::Drop => {
                let mut r = Response::new(Body::new(Broken));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json;charset=UTF-8"),
                );
                r
            }
        }
    }
}

/// A gateway in front of the vendor refusing a call (`--gateway-error-rate`): HTTP 503 or 429,
/// a JSON body with the same code, and `Retry-After`. Answered before anything is checked or
/// billed; the client sees a non-2xx status, so "not billed, retry after the delay".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GatewayError {
    /// HTTP 503, `{"code":503,"msg":"Service Unavailable"}`.
    Unavailable,
    /// HTTP 429, `{"code":429,"msg":"Too Many Requests"}`.
    TooManyRequests,
}

impl GatewayError {
    /// A gateway error with probability `rate` (503 or 429, half each), else `None`.
    pub(crate) fn roll(rate: f64) -> Option<GatewayError> {
        if rate <= 0.0 {
            return None;
        }
        let mut rng = rand::rng();
        if rng.random::<f64>() >= rate {
            return None;
        }
        Some(if rng.random_bool(0.5) {
            GatewayError::Unavailable
        } else {
            GatewayError::TooManyRequests
        })
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            GatewayError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The answer, with `Retry-After: retry_after_secs`.
    pub(crate) fn respond(self, retry_after_secs: u64) -> Response {
        let status = self.status();
        let msg = status.canonical_reason().unwrap_or("Error");
        let body = format!(r#"{{"code":{},"msg":"{msg}"}}"#, status.as_u16());
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        r
    }
}

fn maintenance() -> Response {
    super::answer::vendor_error(500, "系统维护,请稍候再试")
}

/// A body whose first read fails, so hyper aborts the connection after the headers.
struct Broken;

impl HttpBody for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection dropped",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_zero_never_faults_and_one_always_does() {
        assert!((0..1000).all(|_| Fault::roll(0.0).is_none()));
        let all: Vec<Fault> = (0..2000).filter_map(|_| Fault::roll(1.0)).collect();
        assert_eq!(all.len(), 2000);
        for f in Fault::ALL {
            assert!(all.contains(&f), "{f:?} never chosen");
        }
    }

    #[test]
    fn gateway_errors_are_503_or_429_with_retry_after() {
        assert!((0..1000).all(|_| GatewayError::roll(0.0).is_none()));
        let all: Vec<GatewayError> = (0..1000).filter_map(|_| GatewayError::roll(1.0)).collect();
        assert_eq!(all.len(), 1000);
        let n503 = all
            .iter()
            .filter(|g| **g == GatewayError::Unavailable)
            .count();
        assert!((350..650).contains(&n503), "{n503} of 1000 are 503");
        let r = GatewayError::TooManyRequests.respond(7);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = GatewayError::Unavailable.respond(1);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
