//! The HTTP client: one signed POST per vendor call, and nothing else.
//!
//! Built once per run (reqwest with rustls, pooled for the run's concurrency, honouring
//! `HTTPS_PROXY`/`NO_PROXY`), it sends the common parameters and the endpoint's own as an
//! `application/x-www-form-urlencoded` body, and returns the raw answer together with its
//! classification. It never retries: the retry policy lives with the engine, which also decides
//! what an unknown-outcome call means for billing.

use std::time::Duration;

use super::outcome::{Answer, Delivery, Endpoint, Outcome, classify_at, excerpt, unreadable};
use super::sign::Credentials;

/// Options for building the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The vendor's address (scheme and host); each endpoint's path is appended to it.
    pub base_url: String,
    /// How long to wait for a connection to open.
    pub connect_timeout: Duration,
    /// Whole-call timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// Idle connections kept per host; the run's concurrency.
    pub pool_size: usize,
    /// The largest answer body read (`--max-body`): a longer one is unknown, its first
    /// `max_body` bytes kept.
    pub max_body: usize,
}

/// The default `--max-body`: far above any report (a few hundred KiB), far below what a run's
/// concurrency of such bodies could do to memory.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: "https://api.jumdata.com".into(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            pool_size: 16,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// One finished exchange: what was sent, what came back, and what it means.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Which endpoint the call went to.
    pub endpoint: Endpoint,
    /// When the request was started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// When the call ended (answer read or transport failed), in milliseconds since the Unix epoch.
    pub ended_at_ms: i64,
    /// The HTTP status of the answer; `None` when no status came back.
    pub http_status: Option<u16>,
    /// The body exactly as received (empty when no answer came).
    pub body: Vec<u8>,
    /// The envelope's code, message and task number, as the call log records them.
    pub answer: Answer,
    /// What the answer means for the caller.
    pub outcome: Outcome,
    /// A 2xx answer whose body ended too soon: the connection failed mid-body, it passed
    /// `--max-body`, or it is a JSON document that stops before its end. It may be a billed
    /// report, so its bytes are kept and a get counts it (docs/design.md, "Money rules").
    pub cut_short: bool,
}

impl Exchange {
    /// Whether the vendor billed this call (code 200 in a 2xx answer).
    pub fn billed(&self) -> bool {
        self.answer.billed()
    }

    /// What the call may have cost, as the call log records it.
    pub fn delivery(&self) -> Delivery {
        match &self.outcome {
            _ if self.billed() => Delivery::Billed,
            Outcome::Transient { delivery, .. } => *delivery,
            _ => Delivery::NotBilled,
        }
    }

    /// Whether the call log keeps this answer's body: every billed answer not stored as a
    /// report, and every 2xx answer cut short (it may be a billed report).
    pub fn keeps_body(&self) -> bool {
        (self.billed() && !matches!(self.outcome, Outcome::Report { .. })) || self.cut_short
    }
}

/// What came back from one request.
struct Received {
    status: u16,
    retry_after: Option<Duration>,
    location: Option<String>,
    body: Vec<u8>,
    /// Why the body is incomplete: the connection failed mid-body, or it passed `--max-body`.
    cut: Option<String>,
}

