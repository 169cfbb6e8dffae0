//! `vmr sandbox`: serve the simulated vendor API until Ctrl-C.
//!
//! Usage: `vmr sandbox [--listen 127.0.0.1:8080] [--seed N] [--latency 50ms] [--ready-after 2|2s]
//! [--fault-rate 0.1] [--stall 60s] [--late-bill-rate 0.05] [--late-bill-get]
//! [--gateway-error-rate 0.05] [--retry-after 1] [--outage] [--unusable-rate 0.01] [--balance N]
//! [--inline-rate 0.3] [--throttle-every N] [--throttle-secs S] [--gateway-504-rate 0.05]
//! [--raw-body-rate 0.05] [--unusable-get-rate 0.05] [--app-id ID] [--app-secret-file PATH]`. The secret comes from the file or `VMR_SANDBOX_APP_SECRET`, never
//! from a flag; without either, the fixed sandbox credentials are used and printed.

use crate::api::Secret;
use crate::sandbox::{DEFAULT_APP_ID, DEFAULT_APP_SECRET, ReadyAfter, Sandbox, SandboxConfig};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (keep it on loopback unless others must reach it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seed for the synthetic reports, outcomes and rollbacks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Delay before answering each vendor call, e.g. 50ms.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// When a deferred report is ready: a number of polls answered 701 (e.g. 2) or a duration
    /// after generate (e.g. 2s).
    #[arg(long, default_value = "1")]
    ready_after: ReadyAfter,
    /// Probability (0–1) that a vendor call gets an injected fault.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fault_rate: f64,
    /// How long a stall fault, or a late answer, hangs before answering.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stall: Duration,
    /// Probability (0–1) that a billed generate is answered only after --stall: billed, but a
    /// client with a shorter timeout never sees it.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    late_bill_rate: f64,
    /// Apply --late-bill-rate to billed gets too.
    #[arg(long)]
    late_bill_get: bool,
    /// Probability (0–1) that a vendor call is refused by the gateway: HTTP 503 or 429 with
    /// Retry-After, never billed.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    gateway_error_rate: f64,
    /// The Retry-After seconds of a gateway error.
    #[arg(long = "retry-after", value_name = "SECS", default_value_t = 1)]
    retry_after_secs: u64,
    /// Start in a maintenance window: every vendor call answers code 500 until
    /// POST /__sandbox/outage {"outage": false}.
    #[arg(long)]
    outage: bool,
    /// Probability (0–1) that a generate that would succeed is billed but answered with
    /// `data: {}` (no requestId, no report).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    unusable_rate: f64,
    /// Billable calls before every call answers 603 (unlimited if absent).
    #[arg(long)]
    balance: Option<u64>,
    /// Share (0–1) of VINs whose report comes inline from generate.
    #[arg(long, default_value_t = 0.3, value_parser = parse_rate)]
    inline_rate: f64,
    /// App id the sandbox accepts.
    #[arg(long, default_value = DEFAULT_APP_ID)]
    app_id: String,
    /// How far a VIN's report moves on each time it is bought again (whole days, e.g. 90d):
    /// newer visits, and for a few vehicles a new accident or a rolled-back history. Report
    /// content only; the sign check's clock is never changed.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    report_age: Duration,
    /// Every N calls, open a throttle window (an account quota): for --throttle-secs every
    /// call answers HTTP 429 with Retry-After, never billed. 0 = off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    throttle_every: u64,
    /// How long a throttle window lasts, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 4)]
    throttle_secs: u64,
    /// Probability (0–1) that a billed call is answered HTTP 504 by the gateway (it forwarded
    /// the call, the vendor billed it, the answer never came back).
    #[arg(long = "gateway-504-rate", default_value_t = 0.0, value_parser = parse_rate)]
    gateway_504_rate: f64,
    /// Share (0–1) of VINs whose billed reports are not strict JSON: brand_name with raw
    /// control characters or in GBK bytes, the same every time for a VIN.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    raw_body_rate: f64,
    /// Share (0–1) of VINs whose gets are billed but hold no report (`data: null`), every
    /// time.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    unusable_get_rate: f64,
}

