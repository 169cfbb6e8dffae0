//! What every command shares: logging, the runtime, the checkpoint, the client, the exit code.
//!
//! Commands in `cmd/` stay thin by calling these: [`init_logging`] once, [`open_checkpoint`] for
//! the one writable checkpoint of the state directory, [`connect`] for the vendor client (or the
//! in-process sandbox with `--sandbox`), and [`Failure`] to end with a specific exit code.

use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::api::{Client, ClientOptions};
use crate::checkpoint::{self, Checkpoint, Recovery};
use crate::config::{LogFormat, Settings};
use crate::engine::{Engine, EngineOptions, Limiter, RetryPolicy};
#[cfg(feature = "sandbox")]
use crate::sandbox::{Sandbox, SandboxConfig};

/// Built without the sandbox feature there is never an in-process sandbox to keep alive.
#[cfg(not(feature = "sandbox"))]
pub(crate) enum Sandbox {}

/// Exit codes (docs/design.md, "Exit codes").
pub(crate) mod exit {
    pub(crate) const OK: u8 = 0;
    pub(crate) const OTHER: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const REFUSED: u8 = 3;
    pub(crate) const WORK_REMAINS: u8 = 75;

    /// The exit code of a run the engine stopped early, for `reason`: the engine says why it
    /// stopped, this layer decides what that means to cron.
    pub(crate) fn of_stop(reason: &crate::engine::StopReason) -> u8 {
        use crate::engine::StopReason;
        match reason {
            StopReason::Vendor { .. } | StopReason::BadCredentials { .. } => REFUSED,
            StopReason::Unavailable { .. }
            | StopReason::Budget { .. }
            | StopReason::Throttled { .. }
            | StopReason::CheckpointLost { .. } => WORK_REMAINS,
            StopReason::Signal(sig) => (128 + sig) as u8,
        }
    }
}

/// An error that ends the process with a chosen exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The exit code for an error that reached the top.
pub(crate) fn exit_code_of(e: &anyhow::Error) -> u8 {
    if let Some(f) = e.downcast_ref::<Failure>() {
        return f.code;
    }
    if e.downcast_ref::<crate::input::InputError>().is_some() {
        return exit::USAGE;
    }
    if e.downcast_ref::<crate::export::ExportError>()
        .is_some_and(|e| e.is_usage())
    {
        return exit::USAGE;
    }
    // The checkpoint's database is out of reach: cron should try again later.
    if e.chain()
        .filter_map(|c| c.downcast_ref::<crate::checkpoint::CheckpointError>())
        .any(|c| c.is_outage())
    {
        return exit::WORK_REMAINS;
    }
    match e.downcast_ref::<crate::checkpoint::CheckpointError>() {
        Some(
            crate::checkpoint::CheckpointError::Missing(_)
            | crate::checkpoint::CheckpointError::TooNew { .. },
        ) => return exit::USAGE,
        // Another vmr holds the state directory: cron should simply try again later.
        Some(crate::checkpoint::CheckpointError::Locked { .. }) => return exit::WORK_REMAINS,
        #[cfg(feature = "pg")]
        Some(crate::checkpoint::CheckpointError::Pg(e)) if e.is_usage() => return exit::USAGE,
        _ => {}
    }
    if let Some(crate::ingest::IngestError::Input(_) | crate::ingest::IngestError::Incomplete(_)) =
        e.downcast_ref::<crate::ingest::IngestError>()
    {
        return exit::USAGE;
    }
    exit::OTHER
}

/// Whether text logs may carry ANSI colours: only when stderr is a terminal and `NO_COLOR` is
/// unset or empty (<https://no-color.org>). Cron mail, files and log shippers get plain text.
pub(crate) fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs go to stderr, as text or one JSON object per line. `RUST_LOG` refines the level.
pub(crate) fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Tells the user something at the end of a stage: plain lines on stderr, or one JSON log object
/// per report under `--log-format json` (so a log shipper never sees a stray text line).
pub(crate) fn report(format: LogFormat, text: &str) {
    let text = text.trim_end();
    match format {
        LogFormat::Text => eprintln!("{text}"),
        LogFormat::Json => tracing::info!(report = text, "summary"),
    }
}

