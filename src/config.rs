//! Settings: every option written once, read from flags, environment and `vmr.toml`.
//!
//! [`Options`] is the one list of options: clap reads it from flags and `VMR_*` variables (a
//! flag wins over its variable) and serde reads the same struct from `vmr.toml`, kebab-case
//! keys, unknown keys refused. [`Settings::resolve`] stacks the layers with [`Combine`] (flags
//! and environment, then the file, then [`defaults`], the one table of defaults, `--sandbox`
//! variants included, which `--help` also shows) and checks the result. The app secret is never
//! an option: only `env_credentials` reads it, or `--app-secret-file` names its file, and a
//! file key that looks like a secret is refused by name (a file of options is too easily shared).

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{Credentials, Secret};

/// Parses `500ms`, `90s`, `30m`, `24h`, `90d` and combinations (`1h30m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write it like 500ms, 90s, 30m, 24h or 90d")
    })
}

/// Output formats of `export` and `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Apache Parquet files.
    Parquet,
    /// Comma-separated text.
    Csv,
    /// JSON Lines: one JSON object per line.
    Jsonl,
}

/// How `export` lays the tables out under `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One file per table and format, rewritten whole by every export.
    Flat,
    /// `<table>/fetched_month=YYYY-MM/part-<export-id>-<n>.parquet`, append-only: each export
    /// adds only the reports not yet in the destination (see docs/lake.md).
    Hive,
}

/// The file's `format = "parquet,csv"`: the value names of `--format`, in any case,
/// comma-separated; a repeated format counts once.
pub(crate) fn parse_formats(s: &str) -> Result<Vec<Format>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let f = <Format as ValueEnum>::from_str(part, true)
            .map_err(|_| format!("unknown format {part:?}; use parquet, csv or jsonl"))?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err("no format given; use parquet, csv or jsonl".into());
    }
    Ok(out)
}

