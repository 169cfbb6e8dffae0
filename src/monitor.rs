//! Watching unattended runs from outside: the metrics file for node_exporter's textfile
//! collector (`--metrics-file`) and healthchecks-style pings (`--ping-url`).
//!
//! Both are written by [`crate::pipeline::execute`] around every `run`, `submit` and `poll`
//! (dry runs aside), whatever the outcome, and neither ever changes it: a metrics file that
//! cannot be written or a ping that fails is logged and the run's exit code stands.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::app::exit;
use crate::checkpoint::{self, State};
use crate::config::PingUrl;
use crate::export::write::Staged;
use crate::status::{self, Status};
use std::io::Write as _;

/// Seconds since the Unix epoch, as Prometheus writes timestamps.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Whether an exit code counts as a success for monitoring: every VIN final (0), or work that a
/// later run picks up by itself (75).
fn succeeded(code: u8) -> bool {
    code == exit::OK || code == exit::WORK_REMAINS
}

/// What the checkpoint says at the end of a run, as the metrics show it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub status: Status,
    /// Age of the oldest pending report (since its billed generate), 0 when none is pending.
    pub oldest_pending_age: f64,
}

/// Reads the state directory as `vmr status` does (read-only, never blocking a writer).
pub(crate) fn snapshot(place: &checkpoint::Place, now: SystemTime) -> Result<Snapshot> {
    let conn = checkpoint::open_reader_at(place)?;
    let status = status::read(
        &conn,
        &checkpoint::describe(place),
        checkpoint::writer_running_at(place),
        None,
    )?;
    let oldest = checkpoint::oldest_pending(&conn)?;
    let now_ms = unix_seconds(now) * 1000.0;
    let oldest_pending_age = oldest.map_or(0.0, |at| ((now_ms - at as f64) / 1000.0).max(0.0));
    Ok(Snapshot {
        status,
        oldest_pending_age,
    })
}

/// One run's end, as the metrics file records it.
pub(crate) struct RunEnd {
    pub started: SystemTime,
    pub ended: SystemTime,
    pub exit_code: u8,
}

/// The value of a sample without labels in a Prometheus text file, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, rest) = l.split_once(' ')?;
        (n == name).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

const SUCCESS: &str = "vmr_last_success_timestamp_seconds";

/// The metrics file's text: Prometheus text exposition format, HELP and TYPE for every family.
/// `previous_success` is kept when this run did not succeed; `snapshot` is `None` when the
/// checkpoint could not be read (then only the run's own metrics are written).
pub(crate) fn render(
    end: &RunEnd,
    previous_success: Option<f64>,
    snap: Option<&Snapshot>,
) -> String {
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {}", number(*v));
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    family(
        "vmr_last_run_start_timestamp_seconds",
        "gauge",
        "When the last vmr run, submit or poll started (Unix time).",
        &one(unix_seconds(end.started)),
    );
    family(
        "vmr_last_run_end_timestamp_seconds",
        "gauge",
        "When the last vmr run, submit or poll ended (Unix time).",
        &one(unix_seconds(end.ended)),
    );
    let success = if succeeded(end.exit_code) {
        Some(unix_seconds(end.ended))
    } else {
        previous_success
    };
    if let Some(t) = success {
        family(
            SUCCESS,
            "gauge",
            "When a vmr run, submit or poll last ended with exit 0 or 75 (Unix time).",
            &one(t),
        );
    }
    family(
        "vmr_last_run_exit_code",
        "gauge",
        "Exit code of the last vmr run, submit or poll (0 done, 75 work remains, 2 usage, 3 refused, 130/143 signal, 1 other).",
        &one(f64::from(end.exit_code)),
    );
    let Some(snap) = snap else {
        return o;
    };
    let st = &snap.status;
    let vins: Vec<(String, f64)> = st
        .states
        .iter()
        .map(|(s, n)| (format!("{{state=\"{s}\"}}"), n as f64))
        .collect();
    family(
        "vmr_vins",
        "gauge",
        "VINs in the checkpoint per state.",
        &vins,
    );
    let billed: Vec<(String, f64)> = st
        .calls
        .iter()
        .map(|(ep, c)| (format!("{{endpoint=\"{ep}\"}}"), c.billed as f64))
        .collect();
    family(
        "vmr_billed_calls_total",
        "counter",
        "Vendor calls billed, per endpoint, since the state directory was created.",
        &billed,
    );
    family(
        "vmr_unknown_outcome_calls_total",
        "counter",
        "Vendor calls sent without a usable answer (they may have been billed).",
        &one(st.unknown_outcome_total as f64),
    );
    family(
        "vmr_uncertain_vins",
        "gauge",
        "VINs whose generate may have been billed without an answer: a person decides (vmr status).",
        &one(st.uncertain_total as f64),
    );
    family(
        "vmr_pending_reports",
        "gauge",
        "Reports bought and not fetched yet.",
        &one(st.states.get(State::Pending) as f64),
    );
    family(
        "vmr_oldest_pending_report_age_seconds",
        "gauge",
        "Age of the oldest report bought and not fetched yet, since its billed generate; 0 when none is pending.",
        &one(snap.oldest_pending_age),
    );
    o
}