/// Writes `text` to stdout. A closed stdout (`vmr status --json | head`) is not an error: like
/// ripgrep, vmr then stops quietly with exit 0 instead of panicking on a broken pipe.
pub(crate) fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

/// A multi-threaded runtime for the network commands.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens the state directory's checkpoint for writing, and tells the user about VINs found in
/// flight from a process that died.
pub(crate) fn open_checkpoint(settings: &Settings) -> Result<(Checkpoint, Recovery)> {
    let (ckpt, rec) = Checkpoint::open_at(&settings.place)?;
    if !rec.uncertain.is_empty() {
        tracing::warn!(
            count = rec.uncertain.len(),
            "VINs were in flight when the last process died and are now uncertain (the vendor may have billed them); `vmr status` lists them, --resubmit-uncertain sends them again"
        );
    }
    Ok((ckpt, rec))
}

/// The vendor account a run calls: `sandbox` for any `--sandbox` run (whatever its port), else
/// the base URL's origin (scheme, lower-case host, port unless the default) and the app id.
pub(crate) fn account_name(settings: &Settings) -> Result<String> {
    if settings.sandbox {
        return Ok("sandbox".to_owned());
    }
    let url = url::Url::parse(settings.base_url.trim()).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("--base-url {:?} is not a URL: {e}", settings.base_url),
        )
    })?;
    let app_id = settings.app_id.as_deref().unwrap_or_default();
    Ok(format!(
        "{} app {app_id}",
        url.origin().ascii_serialization()
    ))
}

/// Binds the checkpoint to the account this run calls, or refuses (exit 2, before any call)
/// when it belongs to another: reports bought from one account (or from the sandbox) must
/// never pass for another's.
pub(crate) fn check_account(ckpt: &Checkpoint, settings: &Settings) -> Result<()> {
    let want = account_name(settings)?;
    let reader = ckpt.reader()?;
    let dir = &settings.place;
    match checkpoint::account(&reader)? {
        Some(have) if have == want => Ok(()),
        Some(have) => Err(Failure::new(
            exit::USAGE,
            format!(
                "state directory {dir} belongs to vendor account \"{have}\", but this run would call \"{want}\"; nothing was sent. Use another --state for this account{}",
                if have == "sandbox" {
                    " (sandbox runs keep their reports apart from real ones)"
                } else {
                    ""
                }
            ),
        )
        .into()),
        None if checkpoint::has_calls(&reader)? && !settings.adopt_account => Err(Failure::new(
            exit::USAGE,
            format!(
                "state directory {dir} holds vendor calls made before vmr recorded which account a state belongs to; nothing was sent. If they were made with \"{want}\", run once with --adopt-account to bind it; otherwise use another --state"
            ),
        )
        .into()),
        None => {
            ckpt.bind_account(&want)?;
            tracing::info!(account = want.as_str(), "checkpoint bound to its vendor account");
            Ok(())
        }
    }
}

