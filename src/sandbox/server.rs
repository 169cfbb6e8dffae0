//! The HTTP side of the sandbox: the two vendor endpoints, the admin paths, and the 404.
//!
//! A vendor call goes through the same gates as at Jumdata, in order: latency, outage (code 500),
//! throttle window (HTTP 429 with `Retry-After`), gateway error (HTTP 503/429), injected fault, parameters, appId/timestamp/sign, balance, then
//! the endpoint itself. The vendor's answers use HTTP 200 with the vendor code in the JSON body;
//! only the gateway (503/429), the HTML 502 fault and an unknown path (404) use another status.
//! Billing happens in [`super::ledger::Books`], only for code-200 answers; a billed answer may
//! then be held for the stall (late) or carry `data: {}` (unusable).

use super::ReadyAfter;
use super::answer::{gateway_timeout, json_response, success, success_raw, vendor_error};
use super::fault::{Fault, GatewayError};
use super::ledger::{Books, Endpoint, Ledger};
use super::synth::{self, Fate};
use super::{Faults, SandboxConfig};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The path of the generate endpoint.
pub const GENERATE_PATH: &str = "/vehicle/maintenance-report/generate";
/// The path of the get endpoint.
pub const GET_PATH: &str = "/vehicle/maintenance-report/get";
/// How far a call's timestamp may be from the server clock.
const MAX_SKEW_MS: i64 = 10 * 60 * 1000;

/// State shared by every request.
pub(crate) struct Shared {
    pub cfg: SandboxConfig,
    books: Mutex<Books>,
    tasks: Mutex<HashMap<String, Task>>,
    task_seq: AtomicU64,
    /// A maintenance window is on: every vendor call answers code 500.
    outage: AtomicBool,
    /// The fault rates now (from `cfg`, changed by `Sandbox::set_faults`).
    faults: Mutex<Faults>,
    throttle: Mutex<Throttle>,
}

/// The throttle's state (`throttle_every`): calls let through since the last window, and the
/// end of the window open now.
#[derive(Default)]
struct Throttle {
    served: u64,
    until: Option<Instant>,
}

/// A report requested by generate, looked up by requestId on get.
struct Task {
    vin: String,
    /// How far the report has moved on since the VIN's first purchase (days).
    age_days: u32,
    created: Instant,
    /// Gets answered 701 so far.
    polls: u32,
}

impl Shared {
    pub(crate) fn new(cfg: SandboxConfig) -> Self {
        Shared {
            books: Mutex::new(Books::new(cfg.balance)),
            outage: AtomicBool::new(cfg.outage),
            faults: Mutex::new(Faults::of(&cfg)),
            cfg,
            tasks: Mutex::new(HashMap::new()),
            task_seq: AtomicU64::new(0),
            throttle: Mutex::new(Throttle::default()),
        }
    }

    /// The `Retry-After` seconds when the throttle refuses this call: inside an open window,
    /// or when this call is the one after `throttle_every` let through, which opens one.
    fn throttled(&self) -> Option<u64> {
        let every = self.cfg.throttle_every;
        if every == 0 {
            return None;
        }
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let left = match t.until {
            Some(until) if now < until => Some(until - now),
            _ if t.served >= every => {
                t.served = 0;
                let secs = std::time::Duration::from_secs(self.cfg.throttle_secs.max(1));
                t.until = Some(now + secs);
                self.books().ledger.throttle_windows.push(0);
                Some(secs)
            }
            _ => {
                t.served += 1;
                None
            }
        }?;
        let mut books = self.books();
        books.ledger.throttled += 1;
        if let Some(n) = books.ledger.throttle_windows.last_mut() {
            *n += 1;
        }
        // Whole seconds, rounded up: a client that waits this long finds the window closed.
        Some(left.as_millis().div_ceil(1000).max(1) as u64)
    }