/// [`parse_formats`] for serde.
fn format_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Format>>, D::Error> {
    let s = String::deserialize(d)?;
    parse_formats(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// clap's parser of one `--format` value, on the value trimmed, so `--format "parquet, csv"`
/// reads as it always did; `--help` and errors still list the possible values.
#[derive(Clone, Default)]
struct FormatName(clap::builder::EnumValueParser<Format>);

impl clap::builder::TypedValueParser for FormatName {
    type Value = Format;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Format, clap::Error> {
        let trimmed = value
            .to_str()
            .map_or(value, |s| std::ffi::OsStr::new(s.trim()));
        self.0.parse_ref(cmd, arg, trimmed)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// The format of log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text, for a person.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where to ping: a healthchecks-style check URL. It holds a token, so it is shown (in logs,
/// errors and `Debug`) as its scheme and host only.
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl(url::Url);

impl PingUrl {
    /// Parses `--ping-url`: an http or https URL.
    pub(crate) fn parse(s: &str) -> Result<PingUrl, String> {
        let url = url::Url::parse(s.trim())
            .map_err(|e| format!("--ping-url is not a URL ({e}); the value is not shown"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(
                "--ping-url must be an http:// or https:// URL; the value is not shown".into(),
            );
        }
        Ok(PingUrl(url))
    }

    /// Scheme and host: what may be logged.
    pub(crate) fn shown(&self) -> String {
        format!(
            "{}://{}",
            self.0.scheme(),
            self.0.host_str().unwrap_or_default()
        )
    }

    /// The URL with `suffix` as a last path segment (none: the URL itself).
    pub(crate) fn with(&self, suffix: Option<&str>) -> url::Url {
        let mut url = self.0.clone();
        if let Some(s) = suffix
            && let Ok(mut segments) = url.path_segments_mut()
        {
            segments.pop_if_empty().push(s);
        }
        url
    }
}

impl std::fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PingUrl({} …)", self.shown())
    }
}

/// One layer of options over another, as in uv's `uv-settings`: `a.combine(b)` keeps what `a`
/// gives and takes the rest from `b`.
pub(crate) trait Combine {
    #[must_use]
    fn combine(self, other: Self) -> Self;
}

impl<T> Combine for Option<T> {
    fn combine(self, other: Self) -> Self {
        self.or(other)
    }
}

/// A switch is on when any layer turns it on (flags can only turn one on).
impl Combine for bool {
    fn combine(self, other: Self) -> Self {
        self || other
    }
}

/// What an option's type means outside Rust: what a config-file error says the key takes
/// (never quoting the value given), and how `--help` shows a default.
trait OptionType {
    /// Follows the key's name in a config-file error.
    const WANTS: &'static str;
    /// The value as `--help` shows a default (`None`: no default to show).
    fn shown(&self) -> Option<String>;
}

macro_rules! option_types {
    ($($ty:ty => $wants:expr, |$v:ident| $show:expr;)*) => {$(
        impl OptionType for $ty {
            const WANTS: &'static str = $wants;
            fn shown(&self) -> Option<String> {
                self.as_ref().map(|$v| $show)
            }
        }
    )*};
}

const WHOLE: &str = "takes a whole number of at least 0, without quotes";
const TEXT: &str = "takes text in double quotes";
option_types! {
    Option<u32> => WHOLE, |n| n.to_string();
    Option<u64> => WHOLE, |n| n.to_string();
    Option<usize> => WHOLE, |n| n.to_string();
    Option<String> => TEXT, |s| s.clone();
    Option<PathBuf> => TEXT, |p| p.display().to_string();
    Option<f64> => "takes a number like 2.5, without quotes", |x| x.to_string();
    Option<Duration> => "is not a duration; write it like \"500ms\", \"90s\", \"30m\", \"24h\" or \"90d\"",
        |d| show_duration(*d);
    Option<LogFormat> => "takes \"text\" or \"json\"", |f| value_name(f);
    Option<Layout> => "takes \"flat\" or \"hive\"", |l| value_name(l);
    Option<Vec<Format>> => "is not a list of formats; write it like \"parquet,csv\" (parquet, csv, jsonl)",
        |fs| fs.iter().map(value_name).collect::<Vec<_>>().join(",");
}

impl OptionType for bool {
    const WANTS: &'static str = "takes true or false, without quotes";
    fn shown(&self) -> Option<String> {
        None
    }
}

/// The name clap (and the file) give a value of a `ValueEnum`.
fn value_name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// `30m`, `24h`, `1s`: the largest unit that divides the duration.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// Declares [`Options`] and, from the same field list, its [`Combine`] (field by field), what
/// each file key takes and the values `--help` shows.
macro_rules! options {
    (
        $(#[$attr:meta])*
        pub struct $name:ident { $($(#[$fattr:meta])* pub $field:ident: $ty:ty,)* }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $($(#[$fattr])* pub $field: $ty,)*
        }

        impl Combine for $name {
            fn combine(self, other: Self) -> Self {
                $name { $($field: self.$field.combine(other.$field),)* }
            }
        }

        impl $name {
            /// What the file's `key` takes, from its field's type.
            fn wants(key: &str) -> Option<&'static str> {
                let field = key.replace('-', "_");
                $(if field == stringify!($field) {
                    return Some(<$ty as OptionType>::WANTS);
                })*
                None
            }

            /// Each value as `--help` shows it, by clap id (the field's name).
            fn shown(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$((stringify!($field), self.$field.shown()),)*]
            }
        }
    };
}

options! {
    /// Every option, written once: clap reads it from flags and environment variables, serde
    /// from `vmr.toml` (the same names, kebab-case). Every field is optional here; [`defaults`]
    /// fills the gaps, and its values end each option's `--help` ([`Options::show_defaults`]).
    #[derive(Args, Deserialize, Debug, Clone, Default)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Options {
        /// Config file (default: ./vmr.toml when present).
        #[arg(long, global = true, env = "VMR_CONFIG", value_name = "FILE")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// State directory holding the checkpoint, or a PostgreSQL schema:
        /// postgres://user@host:port/db?schema=NAME (password from PGPASSWORD or ~/.pgpass).
        #[arg(long, global = true, env = "VMR_STATE", value_name = "DIR|URL")]
        pub state: Option<PathBuf>,
        /// Where the tables go: a directory, or s3://bucket/prefix (credentials from the
        /// standard AWS environment).
        #[arg(long, global = true, env = "VMR_OUT", value_name = "DIR")]
        pub out: Option<PathBuf>,
        /// With a PostgreSQL state: where billed answers are kept on local disk while the
        /// database is out of reach, replayed into it by this run or the next.
        #[arg(long, global = true, env = "VMR_SPILL_DIR", value_name = "DIR")]
        pub spill_dir: Option<PathBuf>,
        /// Vendor base URL.
        #[arg(long, global = true, env = "VMR_BASE_URL", value_name = "URL")]
        pub base_url: Option<String>,
        /// Run against the built-in sandbox, started in-process on an ephemeral port.
        #[arg(long, global = true)]
        #[serde(default)]
        pub sandbox: bool,
        /// Calls per second, shared by generate and get; 0 = unlimited.
        #[arg(long, global = true, env = "VMR_RATE", value_name = "N")]
        pub rate: Option<u32>,
        /// Calls allowed at once above the steady rate.
        #[arg(long, global = true, env = "VMR_BURST", value_name = "N")]
        pub burst: Option<u32>,
        /// Calls in flight at once.
        #[arg(long, global = true, env = "VMR_CONCURRENCY", value_name = "N")]
        pub concurrency: Option<usize>,
        /// Timeout of one call.
        #[arg(long, global = true, env = "VMR_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
        #[serde(default, with = "humantime_serde")]
        pub timeout: Option<Duration>,
        /// Attempts per call on transient faults before the VIN fails.
        #[arg(long, global = true, env = "VMR_MAX_ATTEMPTS", value_name = "N")]
        pub max_attempts: Option<u32>,
        /// How long `run` keeps polling before it exports what it has.
        #[arg(long, global = true, env = "VMR_MAX_WAIT", value_parser = parse_duration, value_name = "DURATION")]
        #[serde(default, with = "humantime_serde")]
        pub max_wait: Option<Duration>,
        /// First wait between polls of a pending report; doubles up to 16x.
        #[arg(long, global = true, env = "VMR_POLL_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
        #[serde(default, with = "humantime_serde")]
        pub poll_interval: Option<Duration>,
        /// A report not ready this long after submission expires.
        #[arg(long, global = true, env = "VMR_POLL_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
        #[serde(default, with = "humantime_serde")]
        pub poll_timeout: Option<Duration>,
        /// At most this many calls billed (or possibly billed) in this run; a generate is sent
        /// only while a get is left for every pending report.
        #[arg(long, global = true, env = "VMR_MAX_BILLED", value_name = "N")]
        pub max_billed: Option<u64>,
        /// Workers of a PostgreSQL state started with the same id share one --max-billed /
        /// --max-spend budget (default: each process its own). Use a new id for each run.
        #[arg(long, global = true, env = "VMR_RUN_ID", value_name = "ID")]
        pub run_id: Option<String>,
        /// What one billed call costs (generate or get alike): turns every count of billed
        /// calls into money in the summary, status, --dry-run and the manifest. Without it vmr
        /// says nothing about money.
        #[arg(long, global = true, env = "VMR_PRICE", value_name = "AMOUNT")]
        pub price: Option<f64>,
        /// The label of --price's amounts (nothing is converted).
        #[arg(long, global = true, env = "VMR_CURRENCY", value_name = "CODE")]
        pub currency: Option<String>,
        /// At most this much spent (or possibly spent) in this run: --max-billed's rule on the
        /// calls it pays for at --price (which it needs).
        #[arg(long, global = true, env = "VMR_MAX_SPEND", value_name = "AMOUNT")]
        pub max_spend: Option<f64>,
        /// Buy again the VINs of the input whose latest report was fetched more than this long
        /// ago (`90d`); never a VIN whose purchase is still under way. `status` counts the
        /// reports due under it.
        #[arg(long, global = true, env = "VMR_REFRESH_OLDER_THAN", value_parser = parse_duration, value_name = "DURATION")]
        #[serde(default, with = "humantime_serde")]
        pub refresh_older_than: Option<Duration>,
        /// 400s in a row (no real answer between them) that stop the run as a sign, secret or
        /// clock problem, exit 3.
        #[arg(long, global = true, env = "VMR_BAD_REQUEST_STREAK", value_name = "N")]
        pub bad_request_streak: Option<u32>,
        /// Largest vendor answer read, in MiB: a longer body is an unknown answer (possibly
        /// billed), its first MiBs kept in the call log.
        #[arg(long, global = true, env = "VMR_MAX_BODY", value_name = "MIB")]
        pub max_body: Option<u64>,
        /// Bind a state directory whose calls predate account binding to the account of this run.
        #[arg(long, global = true)]
        #[serde(skip)]
        pub adopt_account: bool,
        /// Output formats, comma-separated.
        #[arg(long, global = true, env = "VMR_FORMAT", value_name = "LIST")]
        #[arg(value_parser = FormatName::default(), value_delimiter = ',', ignore_case = true)]
        #[serde(default, deserialize_with = "format_list")]
        pub format: Option<Vec<Format>>,
        /// Table layout under --out: flat (one file per table, rewritten) or hive (partitioned
        /// by fetched month, append-only, for data lakes).
        #[arg(long, global = true, env = "VMR_LAYOUT", value_name = "LAYOUT", ignore_case = true)]
        pub layout: Option<Layout>,
        /// Start CSV outputs with a UTF-8 byte-order mark (for Excel on Windows).
        #[arg(long, global = true)]
        #[serde(default)]
        pub csv_bom: bool,
        /// Log format: text or json (one object per line).
        #[arg(long, global = true, env = "VMR_LOG_FORMAT", value_name = "FORMAT")]
        pub log_format: Option<LogFormat>,
        /// After every run, submit and poll, write Prometheus metrics to this file (atomically),
        /// for node_exporter's textfile collector.
        #[arg(long, global = true, env = "VMR_METRICS_FILE", value_name = "FILE")]
        pub metrics_file: Option<PathBuf>,
        /// Healthchecks-style check URL: pinged at the start (URL/start) and end (URL, URL/fail
        /// or URL/<exit code>) of every run, submit and poll. Logged as scheme and host only.
        #[arg(long, global = true, env = "VMR_PING_URL", value_name = "URL", hide_env_values = true)]
        pub ping_url: Option<String>,
        /// The account's app id: `app-id` in the file, where `VMR_APP_ID` (read by
        /// `env_credentials`) wins. Never a flag.
        #[arg(skip)]
        pub app_id: Option<String>,
        /// Read the app secret from this file (instead of VMR_APP_SECRET).
        #[arg(long, global = true, env = "VMR_APP_SECRET_FILE", value_name = "FILE")]
        pub app_secret_file: Option<PathBuf>,
        /// Input column holding the VIN (default: found by name).
        #[arg(long, global = true, value_name = "NAME")]
        pub vin_column: Option<String>,
        /// Input column holding the licence image URL (default: found by name).
        #[arg(long, global = true, value_name = "NAME")]
        pub image_column: Option<String>,
        /// Input encoding: utf-8, gbk or gb18030 (default: detected).
        #[arg(long, global = true, value_name = "NAME")]
        pub encoding: Option<String>,
        /// The sheet of a spreadsheet input: its name, its position (1 is the first), or '*'
        /// for every sheet, each its own batch (default: the first).
        #[arg(long, global = true, env = "VMR_SHEET", value_name = "NAME|INDEX|*")]
        pub sheet: Option<String>,
        /// The separator of a text input: comma, semicolon, tab, pipe or one punctuation
        /// character (default: sniffed from the first lines).
        #[arg(long, global = true, env = "VMR_DELIMITER", value_name = "SEP")]
        pub delimiter: Option<String>,
    }
}

/// The defaults, the only place they are written. With `--sandbox` the pace is faster (the
/// in-process sandbox answers at once, so the whole flow shows in seconds) and the directories
/// are its own, so trying vmr on the simulator can never put synthetic reports into the state
/// or the tables of real purchases.
pub(crate) fn defaults(sandbox: bool) -> Options {
    let (state, out, rate, burst, poll_interval) = if sandbox {
        (
            "vmr-sandbox-state",
            "vmr-sandbox-out",
            100,
            20,
            Duration::from_secs(1),
        )
    } else {
        ("vmr-state", "vmr-out", 10, 10, Duration::from_secs(30))
    };
    Options {
        state: Some(state.into()),
        out: Some(out.into()),
        spill_dir: Some("vmr-spill".into()),
        base_url: Some("https://api.jumdata.com".into()),
        rate: Some(rate),
        burst: Some(burst),
        concurrency: Some(16),
        timeout: Some(Duration::from_secs(30)),
        max_attempts: Some(8),
        max_wait: Some(Duration::from_secs(30 * 60)),
        poll_interval: Some(poll_interval),
        poll_timeout: Some(Duration::from_secs(24 * 3600)),
        bad_request_streak: Some(5),
        max_body: Some(32),
        format: Some(vec![Format::Parquet, Format::Csv]),
        log_format: Some(LogFormat::Text),
        ..Options::default()
    }
}

impl Options {
    /// `cmd` with each option's default from [`defaults`] at the end of its help, both values
    /// where `--sandbox` changes it.
    pub(crate) fn show_defaults(cmd: clap::Command) -> clap::Command {
        let (real, sandboxed) = (defaults(false).shown(), defaults(true).shown());
        cmd.mut_args(|arg| {
            let Some(i) = real.iter().position(|(id, _)| arg.get_id() == *id) else {
                return arg;
            };
            let (Some(r), s) = (&real[i].1, &sandboxed[i].1) else {
                return arg;
            };
            let default = match s {
                Some(s) if s != r => format!("{r}; {s} with --sandbox"),
                _ => r.clone(),
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {default}]"))
        })
    }
}

/// Where `--state` (or `VMR_STATE`, or `state` in vmr.toml) puts the checkpoint. A password in
/// a URL is refused when the URL is on the command line, which `ps` shows.
fn state_place(state: &Path) -> Result<crate::checkpoint::Place> {
    let Some(s) = state.to_str() else {
        return Ok(crate::checkpoint::Place::Dir(state.to_owned()));
    };
    let on_command_line = std::env::args().any(|a| a.contains(s));
    crate::checkpoint::Place::parse(s, on_command_line).map_err(|e| anyhow::anyhow!("--state: {e}"))
}

/// Every option, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the checkpoint lives (`--state`).
    pub place: crate::checkpoint::Place,
    /// Where the tables go (`--out`): a directory, or an `s3://` prefix.
    pub out: PathBuf,
    /// The vendor's base URL (`--base-url`).
    pub base_url: String,
    /// Whether vmr runs against the built-in sandbox (`--sandbox`).
    pub sandbox: bool,
    /// Calls per second, generate and get together; 0 is unlimited (`--rate`).
    pub rate: u32,
    /// Calls allowed at once above the steady rate (`--burst`).
    pub burst: u32,
    /// Calls in flight at once (`--concurrency`).
    pub concurrency: usize,
    /// The timeout of one call (`--timeout`).
    pub timeout: Duration,
    /// Attempts per call on transient faults before the VIN fails (`--max-attempts`).
    pub max_attempts: u32,
    /// How long `run` keeps polling before it exports what it has (`--max-wait`).
    pub max_wait: Duration,
    /// The first wait between polls of a pending report (`--poll-interval`).
    pub poll_interval: Duration,
    /// How long after submission a report not yet ready expires (`--poll-timeout`).
    pub poll_timeout: Duration,
    /// At most this many calls billed, or possibly billed, in this run (`--max-billed`).
    pub max_billed: Option<u64>,
    /// `--run-id`: the budget shared by the workers started with it.
    pub run_id: Option<String>,
    /// Buy again the VINs whose latest report is older than this (`--refresh-older-than`).
    pub refresh_older_than: Option<Duration>,
    /// The price of a billed call, when given.
    pub price: Option<crate::price::Price>,
    /// At most this much spent, or possibly spent, in this run (`--max-spend`).
    pub max_spend: Option<f64>,
    /// How many 400 answers in a row stop the run (`--bad-request-streak`).
    pub bad_request_streak: u32,
    /// `--max-body`, in bytes.
    pub max_body: usize,
    /// Whether to bind a state directory whose calls predate account binding to this run's account
    /// (`--adopt-account`).
    pub adopt_account: bool,
    /// The output formats, each once, in the order given (`--format`).
    pub formats: Vec<Format>,
    /// How `export` lays the tables out (`--layout`).
    pub layout: Layout,
    /// Whether CSV outputs start with a UTF-8 byte-order mark (`--csv-bom`).
    pub csv_bom: bool,
    /// The format of log lines (`--log-format`).
    pub log_format: LogFormat,
    /// The file Prometheus metrics are written to after every run, submit and poll
    /// (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
    /// The check URL pinged around every run, submit and poll (`--ping-url`).
    pub ping_url: Option<PingUrl>,
    /// The account's app id: `VMR_APP_ID`, else `app-id` in the config file.
    pub app_id: Option<String>,
    /// The file the app secret is read from (`--app-secret-file`).
    pub app_secret_file: Option<PathBuf>,
    /// The input column holding the VIN (`--vin-column`); `None` finds it by name.
    pub vin_column: Option<String>,
    /// The input column holding the licence image URL (`--image-column`); `None` finds it by name.
    pub image_column: Option<String>,
    /// The input's encoding (`--encoding`); `None` detects it.
    pub encoding: Option<String>,
    /// The sheet of a spreadsheet input (`--sheet`): a name, a position from 1, or `*`.
    pub sheet: Option<String>,
    /// `--delimiter`, parsed.
    pub delimiter: Option<u8>,
}

/// The credentials the environment holds, read here and nowhere else: `VMR_APP_ID` (empty
/// counts as unset) and `VMR_APP_SECRET` (trimmed; blank counts as unset).
struct EnvCredentials {
    app_id: Option<String>,
    secret: Option<Secret>,
}

fn env_credentials() -> EnvCredentials {
    EnvCredentials {
        app_id: std::env::var("VMR_APP_ID").ok().filter(|s| !s.is_empty()),
        secret: std::env::var("VMR_APP_SECRET")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(Secret::new),
    }
}

/// An option [`defaults`] gives, so present once the layers are combined.
fn given<T>(v: Option<T>) -> T {
    v.expect("defaults() gives every option Settings requires")
}

impl Settings {
    /// Resolves the options: flags and environment (clap has merged them), then `VMR_APP_ID`,
    /// then the config file, then the defaults; then checks them.
    pub(crate) fn resolve(o: &Options) -> Result<Settings> {
        let file = match &o.config {
            Some(p) => load_file(p)?,
            None if Path::new("vmr.toml").exists() => load_file(Path::new("vmr.toml"))?,
            None => Options::default(),
        };
        let env = Options {
            app_id: env_credentials().app_id,
            ..Options::default()
        };
        let o = o.clone().combine(env).combine(file);
        let o = {
            let sandbox = o.sandbox;
            o.combine(defaults(sandbox))
        };
        let mut formats = Vec::new();
        for f in given(o.format) {
            if !formats.contains(&f) {
                formats.push(f);
            }
        }
        let s = Settings {
            place: state_place(&given(o.state))?.with_spill_root(given(o.spill_dir)),
            out: given(o.out),
            base_url: given(o.base_url),
            sandbox: o.sandbox,
            rate: given(o.rate),
            burst: given(o.burst),
            concurrency: given(o.concurrency),
            timeout: given(o.timeout),
            max_attempts: given(o.max_attempts),
            max_wait: given(o.max_wait),
            poll_interval: given(o.poll_interval),
            poll_timeout: given(o.poll_timeout),
            max_billed: o.max_billed,
            run_id: o.run_id,
            refresh_older_than: o.refresh_older_than,
            price: o
                .price
                .map(|p| crate::price::Price::new(p, o.currency.clone()))
                .transpose()
                .map_err(anyhow::Error::msg)?,
            max_spend: o.max_spend,
            bad_request_streak: given(o.bad_request_streak),
            max_body: usize::try_from(given(o.max_body))
                .unwrap_or(usize::MAX)
                .saturating_mul(1024 * 1024),
            adopt_account: o.adopt_account,
            formats,
            layout: o.layout.unwrap_or(Layout::Flat),
            csv_bom: o.csv_bom,
            log_format: given(o.log_format),
            metrics_file: o.metrics_file,
            ping_url: o
                .ping_url
                .as_deref()
                .map(PingUrl::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            app_id: o.app_id,
            app_secret_file: o.app_secret_file,
            vin_column: o.vin_column,
            image_column: o.image_column,
            encoding: o.encoding,
            sheet: o.sheet,
            delimiter: o
                .delimiter
                .as_deref()
                .map(crate::input::parse_delimiter)
                .transpose()
                .map_err(anyhow::Error::msg)?,
        };
        if s.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if s.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        if s.max_body == 0 {
            bail!("--max-body must be at least 1 (MiB)");
        }
        if s.bad_request_streak == 0 {
            bail!("--bad-request-streak must be at least 1");
        }
        if let Some(id) = &s.run_id {
            if s.place.dir().is_some() {
                bail!(
                    "--run-id shares a budget between the workers of a PostgreSQL state (--state postgres://…); a state directory has one vmr at a time, whose budget is its own"
                );
            }
            if id.trim().is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
                bail!(
                    "--run-id takes a name of 1 to 200 printable characters, like 2026-12-02 or backfill-7"
                );
            }
        }
        if let Some(m) = s.max_spend {
            if !m.is_finite() || m < 0.0 {
                bail!("--max-spend {m} is not an amount: give 0 or more (like 5000)");
            }
            if s.price.is_none() {
                bail!(
                    "--max-spend needs --price (VMR_PRICE, or price in vmr.toml): the price of one billed call"
                );
            }
        }
        Ok(s)
    }

    /// The most billed calls a run may make: `--max-billed`, and the calls `--max-spend` pays
    /// for at `--price`, whichever is smaller.
    pub(crate) fn billed_budget(&self) -> Option<u64> {
        let by_spend = match (&self.price, self.max_spend) {
            (Some(p), Some(m)) => Some(p.calls_for(m)),
            _ => None,
        };
        match (self.max_billed, by_spend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The account credentials for the real vendor: the app id, and the secret from
    /// `--app-secret-file` or `VMR_APP_SECRET`.
    pub(crate) fn credentials(&self) -> Result<Credentials> {
        let app_id = self.app_id.clone().context(
            "no app id: set VMR_APP_ID (or app-id in vmr.toml), or use --sandbox to try vmr without an account",
        )?;
        let secret = match &self.app_secret_file {
            Some(p) => {
                let text = read_secret_file(p)?;
                let t = text.trim();
                if t.is_empty() {
                    bail!("the app secret file {} is empty", p.display());
                }
                Secret::new(t)
            }
            None => env_credentials().secret.context(
                "no app secret: set VMR_APP_SECRET or pass --app-secret-file FILE (never on the command line)",
            )?,
        };
        Ok(Credentials::new(app_id, secret))
    }
}

/// Reads the app secret file, refusing one that others may read, or that its group may read when
/// it is vmr's own file: as ssh refuses a private key, which it checks only when the user owns it.
/// A file vmr does not own may be group-readable: that is how a platform hands one service a
/// secret it keeps (Kubernetes' `fsGroup` makes a `0400` secret `0440`, owned by root; systemd's
/// credentials may be granted by an ACL, which shows as group bits). The mode checked is the
/// target's: `metadata` follows symlinks, and Kubernetes mounts a secret's file through two.
pub(crate) fn read_secret_file(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the app secret file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o777;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let ours = meta.uid() == unsafe { libc::geteuid() };
        let who = if mode & 0o007 != 0 {
            Some("others")
        } else if ours && mode & 0o070 != 0 {
            Some("its group")
        } else {
            None
        };
        if let Some(who) = who {
            bail!(
                "the app secret file {0} can be read by {who} (mode {mode:04o}); run `chmod 600 {0}` (or 400) and try again",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the app secret file {}", path.display()))
}

/// Reads `vmr.toml`. No error message quotes the file: the toml crate's own messages print
/// the offending line (and type errors the value), which could put a secret typed into the
/// wrong key on stderr and into JSON logs. Each message names the file, the line and the key.
fn load_file(path: &Path) -> Result<Options> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_config_text(path, &text)
}

/// Parses the text of the config file at `path` (named in errors); see [`load_file`].
pub(crate) fn parse_config_text(path: &Path, text: &str) -> Result<Options> {
    let shown = path.display();
    let doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => bail!(
            "config file {shown}: line {} is not valid TOML (text values go in double quotes, like out = \"/srv/vmr\"); the line is not shown, in case it holds a secret",
            line_of(text, e.span())
        ),
    };
    if let Some((key, span)) = secret_key(doc.get_ref(), "") {
        bail!(
            "config file {shown}: line {}: key `{key}` looks like a secret, and vmr.toml may not hold the app secret: remove it and give the secret by VMR_APP_SECRET or --app-secret-file",
            line_of(text, Some(span))
        );
    }
    toml::from_str(text).map_err(|e| file_error(path, text, doc.get_ref(), &e))
}

/// The 1-based line of the start of `span` (line 1 when there is no span).
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    let at = span.map_or(0, |s| s.start.min(text.len()));
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Whether a key names a secret: it holds `secret` (case, `_` and `-` aside). `app-secret-file`
/// holds a path and is allowed (spelled otherwise, it is an unknown key like any other).
fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    folded.contains("secret") && folded != "appsecretfile"
}

/// The first key, at any depth, that names a secret, with its place in the file.
fn secret_key(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
) -> Option<(String, std::ops::Range<usize>)> {
    for (key, value) in table {
        let name = format!("{prefix}{}", key.get_ref());
        if is_secret_key(key.get_ref()) {
            return Some((name, key.span()));
        }
        let found = match value.get_ref() {
            toml::de::DeValue::Table(t) => secret_key(t, &format!("{name}.")),
            toml::de::DeValue::Array(items) => items.iter().find_map(|item| match item.get_ref() {
                toml::de::DeValue::Table(t) => secret_key(t, &format!("{name}[].")),
                _ => None,
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Our message for a document that parsed but does not fit [`Options`]. The toml crate's
/// message is kept only for an unknown key, where it names the key and the allowed ones; a
/// type error's message would quote the value.
fn file_error(
    path: &Path,
    text: &str,
    doc: &toml::de::DeTable<'_>,
    e: &toml::de::Error,
) -> anyhow::Error {
    let line = line_of(text, e.span());
    let shown = path.display();
    if e.message().starts_with("unknown field `") {
        return anyhow::anyhow!("config file {shown}: line {line}: {}", e.message());
    }
    // The top-level key whose value holds the error.
    let key = e.span().and_then(|span| {
        doc.iter().find_map(|(k, v)| {
            let covers = |r: std::ops::Range<usize>| {
                r.start <= span.start && span.start < r.end.max(r.start + 1)
            };
            (covers(k.span()) || covers(v.span())).then(|| k.get_ref().to_string())
        })
    });
    match key.and_then(|k| Options::wants(&k).map(|wants| (k, wants))) {
        Some((key, wants)) => anyhow::anyhow!(
            "config file {shown}: line {line}: {key} {wants}; the value is not shown, in case it is a secret"
        ),
        None => anyhow::anyhow!(
            "config file {shown}: line {line}: a value does not fit its key (see Configuration in docs/user-guide.md); the value is not shown, in case it is a secret"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_formats() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            parse_formats("parquet, csv").unwrap(),
            vec![Format::Parquet, Format::Csv]
        );
        assert!(parse_formats("xlsx").is_err());
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vmr.toml");
        std::fs::write(
            &cfg,
            "rate = 3\nburst = 4\nmax-wait = \"5m\"\nformat = \"csv\"\n",
        )
        .unwrap();
        let o = Options {
            config: Some(cfg.clone()),
            rate: Some(7),
            ..Options::default()
        };
        let s = Settings::resolve(&o).unwrap();
        assert_eq!(s.rate, 7);
        assert_eq!(s.burst, 4);
        assert_eq!(s.max_wait, Duration::from_secs(300));
        assert_eq!(s.formats, vec![Format::Csv]);
        assert_eq!(s.concurrency, 16);
    }

    #[test]
    fn config_file_may_not_hold_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vmr.toml");
        std::fs::write(&cfg, "app_secret = \"hunter2\"\n").unwrap();
        let o = Options {
            config: Some(cfg),
            ..Options::default()
        };
        let err = Settings::resolve(&o).unwrap_err().to_string();
        assert!(err.contains("app-secret"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    /// The whole error chain `Settings::resolve` gives for a config file holding `text`.
    fn config_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vmr.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = Options {
            config: Some(cfg),
            ..Options::default()
        };
        format!("{:#}", Settings::resolve(&o).unwrap_err())
    }

    #[test]
    fn config_errors_never_echo_a_value() {
        let cases: &[(&str, &[&str])] = &[
            (
                "rate = 3\nappSecret = \"hunter2\"\n",
                &[
                    "line 2",
                    "`appSecret`",
                    "VMR_APP_SECRET",
                    "--app-secret-file",
                ],
            ),
            ("secret = hunter2\n", &["line 1", "not valid TOML"]),
            (
                "app_secret = \"hunter2\"\n",
                &["line 1", "`app_secret`", "VMR_APP_SECRET"],
            ),
            (
                "[vendor]\nApp-Secret = \"hunter2\"\n",
                &["line 2", "`vendor.App-Secret`"],
            ),
            (
                "burst = 2\nrate = \"hunter2\"\n",
                &["line 2", "rate takes a whole number"],
            ),
            (
                "log-format = \"hunter2\"\n",
                &["line 1", "log-format takes"],
            ),
            (
                "sandbox = \"hunter2\"\n",
                &["line 1", "sandbox takes true or false"],
            ),
            ("timeout = \"hunter2\"\n", &["timeout is not a duration"]),
            (
                "format = \"hunter2\"\n",
                &["format is not a list of formats"],
            ),
            (
                "\n\npassword = \"hunter2\"\n",
                &["line 3", "unknown field `password`"],
            ),
            ("out = \"hunter2\n", &["line 1", "not valid TOML"]),
        ];
        for (text, wanted) in cases {
            let err = config_error(text);
            assert!(!err.contains("hunter2"), "{text:?} echoed: {err}");
            assert!(err.contains("vmr.toml"), "{text:?} names the file: {err}");
            for w in *wanted {
                assert!(err.contains(w), "{text:?}: {err} lacks {w:?}");
            }
        }
    }

    #[test]
    fn secret_keys_are_recognised_by_name() {
        for key in [
            "appSecret",
            "secret",
            "app_secret",
            "APP-SECRET",
            "my_secret_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["app-secret-file", "app_id", "rate", "base-url"] {
            assert!(!is_secret_key(key), "{key}");
        }
        // The secret file's path is an option like any other.
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vmr.toml");
        std::fs::write(&cfg, "app-secret-file = \"/etc/vmr/secret\"\n").unwrap();
        let o = Options {
            config: Some(cfg),
            ..Options::default()
        };
        let s = Settings::resolve(&o).unwrap();
        assert_eq!(s.app_secret_file, Some(PathBuf::from("/etc/vmr/secret")));
    }

    /// `Options` from a command line, as clap reads it in `vmr`.
    fn flags(args: &[&str]) -> Result<Options, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("vmr").chain(args.iter().copied()))
            .map(|c| c.options)
    }

    /// Settings from `text` as the config file and `o` as the flags.
    fn resolved(text: &str, o: Options) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vmr.toml");
        std::fs::write(&cfg, text).unwrap();
        Settings::resolve(&Options {
            config: Some(cfg),
            ..o
        })
        .unwrap()
    }

    #[test]
    fn combine_keeps_the_first_layer() {
        assert_eq!(Some(1).combine(Some(2)), Some(1));
        assert_eq!(None.combine(Some(2)), Some(2));
        assert!(false.combine(true) && true.combine(false) && !false.combine(false));
    }

    #[test]
    fn defaults_and_their_sandbox_variants() {
        let s = resolved("", Options::default());
        assert_eq!((s.rate, s.burst, s.concurrency), (10, 10, 16));
        assert_eq!(s.poll_interval, Duration::from_secs(30));
        assert_eq!(s.poll_timeout, Duration::from_secs(86400));
        assert_eq!(s.max_wait, Duration::from_secs(1800));
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(
            (s.max_attempts, s.bad_request_streak, s.max_billed),
            (8, 5, None)
        );
        assert_eq!(s.place.dir(), Some(Path::new("vmr-state")));
        assert_eq!(s.out, PathBuf::from("vmr-out"));
        assert_eq!(s.base_url, "https://api.jumdata.com");
        assert_eq!(s.formats, vec![Format::Parquet, Format::Csv]);
        assert_eq!(s.log_format, LogFormat::Text);
        for s in [
            resolved("", flags(&["--sandbox"]).unwrap()),
            resolved("sandbox = true\n", Options::default()),
        ] {
            assert!(s.sandbox);
            assert_eq!((s.rate, s.burst), (100, 20));
            assert_eq!(s.poll_interval, Duration::from_secs(1));
            assert_eq!(s.place.dir(), Some(Path::new("vmr-sandbox-state")));
            assert_eq!(s.out, PathBuf::from("vmr-sandbox-out"));
        }
        // Explicit settings still win over the sandbox's defaults.
        let s = resolved("rate = 3\n", flags(&["--sandbox", "--burst", "2"]).unwrap());
        assert_eq!((s.rate, s.burst), (3, 2));
    }

    #[test]
    fn file_durations_and_formats() {
        let s = resolved(
            "timeout = \"500ms\"\nmax-wait = \"30m\"\npoll-timeout = \"24h\"\npoll-interval = \"1h30m\"\nformat = \"Jsonl, csv,jsonl\"\nlog-format = \"json\"\ncsv-bom = true\n",
            Options::default(),
        );
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.max_wait, Duration::from_secs(1800));
        assert_eq!(s.poll_timeout, Duration::from_secs(86400));
        assert_eq!(s.poll_interval, Duration::from_secs(5400));
        assert_eq!(s.formats, vec![Format::Jsonl, Format::Csv]);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(s.csv_bom);
    }

    #[test]
    fn format_flag_is_a_list_of_value_names() {
        let o = flags(&["--format", "CSV, parquet,csv", "--timeout", "90s"]).unwrap();
        assert_eq!(
            o.format,
            Some(vec![Format::Csv, Format::Parquet, Format::Csv])
        );
        assert_eq!(o.timeout, Some(Duration::from_secs(90)));
        // A repeated format counts once; the flag replaces the file's list.
        let s = resolved("format = \"jsonl\"\n", o);
        assert_eq!(s.formats, vec![Format::Csv, Format::Parquet]);
        assert!(flags(&["--format", "xlsx"]).is_err());
        assert!(flags(&["--timeout", "soon"]).is_err());
    }

    #[test]
    fn flag_only_options_are_not_file_keys() {
        for text in ["config = \"other.toml\"\n", "adopt-account = true\n"] {
            let err = config_error(text);
            assert!(err.contains("unknown field"), "{text:?}: {err}");
        }
    }

    #[test]
    fn value_errors_name_the_line_and_what_the_key_takes() {
        for (text, wanted) in [
            (
                "rate = 1\ntimeout = 30\n",
                "line 2: timeout is not a duration",
            ),
            (
                "\nformat = [\"csv\"]\n",
                "line 2: format is not a list of formats",
            ),
            (
                "concurrency = -1\n",
                "line 1: concurrency takes a whole number",
            ),
            ("vin-column = 3\n", "line 1: vin-column takes text"),
        ] {
            let err = config_error(text);
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn validation_and_credentials_messages() {
        for (flag, wanted) in [
            ("--concurrency", "--concurrency must be at least 1"),
            ("--max-attempts", "--max-attempts must be at least 1"),
            (
                "--bad-request-streak",
                "--bad-request-streak must be at least 1",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("vmr.toml");
            std::fs::write(&cfg, "").unwrap();
            let o = Options {
                config: Some(cfg),
                ..flags(&[flag, "0"]).unwrap()
            };
            assert_eq!(Settings::resolve(&o).unwrap_err().to_string(), wanted);
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, " s3cret \n").unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let text = format!("app-id = \"from-file\"\napp-secret-file = {:?}\n", secret);
        let s = resolved(&text, Options::default());
        if std::env::var_os("VMR_APP_ID").is_none() {
            let c = s.credentials().unwrap();
            assert_eq!(c.app_id, "from-file");
            assert_eq!(c.app_secret.expose(), "s3cret");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_is_refused_when_others_or_its_owners_group_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let set = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        for mode in [0o600, 0o400] {
            set(mode).unwrap();
            assert_eq!(read_secret_file(&path).unwrap(), "s3cret\n");
        }
        for (mode, who) in [(0o644, "others"), (0o604, "others"), (0o640, "its group")] {
            set(mode).unwrap();
            let err = format!("{:#}", read_secret_file(&path).unwrap_err());
            assert!(err.contains(who) && err.contains("chmod 600"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        // Another user's file (a Kubernetes secret under fsGroup: root's, 0440) may be
        // group-readable, never world-readable. Only root can give a file away to test it.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
            set(0o440).unwrap();
            assert_eq!(read_secret_file(&path).unwrap(), "s3cret\n");
            set(0o444).unwrap();
            assert!(read_secret_file(&path).is_err());
        }
    }

    #[test]
    fn help_shows_every_default_from_the_table() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let mut cmd = Options::show_defaults(<Cli as clap::CommandFactory>::command());
        let help = cmd.render_help().to_string();
        for wanted in [
            "[default: 10; 100 with --sandbox]",
            "[default: 30s; 1s with --sandbox]",
            "[default: vmr-state; vmr-sandbox-state with --sandbox]",
            "[default: 30m]",
            "[default: 24h]",
            "[default: parquet,csv]",
            "[default: https://api.jumdata.com]",
        ] {
            assert!(help.contains(wanted), "{wanted} missing from\n{help}");
        }
        // Every default in the table is shown on its own option.
        for (id, value) in defaults(false).shown() {
            if value.is_some() {
                let arg = cmd.get_arguments().find(|a| a.get_id() == id);
                let help = arg.and_then(|a| a.get_help()).map(ToString::to_string);
                assert!(help.is_some_and(|h| h.contains("[default: ")), "{id}");
            }
        }
    }
}
