//! Settings: every option from flags, environment and `vmr.toml`, resolved once.
//!
//! Flags win over environment variables (clap reads both), which win over the config file,
//! which wins over the built-in defaults. The app secret is never an option: it comes from
//! `VMR_APP_SECRET` or the file named by `--app-secret-file`, and the config file may not hold
//! it (a file of options is too easily shared).

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{Credentials, Secret};

/// Parses `500ms`, `90s`, `30m`, `24h` and combinations (`1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it like 500ms, 90s, 30m or 24h"))
}

/// Output formats of `export` and `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Jsonl,
}

/// A list of formats as one option value. A named alias, because clap's derive reads a literal
/// `Option<Vec<T>>` as "the option repeats, each value a T", which does not match
/// [`parse_formats`] returning the whole list (it panicked at the first `--format`).
pub type FormatList = Vec<Format>;

pub fn parse_formats(s: &str) -> Result<FormatList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let f = match part.to_ascii_lowercase().as_str() {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "jsonl" => Format::Jsonl,
            other => {
                return Err(format!(
                    "unknown format {other:?}; use parquet, csv or jsonl"
                ));
            }
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err("no format given; use parquet, csv or jsonl".into());
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Options every command accepts. All are optional here; [`Settings::resolve`] fills the gaps
/// from the config file and the defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct Options {
    /// Config file (default: ./vmr.toml when present).
    #[arg(long, global = true, env = "VMR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory holding the checkpoint [default: vmr-state].
    #[arg(long, global = true, env = "VMR_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Output directory for tables [default: vmr-out].
    #[arg(long, global = true, env = "VMR_OUT", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Vendor base URL [default: https://api.jumdata.com].
    #[arg(long, global = true, env = "VMR_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    /// Run against the built-in sandbox, started in-process on an ephemeral port.
    #[arg(long, global = true)]
    pub sandbox: bool,
    /// Calls per second, shared by generate and get; 0 = unlimited [default: 10; 100 with --sandbox].
    #[arg(long, global = true, env = "VMR_RATE", value_name = "N")]
    pub rate: Option<u32>,
    /// Calls allowed at once above the steady rate [default: 10; 20 with --sandbox].
    #[arg(long, global = true, env = "VMR_BURST", value_name = "N")]
    pub burst: Option<u32>,
    /// Calls in flight at once [default: 16].
    #[arg(long, global = true, env = "VMR_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Timeout of one call [default: 30s].
    #[arg(long, global = true, env = "VMR_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Attempts per call on transient faults before the VIN fails [default: 8].
    #[arg(long, global = true, env = "VMR_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<u32>,
    /// How long `run` keeps polling before it exports what it has [default: 30m].
    #[arg(long, global = true, env = "VMR_MAX_WAIT", value_parser = parse_duration, value_name = "DURATION")]
    pub max_wait: Option<Duration>,
    /// First wait between polls of a pending report; doubles up to 16x [default: 30s; 1s with --sandbox].
    #[arg(long, global = true, env = "VMR_POLL_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_interval: Option<Duration>,
    /// A report not ready this long after submission expires [default: 24h].
    #[arg(long, global = true, env = "VMR_POLL_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_timeout: Option<Duration>,
    /// At most this many calls billed (or possibly billed) in this run; a generate is sent
    /// only while a get is left for every pending report.
    #[arg(long, global = true, env = "VMR_MAX_BILLED", value_name = "N")]
    pub max_billed: Option<u64>,
    /// 400s in a row (no real answer between them) that stop the run as a sign, secret or
    /// clock problem, exit 3 [default: 5].
    #[arg(long, global = true, env = "VMR_BAD_REQUEST_STREAK", value_name = "N")]
    pub bad_request_streak: Option<u32>,
    /// Bind a state directory whose calls predate account binding to the account of this run.
    #[arg(long, global = true)]
    pub adopt_account: bool,
    /// Output formats, comma-separated: parquet, csv, jsonl [default: parquet,csv].
    #[arg(long, global = true, env = "VMR_FORMAT", value_parser = parse_formats, value_name = "LIST")]
    pub format: Option<FormatList>,
    /// Start CSV outputs with a UTF-8 byte-order mark (for Excel on Windows).
    #[arg(long, global = true)]
    pub csv_bom: bool,
    /// Log format: text or json (one object per line).
    #[arg(long, global = true, env = "VMR_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
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
}