    /// The books; a panic elsewhere while holding the lock leaves them usable.
    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ledger(&self) -> Ledger {
        self.books().ledger.clone()
    }

    pub(super) fn set_balance(&self, balance: Option<u64>) {
        self.books().remaining = balance;
    }

    pub(super) fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    pub(super) fn outage(&self) -> bool {
        self.outage.load(Ordering::SeqCst)
    }

    pub(super) fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// A 20-digit taskNo, unique per call: milliseconds since the epoch, then a call counter.
    fn task_no(&self) -> String {
        let n = self.task_seq.fetch_add(1, Ordering::Relaxed) % 10_000_000;
        format!("{:013}{:07}", now_ms(), n)
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(GENERATE_PATH, get(generate).post(generate))
        .route(GET_PATH, get(get_report).post(get_report))
        .route("/__sandbox/ledger", get(ledger))
        .route("/__sandbox/balance", post(balance))
        .route("/__sandbox/outage", get(outage).post(set_outage))
        .fallback(not_found)
        .with_state(shared)
}

async fn generate(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    vendor_call(&s, Endpoint::Generate, &method, &uri, &headers, &body).await
}

async fn get_report(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    vendor_call(&s, Endpoint::Get, &method, &uri, &headers, &body).await
}

async fn ledger(State(s): State<Arc<Shared>>) -> Json<Ledger> {
    Json(s.ledger())
}

#[derive(Serialize, Deserialize)]
struct Balance {
    balance: Option<u64>,
}

async fn balance(State(s): State<Arc<Shared>>, Json(b): Json<Balance>) -> Json<Balance> {
    s.set_balance(b.balance);
    Json(b)
}

#[derive(Serialize, Deserialize)]
struct Outage {
    outage: bool,
}

async fn outage(State(s): State<Arc<Shared>>) -> Json<Outage> {
    Json(Outage { outage: s.outage() })
}

async fn set_outage(State(s): State<Arc<Shared>>, Json(o): Json<Outage>) -> Json<Outage> {
    s.set_outage(o.outage);
    Json(o)
}

async fn not_found() -> Response {
    let mut r = json_response(&json!({"msg": "接口地址不正确", "code": 404}));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// `true` with probability `rate`.
fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random::<f64>() < rate
}

fn new_request_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn vendor_call(
    s: &Shared,
    endpoint: Endpoint,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    s.books().ledger.calls_total += 1;
    if !s.cfg.latency.is_zero() {
        tokio::time::sleep(s.cfg.latency).await;
    }
    if s.outage() {
        s.books().ledger.outage_answers += 1;
        return vendor_error(500, "系统维护,请稍候再试");
    }
    if let Some(secs) = s.throttled() {
        return GatewayError::TooManyRequests.respond(secs);
    }
    let faults = s.faults();
    if let Some(gateway) = GatewayError::roll(faults.gateway_error_rate) {
        s.books().ledger.gateway_errors += 1;
        tracing::debug!(?gateway, "sandbox: gateway error");
        return gateway.respond(s.cfg.retry_after_secs);
    }
    if let Some(fault) = Fault::roll(faults.fault_rate) {
        s.books().ledger.faults += 1;
        tracing::debug!(?fault, "sandbox: injecting fault");
        return fault.respond(s.cfg.stall).await;
    }
    let params = match Params::parse(method, uri, headers, body) {
        Ok(p) => p,
        Err(msg) => return vendor_error(400, msg),
    };
    if let Err(msg) = authenticate(&s.cfg, &params) {
        return vendor_error(400, msg);
    }
    if s.books().exhausted() {
        return vendor_error(603, "余额不足请充值");
    }
    let answer = match endpoint {
        Endpoint::Generate => generate_report(s, &params),
        Endpoint::Get => fetch_report(s, &params),
    };
    match answer {
        Answer::Now(r) => r,
        Answer::Late(r) => {
            // Billed already: a client that gives up before the stall never learns it.
            tokio::time::sleep(s.cfg.stall).await;
            r
        }
    }
}

/// An endpoint's answer: sent at once, or held for the stall after the call was billed.
enum Answer {
    Now(Response),
    Late(Response),
}

impl From<Response> for Answer {
    fn from(r: Response) -> Answer {
        Answer::Now(r)
    }
}

/// Checks appId, timestamp and sign; the error is the vendor's message.
fn authenticate(cfg: &SandboxConfig, p: &Params) -> Result<(), &'static str> {
    let app_id = p.get("appId").ok_or("参数错误:appId不能为空")?;
    let ts = p.get("timestamp").ok_or("参数错误:timestamp不能为空")?;
    let sign = p.get("sign").ok_or("参数错误:sign不能为空")?;
    if app_id != cfg.app_id {
        return Err("appId不存在");
    }
    let ts: i64 = ts
        .trim()
        .parse()
        .map_err(|_| "参数错误:timestamp格式不正确")?;
    if (now_ms() - ts).abs() > MAX_SKEW_MS {
        return Err("请求已过期:timestamp与服务器时间相差超过10分钟");
    }
    let expected = crate::api::sign(&cfg.app_id, cfg.app_secret.expose(), ts);
    if !sign.trim().eq_ignore_ascii_case(&expected) {
        return Err("签名错误");
    }
    Ok(())
}