/// The sandbox configuration the flags describe.
fn config(args: &Args, secret: Secret) -> SandboxConfig {
    SandboxConfig {
        seed: args.seed,
        latency: args.latency,
        ready_after: args.ready_after,
        fault_rate: args.fault_rate,
        stall: args.stall,
        late_bill_rate: args.late_bill_rate,
        late_bill_get: args.late_bill_get,
        gateway_error_rate: args.gateway_error_rate,
        retry_after_secs: args.retry_after_secs,
        outage: args.outage,
        unusable_rate: args.unusable_rate,
        balance: args.balance,
        app_id: args.app_id.clone(),
        app_secret: secret,
        inline_rate: args.inline_rate,
        report_age: args.report_age,
        throttle_every: args.throttle_every,
        throttle_secs: args.throttle_secs,
        gateway_504_rate: args.gateway_504_rate,
        raw_body_rate: args.raw_body_rate,
        unusable_get_rate: args.unusable_get_rate,
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a rate between 0 and 1")),
    }
}

/// The secret the sandbox accepts comes from the global `--app-secret-file` (else
/// `VMR_SANDBOX_APP_SECRET`, else the default sandbox secret).
pub(crate) fn run(args: Args, app_secret_file: Option<&Path>) -> anyhow::Result<u8> {
    let from_env = std::env::var("VMR_SANDBOX_APP_SECRET").ok();
    let secret = match (app_secret_file, from_env) {
        (Some(path), _) => {
            let s = crate::config::read_secret_file(path)
                .map_err(|e| crate::app::Failure::new(crate::app::exit::USAGE, format!("{e:#}")))?;
            Secret::new(s.trim_end_matches(['\r', '\n']))
        }
        (None, Some(s)) => Secret::new(s),
        (None, None) => Secret::new(DEFAULT_APP_SECRET),
    };
    let cfg = config(&args, secret);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let sandbox = Sandbox::start(cfg, args.listen).await?;
        let cfg = sandbox.config();
        let secret = if cfg.app_secret.expose() == DEFAULT_APP_SECRET {
            format!("{DEFAULT_APP_SECRET} (the default sandbox secret)")
        } else {
            "the one you supplied (not printed)".to_owned()
        };
        // One line for the admin paths: the banner stays five lines.
        crate::app::print(&format!(
            "vmr sandbox listening on {0}\n  app id:     {1}\n  app secret: {secret}\n  ledger:     {0}/__sandbox/ledger (outage switch: POST {0}/__sandbox/outage{2})\nCtrl-C to stop.\n",
            sandbox.base_url(),
            cfg.app_id,
            if sandbox.outage() { ", now ON" } else { "" }
        ))?;
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        crate::app::print("vmr sandbox: stopped\n")?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn cfg(argv: &[&str]) -> SandboxConfig {
        let cli = Cli::try_parse_from(std::iter::once("sandbox").chain(argv.iter().copied()))
            .expect("flags parse");
        config(&cli.args, Secret::new(DEFAULT_APP_SECRET))
    }

    #[test]
    fn defaults_keep_the_plain_vendor() {
        let c = cfg(&[]);
        let d = SandboxConfig::default();
        assert_eq!(c.late_bill_rate, d.late_bill_rate);
        assert_eq!(c.late_bill_get, d.late_bill_get);
        assert_eq!(c.gateway_error_rate, d.gateway_error_rate);
        assert_eq!(c.retry_after_secs, d.retry_after_secs);
        assert_eq!(c.outage, d.outage);
        assert_eq!(c.unusable_rate, d.unusable_rate);
        assert_eq!(c.stall, d.stall);
        assert_eq!(c.report_age, d.report_age);
        assert_eq!(c.age_days(2), 0, "reports do not move on unless asked");
    }

    #[test]
    fn the_report_age_is_whole_days_per_purchase() {
        let c = cfg(&["--report-age", "90d"]);
        assert_eq!(c.report_age, std::time::Duration::from_secs(90 * 86_400));
        assert_eq!((c.age_days(1), c.age_days(2), c.age_days(3)), (0, 90, 180));
        assert_eq!(cfg(&["--report-age", "36h"]).age_days(2), 1);
    }

    #[test]
    fn money_knobs_reach_the_config() {
        let c = cfg(&[
            "--late-bill-rate",
            "0.25",
            "--late-bill-get",
            "--gateway-error-rate",
            "0.5",
            "--retry-after",
            "7",
            "--outage",
            "--unusable-rate",
            "0.125",
            "--stall",
            "2s",
        ]);
        assert_eq!(c.late_bill_rate, 0.25);
        assert!(c.late_bill_get);
        assert_eq!(c.gateway_error_rate, 0.5);
        assert_eq!(c.retry_after_secs, 7);
        assert!(c.outage);
        assert_eq!(c.unusable_rate, 0.125);
        assert_eq!(c.stall, Duration::from_secs(2));
        assert!(Cli::try_parse_from(["sandbox", "--unusable-rate", "-0.1"]).is_err());
    }
}