/// A sample value: whole numbers without a fraction, times to the millisecond.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Writes the metrics file at `path` atomically: a temporary file beside it, then a rename, so
/// the textfile collector never reads half a file. The last success time is read back from the
/// file being replaced when this run did not succeed.
pub(crate) fn write_metrics(path: &Path, end: &RunEnd, snap: Option<&Snapshot>) -> Result<()> {
    let previous = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| sample(&t, SUCCESS));
    let text = render(end, previous, snap);
    let name = path
        .file_name()
        .with_context(|| format!("--metrics-file {} names no file", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let context = || format!("cannot write --metrics-file {}", path.display());
    // The same write-aside-then-rename as the export's tables (removed again if not committed).
    let (staged, mut file) = Staged::create(dir, &name.to_string_lossy()).with_context(context)?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(context)?;
    staged.commit().with_context(context)?;
    Ok(())
}

/// A ping's wait for its answer, at most.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// What the end of a run pings: the suffix (`None` for the URL itself) and the body.
pub(crate) fn end_ping(code: u8, uncertain: i64) -> (Option<String>, String) {
    match code {
        exit::OK => (None, "complete".to_owned()),
        exit::WORK_REMAINS if uncertain > 0 => (
            Some("fail".to_owned()),
            format!(
                "{uncertain} uncertain VINs wait for a person: the vendor may have billed them; see `vmr status`, then `vmr resolve` them or send them again with --resubmit-uncertain"
            ),
        ),
        exit::WORK_REMAINS => (None, "work remains; the next run continues".to_owned()),
        c => (Some(c.to_string()), format!("exit {c}")),
    }
}

/// Pings `url` + `suffix` with `body` (a POST), waiting at most [`PING_TIMEOUT`]. A failure is
/// logged, with the URL's scheme and host only, and otherwise ignored.
pub(crate) fn ping(url: &PingUrl, suffix: Option<&str>, body: String) {
    let what = suffix.unwrap_or("success");
    if let Err(e) = send_ping(url.with(suffix), body) {
        tracing::warn!(
            ping = what,
            host = url.shown().as_str(),
            error = %e,
            "the ping failed; the run's outcome is unchanged"
        );
    }
}

fn send_ping(url: url::Url, body: String) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(PING_TIMEOUT)
            .connect_timeout(PING_TIMEOUT)
            .build()
            .map_err(|e| e.without_url().to_string())?;
        let resp = client
            .post(url)
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", resp.status()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250)
    }

    #[test]
    fn success_time_is_kept_from_the_old_file_when_a_run_fails() {
        let end = |code| RunEnd {
            started: at(100),
            ended: at(160),
            exit_code: code,
        };
        let ok = render(&end(0), Some(5.0), None);
        assert_eq!(sample(&ok, SUCCESS), Some(160.25));
        assert_eq!(
            sample(&ok, "vmr_last_run_start_timestamp_seconds"),
            Some(100.25)
        );
        assert_eq!(sample(&render(&end(75), None, None), SUCCESS), Some(160.25));
        let failed = render(&end(3), Some(42.5), None);
        assert_eq!(sample(&failed, SUCCESS), Some(42.5));
        assert_eq!(sample(&failed, "vmr_last_run_exit_code"), Some(3.0));
        // No success yet: the family is left out rather than given a made-up time.
        let never = render(&end(1), None, None);
        assert!(!never.contains(SUCCESS), "{never}");
        for text in [ok, failed, never] {
            for l in text.lines().filter(|l| !l.starts_with('#')) {
                let name = l.split([' ', '{']).next().unwrap_or_default();
                assert!(text.contains(&format!("# HELP {name} ")), "{name}");
                assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            }
        }
    }

    #[test]
    fn the_metrics_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmr.prom");
        let end = RunEnd {
            started: at(10),
            ended: at(20),
            exit_code: 0,
        };
        write_metrics(&path, &end, None).unwrap();
        let failed = RunEnd {
            exit_code: 143,
            ..end
        };
        write_metrics(&path, &failed, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(sample(&text, SUCCESS), Some(20.25));
        assert_eq!(sample(&text, "vmr_last_run_exit_code"), Some(143.0));
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn end_pings_by_exit_code() {
        assert_eq!(end_ping(0, 0).0, None);
        assert_eq!(end_ping(75, 0).0, None);
        let (suffix, body) = end_ping(75, 4);
        assert_eq!(suffix.as_deref(), Some("fail"));
        assert!(body.starts_with("4 uncertain VINs"), "{body}");
        assert_eq!(end_ping(3, 9).0.as_deref(), Some("3"));
        assert_eq!(end_ping(130, 0).0.as_deref(), Some("130"));
    }

    #[test]
    fn ping_urls_show_only_scheme_and_host() {
        let u = PingUrl::parse("https://hc.example.org:8443/ping/0f1e2d3c-token/").unwrap();
        assert_eq!(u.shown(), "https://hc.example.org");
        assert!(!format!("{u:?}").contains("token"));
        assert_eq!(
            u.with(Some("start")).as_str(),
            "https://hc.example.org:8443/ping/0f1e2d3c-token/start"
        );
        assert_eq!(
            PingUrl::parse("http://h/p/uuid")
                .unwrap()
                .with(Some("fail"))
                .as_str(),
            "http://h/p/uuid/fail"
        );
        assert_eq!(
            u.with(None).as_str(),
            "https://hc.example.org:8443/ping/0f1e2d3c-token/"
        );
        for bad in ["hc.example.org/ping/x", "ftp://h/x", "not a url"] {
            let e = PingUrl::parse(bad).unwrap_err();
            assert!(!e.contains(bad), "{e}");
        }
    }
}