/// The vendor client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    creds: Credentials,
    max_body: usize,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Client {
    pub(crate) fn new(opts: &ClientOptions, creds: Credentials) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vmr/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .pool_max_idle_per_host(opts.pool_size.max(1))
            // A redirect would re-send the signed POST to another host: never followed, it
            // stops the run naming the target.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            base_url: opts.base_url.trim_end_matches('/').to_owned(),
            creds,
            max_body: opts.max_body.max(1),
        })
    }

    /// The vendor's address the client sends to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `generate`: buy a report for one VIN.
    pub(crate) async fn generate(&self, vin: &str, license_img_url: &str) -> Exchange {
        self.call(
            Endpoint::Generate,
            &[("vin", vin), ("licenseImgUrl", license_img_url)],
        )
        .await
    }

    /// `get`: fetch the report behind a requestId.
    pub async fn get(&self, request_id: &str) -> Exchange {
        self.call(Endpoint::Get, &[("requestId", request_id)]).await
    }

    async fn call(&self, endpoint: Endpoint, params: &[(&str, &str)]) -> Exchange {
        let started_at_ms = now_ms();
        let ts = started_at_ms.to_string();
        let sign = self.creds.sign(started_at_ms);
        let mut form: Vec<(&str, &str)> = vec![
            ("appId", &self.creds.app_id),
            ("timestamp", &ts),
            ("sign", &sign),
        ];
        form.extend_from_slice(params);
        let url = format!("{}{}", self.base_url, endpoint.path());
        let result = self.send(&url, &form).await;
        let ended_at_ms = now_ms();
        match result {
            Ok(r) => {
                let Received {
                    status,
                    retry_after,
                    location,
                    body,
                    cut,
                } = r;
                let is_2xx = (200..300).contains(&status);
                let (mut outcome, answer) = match &cut {
                    // A 2xx body cut short may be a billed answer: unknown, its bytes kept.
                    Some(why) if is_2xx => (
                        unreadable(
                            status,
                            format!(
                                "the answer was cut short after {} bytes ({why})",
                                body.len()
                            ),
                        ),
                        Answer::default(),
                    ),
                    _ => classify_at(endpoint, status, &body, location.as_deref()),
                };
                if let Outcome::Transient {
                    retry_after: slot, ..
                } = &mut outcome
                {
                    *slot = retry_after;
                }
                let cut_short = is_2xx
                    && (cut.is_some()
                        || (outcome.is_unknown() && super::lenient::cut_short(&body)));
                Exchange {
                    cut_short,
                    endpoint,
                    started_at_ms,
                    ended_at_ms,
                    http_status: Some(status),
                    body,
                    answer,
                    outcome,
                }
            }
            Err((status, e)) => Exchange {
                endpoint,
                started_at_ms,
                ended_at_ms,
                http_status: status,
                body: Vec::new(),
                answer: Answer::default(),
                cut_short: false,
                outcome: Outcome::Transient {
                    http_status: status,
                    code: None,
                    detail: describe(&e),
                    // Only a failure to connect proves the request never left; after that, a
                    // timeout or a reset may have hit a call the vendor already billed.
                    delivery: if e.is_connect() {
                        Delivery::NotSent
                    } else {
                        Delivery::Unknown
                    },
                    retry_after: None,
                },
            },
        }
    }

    async fn send(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Received, (Option<u16>, reqwest::Error)> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut resp = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| (None, e.without_url()))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        // Read chunk by chunk: at most `max_body` bytes are held, and the bytes of an answer
        // cut short are kept (it may be a billed one).
        let mut body = Vec::new();
        let mut cut = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_body - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        cut = Some(format!(
                            "longer than --max-body {} bytes; the first {} kept",
                            self.max_body, self.max_body
                        ));
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if body.is_empty() => return Err((Some(status), e.without_url())),
                Err(e) => {
                    cut = Some(describe(&e.without_url()));
                    break;
                }
            }
        }
        Ok(Received {
            status,
            retry_after,
            location,
            body,
            cut,
        })
    }
}

/// Longest `Retry-After` read: far past any `--max-wait`, so a longer wait stops the run saying
/// how long the vendor asked for (docs/design.md, "Money rules", rule 11).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// A `Retry-After` header: delay-seconds or an HTTP date (RFC 9110), capped.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A transport error in one line, without the URL (which is fine) or any request body (which
/// holds the sign).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "transport error"
    };
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    format!("{kind} ({})", excerpt(detail.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999"), Some(Duration::from_secs(99999)));
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).expect("a date parses");
        assert!(
            d <= Duration::from_secs(60) && d >= Duration::from_secs(58),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
