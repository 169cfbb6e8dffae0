//! The sandbox: a faithful simulator of the Jumdata vehicle-maintenance API.
//!
//! The vendor has discontinued the product, so the sandbox is how a new user sees vmr work and
//! what every test and benchmark talks to. It serves both endpoints with the vendor's signing,
//! result codes and untidy REPORTs ([`synth`]), injects the faults a real network shows ([`fault`]),
//! and keeps a ledger of what it billed ([`ledger`]) so tests can prove nothing was bought twice.
//! Beyond clean faults it reproduces what real vendors do to a client's money: answers billed but
//! sent too late to be seen ([`SandboxConfig::late_bill_rate`]), billed answers without a usable
//! report ([`SandboxConfig::unusable_rate`]), gateway 503/429s with `Retry-After`
//! ([`SandboxConfig::gateway_error_rate`]) and maintenance windows ([`Sandbox::set_outage`]).
//! Start it in-process with [`Sandbox::start`] (or [`Sandbox::start_in_thread`] from sync code),
//! or from the command line with `vmr sandbox`.

mod answer;
pub mod fault;
pub mod ledger;
mod server;
pub mod synth;

pub use ledger::{Ledger, VinLedger};
pub use server::{GENERATE_PATH, GET_PATH};
pub use synth::{AgingTruth, Fate, VinTruth, aging_truth, truth, truth_with_rate};

use crate::api::Secret;
use anyhow::Context as _;
use server::Shared;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The fixed sandbox account, printed at start so anyone can call it.
pub const DEFAULT_APP_ID: &str = "vmr-sandbox";
/// The fixed sandbox secret. Not a secret: the sandbox guards nothing.
pub const DEFAULT_APP_SECRET: &str = "vmr-sandbox-secret";

/// How the sandbox behaves.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Seeds every report, outcome and rollback.
    pub seed: u64,
    /// Added before answering each vendor call.
    pub latency: Duration,
    /// When a deferred report becomes ready.
    pub ready_after: ReadyAfter,
    /// Probability that a vendor call gets an injected fault.
    pub fault_rate: f64,
    /// How long a stall fault, or a late answer, hangs before answering.
    pub stall: Duration,
    /// Probability that a generate that is billed (code 200) is answered only after `stall`: the
    /// task exists and the call is in the ledger (`late_billed`, per VIN `late_generate` and
    /// `late_request_ids`), but a client with a shorter timeout never sees the answer.
    pub late_bill_rate: f64,
    /// Apply `late_bill_rate` to billed gets too (per VIN `late_get`).
    pub late_bill_get: bool,
    /// Probability that a vendor call (either endpoint) is refused by a gateway before anything
    /// is checked or billed: HTTP 503 or 429 (half each) with a JSON body and `Retry-After`
    /// (ledger `gateway_errors`).
    pub gateway_error_rate: f64,
    /// The `Retry-After` seconds of a gateway error.
    pub retry_after_secs: u64,
    /// Start in a maintenance window: every vendor call answers HTTP 200, code 500, unbilled
    /// (ledger `outage_answers`). Switch it at run time with [`Sandbox::set_outage`] or
    /// `POST /__sandbox/outage`.
    pub outage: bool,
    /// Probability that a generate that would succeed is billed but answered
    /// `{"code":200,"msg":"成功","taskNo":..,"data":{}}`: no requestId, no report (ledger
    /// `unusable`, per VIN `unusable`).
    pub unusable_rate: f64,
    /// Billable calls before every call answers 603; `None` is unlimited.
    pub balance: Option<u64>,
    /// The app id the sandbox accepts.
    pub app_id: String,
    /// The app secret a call's sign must be made with.
    pub app_secret: Secret,
    /// Share of VINs whose report comes inline from generate.
    pub inline_rate: f64,
    /// Every this many calls that pass the throttle, a throttle window opens (an account
    /// quota): for `throttle_secs` every vendor call answers HTTP 429 with `Retry-After` (the
    /// whole seconds left in the window), never billed (ledger `throttled`,
    /// `throttle_windows`). 0 is off.
    pub throttle_every: u64,
    /// How long a throttle window lasts.
    pub throttle_secs: u64,
    /// Probability that a billed call (either endpoint) is answered HTTP 504 by the gateway,
    /// as one that forwarded the request and gave up waiting (ledger `gateway_504`, per VIN
    /// `gateway_504_generate`, `gateway_504_get`).
    pub gateway_504_rate: f64,
    /// Share of VINs whose billed answers carrying a report are not strict JSON: the REPORT's
    /// `brand_name` holds raw control characters or GBK bytes, the same every time for the VIN
    /// ([`raw_brand`]; ledger `raw_bodies`).
    pub raw_body_rate: f64,
    /// Share of VINs whose gets are billed but never hold a report (`{"code":200,"data":null}`,
    /// the same every time for the VIN; chosen by a hash of the VIN and the seed, see
    /// [`SandboxConfig::unusable_get`]).
    pub unusable_get_rate: f64,
    /// How far a VIN's report moves on between two purchases of it: the n-th purchase sells the
    /// report as it stands (n - 1) × `report_age` after the first (newer visits, for a few
    /// vehicles a new accident or a rolled-back history: `synth::report_aged`). Whole days;
    /// zero sells the same report every time. Changes report content only, never the clock the
    /// sign check uses.
    pub report_age: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            seed: 0,
            latency: Duration::ZERO,
            ready_after: ReadyAfter::Polls(1),
            fault_rate: 0.0,
            stall: Duration::from_secs(60),
            late_bill_rate: 0.0,
            late_bill_get: false,
            gateway_error_rate: 0.0,
            retry_after_secs: 1,
            outage: false,
            unusable_rate: 0.0,
            balance: None,
            app_id: DEFAULT_APP_ID.to_owned(),
            app_secret: Secret::new(DEFAULT_APP_SECRET),
            inline_rate: synth::DEFAULT_INLINE_RATE,
            report_age: Duration::ZERO,
            throttle_every: 0,
            throttle_secs: 4,
            gateway_504_rate: 0.0,
            raw_body_rate: 0.0,
            unusable_get_rate: 0.0,
        }
    }
}