/// The generate endpoint after the common gates.
///
/// Long on purpose: the vendor's checks, then billing and the late or unusable answer, in the
/// order the vendor applies them.
fn generate_report(s: &Shared, p: &Params) -> Answer {
    let vin = match p.get("vin").map(str::trim) {
        Some(v) if !v.is_empty() => v,
        _ => return vendor_error(400, "参数错误:vin不能为空").into(),
    };
    let Some(img) = p
        .get("licenseImgUrl")
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return vendor_error(400, "参数错误:licenseImgUrl不能为空").into();
    };
    // A licence photo the vendor cannot read is the VIN's own 400 (never billed). The sandbox
    // takes any image URL containing "unreadable" for one.
    if img.contains("unreadable") {
        return vendor_error(400, "参数错误:行驶证图片无法识别").into();
    }
    let truth = s.cfg.truth(vin);
    if truth.fate == Fate::Unsupported703 {
        return vendor_error(703, "暂不支持该品牌").into();
    }
    let faults = s.faults();
    let unusable = chance(faults.unusable_rate);
    let late = chance(faults.late_bill_rate);
    // The task exists before the bill shows in the ledger, so a test that reads a late
    // requestId from the ledger can get it at once.
    let request_id = (!unusable).then(|| {
        let id = new_request_id();
        s.tasks().insert(
            id.clone(),
            Task {
                vin: vin.to_owned(),
                age_days: 0,
                created: Instant::now(),
                polls: 0,
            },
        );
        id
    });
    let age_days;
    {
        let mut books = s.books();
        if !books.try_bill(Endpoint::Generate, vin) {
            drop(books);
            if let Some(id) = &request_id {
                s.tasks().remove(id);
            }
            return vendor_error(603, "余额不足请充值").into();
        }
        // The VIN's n-th purchase sells its report as it stands (n - 1) report ages later.
        let nth = books.ledger.per_vin.get(vin).map_or(1, |l| l.generate);
        age_days = s.cfg.age_days(nth);
        if let Some(id) = &request_id
            && let Some(task) = s.tasks().get_mut(id)
        {
            task.age_days = age_days;
        }
        if unusable {
            books.mark_unusable(vin);
        }
        if late {
            books.mark_late(Endpoint::Generate, vin, request_id.as_deref());
        }
        if chance(s.cfg.gateway_504_rate) {
            books.mark_504(Endpoint::Generate, vin);
            return gateway_timeout().into();
        }
    }
    let answer = match request_id {
        Some(id) => generate_success(s, vin, truth.fate, id, age_days),
        // Billed, yet nothing to get a report with.
        None => success(s.task_no(), Value::Object(Map::new())),
    };
    if late {
        Answer::Late(answer)
    } else {
        Answer::Now(answer)
    }
}