/// What `vmr.toml` may hold: any option but the secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileOptions {
    state: Option<PathBuf>,
    out: Option<PathBuf>,
    base_url: Option<String>,
    sandbox: Option<bool>,
    rate: Option<u32>,
    burst: Option<u32>,
    concurrency: Option<usize>,
    timeout: Option<String>,
    max_attempts: Option<u32>,
    max_wait: Option<String>,
    poll_interval: Option<String>,
    poll_timeout: Option<String>,
    max_billed: Option<u64>,
    bad_request_streak: Option<u32>,
    format: Option<String>,
    csv_bom: Option<bool>,
    log_format: Option<LogFormat>,
    app_id: Option<String>,
    app_secret_file: Option<PathBuf>,
    vin_column: Option<String>,
    image_column: Option<String>,
    encoding: Option<String>,
}

/// Every option, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state: PathBuf,
    pub out: PathBuf,
    pub base_url: String,
    pub sandbox: bool,
    pub rate: u32,
    pub burst: u32,
    pub concurrency: usize,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_wait: Duration,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub max_billed: Option<u64>,
    pub bad_request_streak: u32,
    pub adopt_account: bool,
    pub formats: Vec<Format>,
    pub csv_bom: bool,
    pub log_format: LogFormat,
    pub app_id: Option<String>,
    pub app_secret_file: Option<PathBuf>,
    pub vin_column: Option<String>,
    pub image_column: Option<String>,
    pub encoding: Option<String>,
}

/// A duration from the config file. The message does not repeat the value: nothing read from
/// the file is echoed to stderr or the logs.
fn file_duration(v: Option<String>, key: &str, path: &Path) -> Result<Option<Duration>> {
    v.map(|s| {
        parse_duration(&s).map_err(|_| {
            anyhow::anyhow!(
                "config file {}: {key} is not a duration; write it like \"500ms\", \"90s\", \"30m\" or \"24h\"",
                path.display()
            )
        })
    })
    .transpose()
}

impl Settings {
    /// Resolves flags and environment (already merged by clap) over the config file and
    /// defaults.
    pub fn resolve(o: &Options) -> Result<Settings> {
        let (file, path) = match &o.config {
            Some(p) => (load_file(p)?, p.clone()),
            None => {
                let p = PathBuf::from("vmr.toml");
                if p.exists() {
                    (load_file(&p)?, p)
                } else {
                    (FileOptions::default(), p)
                }
            }
        };
        let formats = match (&o.format, &file.format) {
            (Some(f), _) => f.clone(),
            (None, Some(s)) => parse_formats(s).map_err(|_| {
                anyhow::anyhow!(
                    "config file {}: format is not a list of formats; write it like \"parquet,csv\" (parquet, csv, jsonl)",
                    path.display()
                )
            })?,
            (None, None) => vec![Format::Parquet, Format::Csv],
        };
        let sandbox = o.sandbox || file.sandbox.unwrap_or(false);
        // The in-process sandbox answers at once; default to a pace that shows the whole flow in
        // seconds. Explicit settings still win.
        let (rate, burst, poll_interval) = if sandbox {
            (100, 20, Duration::from_secs(1))
        } else {
            (10, 10, Duration::from_secs(30))
        };
        // Sandbox runs get their own default directories, so trying vmr on the simulator can
        // never put synthetic reports into the state or the tables of real purchases.
        let (state, out) = if sandbox {
            ("vmr-sandbox-state", "vmr-sandbox-out")
        } else {
            ("vmr-state", "vmr-out")
        };
        let s = Settings {
            state: o
                .state
                .clone()
                .or(file.state)
                .unwrap_or_else(|| state.into()),
            out: o.out.clone().or(file.out).unwrap_or_else(|| out.into()),
            base_url: o
                .base_url
                .clone()
                .or(file.base_url)
                .unwrap_or_else(|| "https://api.jumdata.com".into()),
            sandbox,
            rate: o.rate.or(file.rate).unwrap_or(rate),
            burst: o.burst.or(file.burst).unwrap_or(burst),
            concurrency: o.concurrency.or(file.concurrency).unwrap_or(16),
            timeout: o
                .timeout
                .or(file_duration(file.timeout, "timeout", &path)?)
                .unwrap_or(Duration::from_secs(30)),
            max_attempts: o.max_attempts.or(file.max_attempts).unwrap_or(8),
            max_wait: o
                .max_wait
                .or(file_duration(file.max_wait, "max-wait", &path)?)
                .unwrap_or(Duration::from_secs(30 * 60)),
            poll_interval: o
                .poll_interval
                .or(file_duration(file.poll_interval, "poll-interval", &path)?)
                .unwrap_or(poll_interval),
            poll_timeout: o
                .poll_timeout
                .or(file_duration(file.poll_timeout, "poll-timeout", &path)?)
                .unwrap_or(Duration::from_secs(24 * 3600)),
            max_billed: o.max_billed.or(file.max_billed),
            bad_request_streak: o
                .bad_request_streak
                .or(file.bad_request_streak)
                .unwrap_or(5),
            adopt_account: o.adopt_account,
            formats,
            csv_bom: o.csv_bom || file.csv_bom.unwrap_or(false),
            log_format: o.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            app_id: std::env::var("VMR_APP_ID")
                .ok()
                .filter(|s| !s.is_empty())
                .or(file.app_id),
            app_secret_file: o.app_secret_file.clone().or(file.app_secret_file),
            vin_column: o.vin_column.clone().or(file.vin_column),
            image_column: o.image_column.clone().or(file.image_column),
            encoding: o.encoding.clone().or(file.encoding),
        };
        if s.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if s.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        if s.bad_request_streak == 0 {
            bail!("--bad-request-streak must be at least 1");
        }
        Ok(s)
    }