/// Checks that the tables can be written to `--out` before anything is bought: `--out` is a
/// writable directory, or can be created in the nearest directory above it that exists. Nothing
/// is left behind (the directory itself is created by the export).
pub(crate) fn check_out_writable(out: &std::path::Path) -> Result<()> {
    // An object store: the bucket is there and the credentials may list it.
    if crate::export::lake::check_reachable(out)? {
        return Ok(());
    }
    let fail = |why: String| -> anyhow::Error {
        Failure::new(
            exit::USAGE,
            format!(
                "--out {}: cannot write the tables there ({why}); nothing was bought",
                out.display()
            ),
        )
        .into()
    };
    let mut dir = out;
    loop {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
            Err(_) => match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p,
                _ => {
                    dir = std::path::Path::new(".");
                    break;
                }
            },
        }
    }
    let probe = dir.join(format!(".vmr-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| fail(e.to_string()))
}

/// The vendor client, and the in-process sandbox it talks to when `--sandbox` is set.
pub(crate) async fn connect(settings: &Settings) -> Result<(Client, Option<Sandbox>)> {
    let opts = |base_url: String| ClientOptions {
        base_url,
        connect_timeout: settings.timeout.min(Duration::from_secs(10)),
        timeout: settings.timeout,
        pool_size: settings.concurrency,
        max_body: settings.max_body,
    };
    #[cfg(not(feature = "sandbox"))]
    if settings.sandbox {
        return Err(Failure::new(
            exit::USAGE,
            "--sandbox: this vmr was built without the sandbox feature",
        )
        .into());
    }
    #[cfg(feature = "sandbox")]
    if settings.sandbox {
        let cfg = SandboxConfig::default();
        let creds = crate::api::Credentials::new(cfg.app_id.clone(), cfg.app_secret.clone());
        let sb = Sandbox::start(cfg, "127.0.0.1:0".parse().expect("a socket address"))
            .await
            .context("cannot start the in-process sandbox")?;
        tracing::info!(base_url = %sb.base_url(), "sandbox started in-process");
        let client = Client::new(&opts(sb.base_url()), creds)?;
        return Ok((client, Some(sb)));
    }
    let creds = settings
        .credentials()
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let client = Client::new(&opts(settings.base_url.clone()), creds)?;
    Ok((client, None))
}

/// Builds the engine for a run. On a PostgreSQL state this process becomes one of its workers:
/// its VINs claimed, its rate the account's shared one, its budget the `--run-id`'s.
pub(crate) fn engine(
    settings: &Settings,
    command: &str,
    client: Client,
    ckpt: Checkpoint,
    resubmit_uncertain: bool,
) -> Result<Arc<Engine>> {
    let opts = EngineOptions {
        concurrency: settings.concurrency,
        retry: RetryPolicy::new(settings.max_attempts),
        poll_interval: settings.poll_interval,
        poll_timeout: settings.poll_timeout,
        max_billed: settings.billed_budget(),
        budget_name: budget_name(settings),
        resubmit_uncertain,
        bad_request_streak: settings.bad_request_streak,
        timeout: settings.timeout,
        max_wait: settings.max_wait,
    };
    let spec = checkpoint::WorkerSpec {
        command: command.to_owned(),
        account: account_name(settings)?,
        rate: settings.rate,
        burst: settings.burst,
        timeout: settings.timeout,
        budget: settings.run_id.clone().zip(opts.max_billed),
    };
    // On a PostgreSQL state this process becomes one of its workers.
    let sharing = checkpoint::Sharing::join(&settings.place, spec)?;
    let limiter = Limiter::for_sharing(settings.rate, settings.burst, &sharing);
    let mut ckpt = ckpt;
    ckpt.set_sharing(sharing);
    Ok(Arc::new(Engine::new(client, ckpt, limiter, opts)?))
}

/// How the run's budget is named in messages: `--max-billed N`, or `--max-spend A CUR (N
/// calls at P)` when the spend limit is the tighter one.
fn budget_name(settings: &Settings) -> String {
    match (&settings.price, settings.max_spend) {
        (Some(p), Some(m)) if settings.billed_budget() != settings.max_billed => format!(
            "--max-spend {} ({} billed calls at {} per call)",
            p.amount(m),
            crate::price::count(p.calls_for(m)),
            p.per_call_text()
        ),
        _ => format!("--max-billed {}", settings.max_billed.unwrap_or_default()),
    }
}

/// The exit code once the network work is over: the stop reason's, else 0 when every VIN is
/// final, else 75.
pub(crate) fn finish_code(engine: &Engine, counts: &checkpoint::StateCounts) -> u8 {
    if let Some(r) = engine.stop.reason() {
        return exit::of_stop(&r);
    }
    // The budget left something unbought (a queued VIN, or one due to be bought again).
    let budget_reached = engine
        .counters
        .generate_budget_spent
        .load(std::sync::atomic::Ordering::SeqCst);
    if counts.open() == 0 && !budget_reached {
        exit::OK
    } else {
        exit::WORK_REMAINS
    }
}

/// The one summary every network run ends with.
pub(crate) fn summary(
    engine: &Engine,
    counts: &checkpoint::StateCounts,
    started: Instant,
    price: Option<&crate::price::Price>,
) -> String {
    let c = &engine.counters;
    let mut s = String::from("VINs:");
    for (k, v) in counts.iter().filter(|(_, v)| *v > 0) {
        s.push_str(&format!(" {k} {v},"));
    }
    s.pop();
    s.push_str(&format!(
        "\nthis run: {} calls, {} billed, {} with unknown outcome, {:.1}s",
        c.calls.load(Ordering::Relaxed),
        c.billed.load(Ordering::Relaxed),
        c.unknown.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    ));
    if let Some(p) = price {
        let billed = c.billed.load(Ordering::Relaxed);
        let unknown = c.unknown.load(Ordering::Relaxed);
        s.push_str(&format!(
            "\nthis run spent {} ({} billed calls at {} per call)",
            p.amount(p.cost(billed)),
            crate::price::count(billed),
            p.per_call_text()
        ));
        if unknown > 0 {
            s.push_str(&format!(
                ", and up to {} more if the vendor billed the {} calls whose answer never came",
                p.amount(p.cost(unknown)),
                crate::price::count(unknown)
            ));
        }
    }
    let (pauses, longest) = engine.pause.asked_count();
    if pauses > 0 {
        s.push_str(&format!(
            "\nthe vendor asked to wait {pauses} times (Retry-After, longest {}): every call of the account paused",
            humantime::format_duration(longest)
        ));
    }
    if let Some(r) = engine.stop.reason() {
        s.push_str(&format!("\nstopped: {}", describe_stop(&r)));
    } else if c.generate_budget_spent.load(Ordering::SeqCst) {
        s.push_str(&format!(
            "\nstopped buying: {} reached (calls billed, possibly billed, and one get kept for each pending report); run again to continue",
            engine.opts.budget_name
        ));
    }
    s
}

/// One line naming the stop, the vendor's words and what to do.
pub(crate) fn describe_stop(r: &crate::engine::StopReason) -> String {
    use crate::engine::StopReason::*;
    match r {
        Vendor { code, message } => format!(
            "the vendor answered {code} ({message}): {}. No further calls were sent; queued VINs stay queued",
            crate::api::outcome::code_advice(*code)
        ),
        BadCredentials { streak, message } => format!(
            "the vendor answered 400 ({message}) to {streak} calls in a row: the sign, the app secret (VMR_APP_SECRET or --app-secret-file) or this machine's clock is wrong. No further calls were sent and no VIN was failed for it; fix it and run again"
        ),
        Unavailable { streak, last } => format!(
            "the vendor is unavailable: {streak} calls in a row without a usable answer (last: {last}). No further calls were sent and no VIN was failed for it; run again later"
        ),
        Throttled { wait, max_wait } => format!(
            "the vendor asked to wait {} (Retry-After), longer than --max-wait {} allows in all. No further calls were sent and no VIN was failed for it; run again after that",
            humantime::format_duration(*wait),
            humantime::format_duration(*max_wait)
        ),
        CheckpointLost { detail } => format!(
            "the checkpoint's database went out of reach ({detail}). No further calls were sent; answers that may have been billed are kept in the spill directory (--spill-dir) and written to the checkpoint by the next run; run again once the database is back"
        ),
        Budget { billed } => format!(
            "the run's budget (--max-billed or --max-spend) is reached ({billed} calls billed in this run); run again to continue"
        ),
        Signal(sig) => format!(
            "signal {} received; in-flight calls were recorded; run again to continue",
            if *sig == 2 { "SIGINT" } else { "SIGTERM" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new(""))));
    }

    #[test]
    fn a_stop_ends_with_its_exit_code() {
        use crate::engine::StopReason;
        let vendor = StopReason::Vendor {
            code: 603,
            message: "余额不足".into(),
        };
        let credentials = StopReason::BadCredentials {
            streak: 5,
            message: String::new(),
        };
        let unavailable = StopReason::Unavailable {
            streak: 20,
            last: String::new(),
        };
        assert_eq!(exit::of_stop(&vendor), 3);
        assert_eq!(exit::of_stop(&credentials), 3);
        assert_eq!(exit::of_stop(&unavailable), 75);
        assert_eq!(exit::of_stop(&StopReason::Budget { billed: 1 }), 75);
        let throttled = StopReason::Throttled {
            wait: std::time::Duration::from_secs(600),
            max_wait: std::time::Duration::from_secs(60),
        };
        assert_eq!(exit::of_stop(&throttled), 75);
        assert_eq!(exit::of_stop(&StopReason::Signal(15)), 143);
        assert_eq!(exit::of_stop(&StopReason::Signal(2)), 130);
    }
}
