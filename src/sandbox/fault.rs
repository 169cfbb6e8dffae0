//! Injected faults: the ways a real vendor call goes wrong without a clean error code.
//!
//! With `--fault-rate p` each vendor call, before anything is checked or billed, becomes one of
//! these with probability `p`, evenly spread. Clients must treat every one as transient: retry
//! with backoff, never crash, never store it as a result. A fault is never billed.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 200, JSON code 500 (system maintenance).
    Code500,
    /// HTTP 502 with an HTML page, as a proxy in front of the vendor answers.
    Html502,
    /// HTTP 200 with a JSON body cut off mid-way.
    Truncated,
    /// No answer for the configured stall, then a code 500; a client with a shorter timeout
    /// gives up first.
    Stall,
    /// Response headers, then the connection is reset before the body completes.
    Drop,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Code500,
        Fault::Html502,
        Fault::Truncated,
        Fault::Stall,
        Fault::Drop,
    ];

    /// A fault with probability `rate`, else `None`.
    pub fn roll(rate: f64) -> Option<Fault> {
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
    pub async fn respond(self, stall: Duration) -> Response {
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

fn maintenance() -> Response {
    super::server::vendor_error(500, "系统维护,请稍候再试")
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
}