    /// The account credentials for the real vendor: `VMR_APP_ID`, and the secret from
    /// `--app-secret-file` or `VMR_APP_SECRET`.
    pub fn credentials(&self) -> Result<Credentials> {
        let app_id = self.app_id.clone().context(
            "no app id: set VMR_APP_ID (or app-id in vmr.toml), or use --sandbox to try vmr without an account",
        )?;
        let secret = match &self.app_secret_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the app secret file {}", p.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    bail!("the app secret file {} is empty", p.display());
                }
                Secret::new(t)
            }
            None => match std::env::var("VMR_APP_SECRET") {
                Ok(s) if !s.trim().is_empty() => Secret::new(s.trim()),
                _ => bail!(
                    "no app secret: set VMR_APP_SECRET or pass --app-secret-file FILE (never on the command line)"
                ),
            },
        };
        Ok(Credentials::new(app_id, secret))
    }
}

/// Reads `vmr.toml`. No error message quotes the file: the toml crate's own messages print
/// the offending line (and type errors the value), which could put a secret typed into the
/// wrong key on stderr and into JSON logs. Each message names the file, the line and the key.
fn load_file(path: &Path) -> Result<FileOptions> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let shown = path.display();
    let doc = match toml::de::DeTable::parse(&text) {
        Ok(doc) => doc,
        Err(e) => bail!(
            "config file {shown}: line {} is not valid TOML (text values go in double quotes, like out = \"/srv/vmr\"); the line is not shown, in case it holds a secret",
            line_of(&text, e.span())
        ),
    };
    if let Some((key, span)) = secret_key(doc.get_ref(), "") {
        bail!(
            "config file {shown}: line {}: key `{key}` looks like a secret, and vmr.toml may not hold the app secret: remove it and give the secret by VMR_APP_SECRET or --app-secret-file",
            line_of(&text, Some(span))
        );
    }
    toml::from_str(&text).map_err(|e| file_error(path, &text, doc.get_ref(), &e))
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

/// What a key of the file takes, in words.
fn expected(key: &str) -> &'static str {
    match key {
        "rate" | "burst" | "concurrency" | "max-attempts" | "max-billed" => {
            "a whole number of at least 0, without quotes"
        }
        "sandbox" | "csv-bom" => "true or false, without quotes",
        "timeout" | "max-wait" | "poll-interval" | "poll-timeout" => {
            "a duration in double quotes, like \"30s\""
        }
        "log-format" => "\"text\" or \"json\"",
        "format" => "a list in double quotes, like \"parquet,csv\"",
        _ => "text in double quotes",
    }
}

/// Our message for a document that parsed but does not fit [`FileOptions`]. The toml crate's
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
    match key {
        Some(key) => anyhow::anyhow!(
            "config file {shown}: line {line}: {key} takes {}; the value is not shown, in case it is a secret",
            expected(&key)
        ),
        None => anyhow::anyhow!(
            "config file {shown}: line {line}: a value does not fit its key (see Configuration in README.md); the value is not shown, in case it is a secret"
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
}