/// The code-200 answer to a generate: the requestId, and the report if it comes inline.
fn generate_success(
    s: &Shared,
    vin: &str,
    fate: Fate,
    request_id: String,
    age_days: u32,
) -> Response {
    let mut data = Map::new();
    data.insert("requestId".into(), Value::String(request_id));
    if fate == Fate::Inline {
        data.insert("info".into(), synth::report_aged(vin, s.cfg.seed, age_days));
        if let Some(raw) = s.cfg.raw_brand(vin) {
            s.books().ledger.raw_bodies += 1;
            return success_raw(s.task_no(), Value::Object(data), &["info"], &raw.bytes);
        }
    } else if let Some(info) = synth::deferred_info(vin, s.cfg.seed) {
        data.insert("info".into(), info);
    }
    success(s.task_no(), Value::Object(data))
}

fn fetch_report(s: &Shared, p: &Params) -> Answer {
    let request_id = match p.get("requestId").map(str::trim) {
        Some(r) if !r.is_empty() => r,
        _ => return vendor_error(400, "参数错误:requestId不能为空").into(),
    };
    let (vin, age_days) = {
        let mut tasks = s.tasks();
        let Some(task) = tasks.get_mut(request_id) else {
            return vendor_error(400, "参数错误:requestId不存在").into();
        };
        let ready = match s.cfg.ready_after {
            ReadyAfter::Polls(n) => task.polls >= n,
            ReadyAfter::Duration(d) => task.created.elapsed() >= d,
        };
        let inline = s.cfg.truth(&task.vin).fate == Fate::Inline;
        if !ready && !inline {
            task.polls += 1;
            return vendor_error(701, "报告还未生成,请稍后查询").into();
        }
        (task.vin.clone(), task.age_days)
    };
    if s.cfg.truth(&vin).fate == Fate::Fails702 {
        return vendor_error(702, "查询失败").into();
    }
    let late = s.cfg.late_bill_get && chance(s.faults().late_bill_rate);
    {
        let mut books = s.books();
        if !books.try_bill(Endpoint::Get, &vin) {
            return vendor_error(603, "余额不足请充值").into();
        }
        if late {
            books.mark_late(Endpoint::Get, &vin, None);
        }
        if chance(s.cfg.gateway_504_rate) {
            books.mark_504(Endpoint::Get, &vin);
            return gateway_timeout().into();
        }
    }
    let report = synth::report_aged(&vin, s.cfg.seed, age_days);
    let answer = match s.cfg.raw_brand(&vin) {
        // Billed, and no report in it: a client that asks again pays again.
        _ if s.cfg.unusable_get(&vin) => success(s.task_no(), Value::Null),
        Some(raw) => {
            s.books().ledger.raw_bodies += 1;
            success_raw(s.task_no(), report, &[], &raw.bytes)
        }
        None => success(s.task_no(), report),
    };
    if late {
        Answer::Late(answer)
    } else {
        Answer::Now(answer)
    }
}

/// A call's parameters from the query string and, for POST, a form or JSON body (the body wins).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Params, &'static str> {
        let mut pairs: Vec<(String, String)> = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        if *method == Method::POST && !body.is_empty() {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
            if json {
                let map: Map<String, Value> =
                    serde_json::from_slice(body).map_err(|_| "参数错误:请求体不是合法的JSON")?;
                for (k, v) in map {
                    match v {
                        Value::String(s) => pairs.push((k, s)),
                        Value::Number(n) => pairs.push((k, n.to_string())),
                        _ => {}
                    }
                }
            } else {
                pairs.extend(url::form_urlencoded::parse(body).into_owned());
            }
        }
        Ok(Params(pairs))
    }

    /// The last value given for `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