impl SandboxConfig {
    /// How many days the report of a VIN's `nth` purchase (1 for the first) has moved on.
    pub fn age_days(&self, nth: u64) -> u32 {
        let days = self.report_age.as_secs() / 86_400;
        u32::try_from(days.saturating_mul(nth.saturating_sub(1))).unwrap_or(u32::MAX)
    }

    /// What this sandbox does for `vin` (uses this config's seed and inline rate).
    pub fn truth(&self, vin: &str) -> VinTruth {
        truth_with_rate(vin, self.seed, self.inline_rate)
    }

    /// Whether `vin`'s gets are billed without a report (`unusable_get_rate`).
    pub fn unusable_get(&self, vin: &str) -> bool {
        self.unusable_get_rate > 0.0
            && synth::unit(vin, self.seed, b"unusable-get") < self.unusable_get_rate
    }

    /// The raw `brand_name` bytes this sandbox puts in `vin`'s billed reports, if the VIN is
    /// one of `raw_body_rate`'s (see [`raw_brand`]).
    pub fn raw_brand(&self, vin: &str) -> Option<RawBrand> {
        raw_brand(vin, self.seed, self.raw_body_rate)
    }
}

/// How a VIN's billed reports break strict JSON (`--raw-body-rate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBrand {
    /// The REPORT's `brand_name` as bytes on the wire: the brand with a raw line break and tab
    /// inside the string, or the brand in GBK.
    pub bytes: Vec<u8>,
    /// `true` for GBK bytes, `false` for raw control characters.
    pub gbk: bool,
}

/// The raw `brand_name` of `vin`'s billed reports when `vin` is among `rate`'s share of VINs
/// (chosen by a hash of the VIN and the seed, so the same every time): half get raw control
/// characters, half GBK bytes.
pub fn raw_brand(vin: &str, seed: u64, rate: f64) -> Option<RawBrand> {
    if rate <= 0.0 || synth::unit(vin, seed, b"raw-body") >= rate {
        return None;
    }
    let brand = synth::brand_for_wmi(&synth::wmi(vin));
    let gbk = synth::unit(vin, seed, b"raw-kind") < 0.5;
    let bytes = if gbk {
        encoding_rs::GBK.encode(brand).0.into_owned()
    } else {
        format!("{brand}\n\t(维修厂录入)").into_bytes()
    };
    Some(RawBrand { bytes, gbk })
}

/// The fault rates of a running sandbox, as [`SandboxConfig`] sets them at start; change them
/// while it runs with [`Sandbox::set_faults`] (a test's fault schedule).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// [`SandboxConfig::fault_rate`].
    pub fault_rate: f64,
    /// [`SandboxConfig::late_bill_rate`].
    pub late_bill_rate: f64,
    /// [`SandboxConfig::gateway_error_rate`].
    pub gateway_error_rate: f64,
    /// [`SandboxConfig::unusable_rate`].
    pub unusable_rate: f64,
}

impl Faults {
    /// The rates `cfg` starts with.
    pub fn of(cfg: &SandboxConfig) -> Faults {
        Faults {
            fault_rate: cfg.fault_rate,
            late_bill_rate: cfg.late_bill_rate,
            gateway_error_rate: cfg.gateway_error_rate,
            unusable_rate: cfg.unusable_rate,
        }
    }
}

/// When a deferred report becomes ready for get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyAfter {
    /// This long after its generate call.
    Duration(Duration),
    /// After this many gets answered 701.
    Polls(u32),
}

impl FromStr for ReadyAfter {
    type Err = anyhow::Error;

    /// `3` is three polls; `500ms`, `2s`, `1m` are durations.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u32>() {
            return Ok(ReadyAfter::Polls(n));
        }
        humantime::parse_duration(s)
            .map(ReadyAfter::Duration)
            .with_context(|| {
                format!("ready-after {s:?}: give a number of polls (e.g. 2) or a duration (e.g. 500ms, 2s)")
            })
    }
}

/// A running sandbox server. Dropping it stops the server.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sandbox {
    /// Starts serving on `listen` (port 0 picks a free port) on the current tokio runtime.
    pub async fn start(cfg: SandboxConfig, listen: SocketAddr) -> anyhow::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("sandbox: cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = server::router(shared.clone());
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("sandbox server stopped: {e}");
            }
        });
        Ok(Sandbox {
            addr,
            shared,
            stop: Some(stop),
            thread: None,
        })
    }

    /// Starts serving on a background thread with its own runtime, for sync code (tests,
    /// benchmarks, running the vmr binary as a child process against it).
    pub fn start_in_thread(cfg: SandboxConfig, listen: SocketAddr) -> anyhow::Result<Sandbox> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vmr-sandbox".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Sandbox::start(cfg, listen).await {
                        Ok(sb) => {
                            let _ = ready_tx.send(Ok((sb.addr, sb.shared.clone())));
                            // Serve until the caller's handle is dropped.
                            let _ = stopped.await;
                            drop(sb);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // Stalled requests would hold a graceful shutdown: cancel them instead.
                rt.shutdown_timeout(Duration::from_millis(500));
            })
            .context("sandbox: cannot start its thread")?;
        let (addr, shared) = ready_rx
            .recv()
            .context("sandbox thread exited before it started serving")??;
        Ok(Sandbox {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the sandbox listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, what a client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration it started with (`outage` is the starting value; see [`Sandbox::outage`]).
    pub(crate) fn config(&self) -> &SandboxConfig {
        &self.shared.cfg
    }

    /// A snapshot of what was billed so far.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger()
    }

    /// Resets the remaining billable calls (`None`: unlimited), as a top-up would.
    pub fn set_balance(&self, balance: Option<u64>) {
        self.shared.set_balance(balance);
    }

    /// Starts (`true`) or ends a maintenance window: while on, every vendor call answers HTTP 200
    /// with `{"code":500,"msg":"系统维护,请稍候再试"}`, unbilled. Same as
    /// `POST /__sandbox/outage` with `{"outage": true}`.
    pub fn set_outage(&self, on: bool) {
        self.shared.set_outage(on);
    }

    /// Whether a maintenance window is on.
    pub fn outage(&self) -> bool {
        self.shared.outage()
    }

    /// Changes the fault rates from the next call on (calls under way keep theirs).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Stops the server (same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_parses_polls_and_durations() {
        assert_eq!("3".parse::<ReadyAfter>().ok(), Some(ReadyAfter::Polls(3)));
        assert_eq!(
            "500ms".parse::<ReadyAfter>().ok(),
            Some(ReadyAfter::Duration(Duration::from_millis(500)))
        );
        assert_eq!(
            "2s".parse::<ReadyAfter>().ok(),
            Some(ReadyAfter::Duration(Duration::from_secs(2)))
        );
        assert!("soon".parse::<ReadyAfter>().is_err());
    }
}
