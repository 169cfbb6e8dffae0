//! The lake output: `--out s3://bucket/prefix` and `--layout hive`.
//!
//! Object stores have no rename and no directory lock, so the commit protocol is built from what
//! they do guarantee: a single put is atomic (an object is either absent or whole; a multipart
//! upload stays invisible until it completes), and listing shows what is there.
//!
//! A hive export:
//!
//! 1. lists `_vmr/exports/` and reads every manifest there: the files each complete export
//!    wrote and the report versions it covers (`covers`). This is also the first contact with the
//!    store, so a missing bucket or a refused credential stops the export before anything is
//!    written;
//! 2. removes orphans: part files in the table folders that no manifest lists, left by an export
//!    that was killed before it wrote its manifest;
//! 3. writes, in a local staging folder, only the report versions no manifest covers, one part
//!    file per table, `fetched_month` and format (more when a part reaches [`PART_ROWS`]), and
//!    `requests` and `calls` whole;
//! 4. uploads the part files, then `requests` and `calls` (one put each, so a reader sees the old
//!    object or the new one), then its manifest `_vmr/exports/<export-id>.json`, then `_SUCCESS`.
//!
//! A complete export is one whose manifest exists; its part files are never touched again.
//! Export ids sort by time, so the newest manifest is the last in name order.
//!
//! A flat export to an object store is the local flat export, staged, then uploaded with the
//! same rule: `manifest.json` is removed first and put last.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::Snapshot;
use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use arrow_schema::SchemaRef;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::flatten::{self, SourceReport};
use super::schema::{self, CallCols, RequestCols};
use super::write::{self, Staged, TableSink};
use super::{Collected, ExportError, ExportOptions, ExportSummary, Plan, SLICE_ROWS, Written};
use crate::config::Layout;

/// Rows in one part file before the next part of the same table and month starts.
pub(crate) const PART_ROWS: u64 = 4_000_000;
/// Reports read from the checkpoint at a time.
const CHUNK_ROWS: usize = 2_000;
/// Bytes buffered per upload before it switches to a multipart upload (and the size of each part).
const UPLOAD_PART_BYTES: usize = 16 << 20;
/// Uploads in flight at once.
const UPLOADS_AT_ONCE: usize = 4;
/// Where the manifests live, under the destination.
const EXPORTS_DIR: &str = "_vmr/exports";
/// Rewritten after every complete export.
const SUCCESS: &str = "_SUCCESS";
/// CSV files sit in their own tree, `csv/<table>/…`, so that a folder of Parquet parts holds
/// nothing else (Spark and Trino read every file of a table's folder as that table).
const CSV_ROOT: &str = "csv/";

/// The tree a file of `format` goes in: CSV under `csv/`, the rest at the root.
fn format_root(format: &str) -> &'static str {
    if format == "csv" { CSV_ROOT } else { "" }
}

/// The folder of the raw reports (`--format jsonl`) in the hive layout.
pub(crate) const RAW_REPORTS: &str = "raw_reports";
/// The column hive files leave out: it changes after a file is written.
const IS_LATEST: &str = "is_latest";
/// The partition column of the hive layout.
pub(crate) const PARTITION: &str = "fetched_month";
/// The partition of a report whose fetch time cannot be read (Hive's own name for it).
const NO_MONTH: &str = "__HIVE_DEFAULT_PARTITION__";

/// Where an export goes, as `--out` names it.
pub(crate) enum Dest {
    /// A local directory (a path, or a `file://` URL).
    Local(PathBuf),
    /// An object store (`s3://bucket/prefix`).
    Store(Target),
}

/// An object store and the prefix the tables go under.
pub(crate) struct Target {
    /// What messages and the summary call it: `s3://bucket/prefix`, or the local directory. It
    /// never holds a credential (a URL with one is refused).
    pub shown: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// A local destination: the directory, for its lock.
    local: Option<PathBuf>,
}

impl Dest {
    /// Reads `--out`. Credentials come from the standard AWS environment variables (and the
    /// instance, container or web-identity credentials object_store finds), never from the URL.
    pub(crate) fn parse(out: &Path) -> Result<Dest, ExportError> {
        let Some(text) = out.to_str().filter(|t| t.contains("://")) else {
            return Ok(Dest::Local(out.to_owned()));
        };
        let refuse = |why: &str| ExportError::Store {
            url: text.split('?').next().unwrap_or(text).to_owned(),
            reason: why.to_owned(),
            permanent: true,
        };
        let url = url::Url::parse(text).map_err(|e| refuse(&format!("not a URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ExportError::Store {
                url: format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
                reason: "a credential in --out is refused (it would show in `ps` and in logs); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead".into(),
                permanent: true,
            });
        }
        match url.scheme() {
            "file" => url
                .to_file_path()
                .map(Dest::Local)
                .map_err(|_| refuse("not a local path")),
            "s3" | "s3a" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| refuse("no bucket; write it like s3://bucket/prefix"))?;
                let prefix = url.path().trim_matches('/').to_owned();
                let shown = if prefix.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{prefix}")
                };
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(format!("s3://{bucket}"))
                    .with_retry(retry());
                // An endpoint the user chose with http:// (MinIO or moto on a private network)
                // is allowed as given, as the AWS CLI does.
                let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                    .iter()
                    .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
                if endpoint.is_some_and(|e| e.starts_with("http://")) {
                    b = b.with_allow_http(true);
                }
                let store = b.build().map_err(|e| ExportError::Store {
                    url: shown.clone(),
                    reason: e.to_string(),
                    permanent: true,
                })?;
                Ok(Dest::Store(Target {
                    shown,
                    store: Arc::new(store),
                    prefix,
                    local: None,
                }))
            }
            other => Err(refuse(&format!(
                "vmr writes to local directories and to s3:// (S3 and S3-compatible stores such as MinIO or Alibaba OSS, through AWS_ENDPOINT_URL), not to {other}://"
            ))),
        }
    }
}

/// Retries with exponential backoff and jitter on transient store errors (timeouts, 5xx, 429),
/// for up to two minutes per request.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 8,
        retry_timeout: std::time::Duration::from_secs(120),
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(15),
            ..Default::default()
        },
    }
}

impl Target {
    /// A local directory as a store (created if missing).
    fn local(dir: &Path) -> Result<Target, ExportError> {
        fs::create_dir_all(dir).map_err(|source| ExportError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            ExportError::Store {
                url: dir.display().to_string(),
                reason: e.to_string(),
                permanent: true,
            }
        })?;
        Ok(Target {
            shown: dir.display().to_string(),
            store: Arc::new(store),
            prefix: String::new(),
            local: Some(dir.to_owned()),
        })
    }

    /// The object at `rel` (a `/`-separated path under the destination).
    fn path(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// `rel` of an object listed under the destination.
    fn rel(&self, p: &ObjPath) -> Option<String> {
        let prefix = ObjPath::from(self.prefix.as_str());
        let parts: Vec<String> = p
            .prefix_match(&prefix)?
            .map(|part| part.as_ref().to_owned())
            .collect();
        Some(parts.join("/"))
    }

    fn err(&self, what: &str, e: object_store::Error) -> ExportError {
        let permanent = is_permanent(&e);
        ExportError::Store {
            url: self.shown.clone(),
            reason: format!("{what}: {}", one_line(&e.to_string())),
            permanent,
        }
    }

    /// Every object under `rel`, with its path relative to the destination.
    async fn list(&self, rel: &str) -> Result<Vec<String>, ExportError> {
        let p = self.path(rel);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| self.err("listing", e))?;
        let mut rels: Vec<String> = metas.iter().filter_map(|m| self.rel(&m.location)).collect();
        rels.sort();
        Ok(rels)
    }

    /// Uploads a finished local file to `rel`: one put when it is small, a multipart upload
    /// (invisible until complete) when it is not. A failed upload is aborted.
    async fn upload(&self, local: &Path, rel: &str) -> Result<(), ExportError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|source| ExportError::Io {
                path: local.to_owned(),
                source,
            })?;
        let mut w = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            self.path(rel),
            UPLOAD_PART_BYTES,
        );
        let copied = match tokio::io::copy(&mut file, &mut w).await {
            Ok(_) => w.shutdown().await,
            Err(e) => Err(e),
        };
        if let Err(e) = copied {
            let _ = w.abort().await;
            let permanent = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<object_store::Error>())
                .is_some_and(is_permanent);
            return Err(ExportError::Store {
                url: self.shown.clone(),
                reason: format!("uploading {rel}: {}", one_line(&e.to_string())),
                permanent,
            });
        }
        Ok(())
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), ExportError> {
        self.store
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("writing {rel}"), e))
    }

    async fn get(&self, rel: &str) -> Result<Vec<u8>, ExportError> {
        let r = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(|e| self.err(&format!("reading {rel}"), e))?;
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.err(&format!("reading {rel}"), e))
    }

    /// The object the URL itself names (`--input s3://bucket/key`), streamed into `out`; its
    /// name (the key's last part) and size. The same client, credentials and retries as the
    /// lake output.
    pub(crate) async fn download(
        &self,
        out: &mut std::fs::File,
    ) -> Result<(String, u64), ExportError> {
        let refuse = |reason: &str| ExportError::Store {
            url: self.shown.clone(),
            reason: reason.to_owned(),
            permanent: true,
        };
        let name = match self.prefix.rsplit('/').next() {
            Some(n) if !n.is_empty() && self.local.is_none() => n.to_owned(),
            _ => {
                return Err(refuse(
                    "no object named; write it like s3://bucket/path/fleet.csv",
                ));
            }
        };
        let path = ObjPath::from(self.prefix.as_str());
        let r = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.err("reading the input", e))?;
        let mut stream = r.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err("reading the input", e))?;
            out.write_all(&chunk)
                .map_err(|e| refuse(&format!("spooling it: {e}")))?;
            size += chunk.len() as u64;
        }
        Ok((name, size))
    }

    async fn delete(&self, rel: &str) -> Result<(), ExportError> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(&format!("removing {rel}"), e)),
        }
    }

    /// Uploads `files` (local path, destination path), a few at a time.
    async fn upload_all(&self, files: &[(PathBuf, String)]) -> Result<(), ExportError> {
        futures_util::stream::iter(files)
            .map(|(local, rel)| self.upload(local, rel))
            .buffer_unordered(UPLOADS_AT_ONCE)
            .try_collect::<()>()
            .await
    }
}

/// A store's error on one line: S3 answers with an XML document, of which the `Code` and
/// `Message` are what a person needs (`NoSuchBucket: The specified bucket does not exist`).
fn one_line(text: &str) -> String {
    let tag = |name: &str| -> Option<&str> {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(&text[start..start + len])
    };
    let head = text.split("<?xml").next().unwrap_or(text);
    let head = head.trim().trim_end_matches(':').trim();
    let mut out = match (tag("Code"), tag("Message")) {
        (Some(code), Some(msg)) => format!("{head}: {code}: {msg}"),
        (Some(code), None) => format!("{head}: {code}"),
        _ => head.to_owned(),
    };
    out.retain(|c| c != '\n' && c != '\r');
    out
}

/// Whether retrying cannot help: no such bucket, a refused or unknown credential, a missing
/// object where one must be.
fn is_permanent(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    if matches!(
        e,
        E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
    ) {
        return true;
    }
    let text = e.to_string();
    [
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "AllAccessDisabled",
        "Missing bucket",
    ]
    .iter()
    .any(|k| text.contains(k))
}

/// Checks, before anything is bought, that `--out` can be reached when it is an object store:
/// the bucket exists and the credentials may list it. Local directories are checked by
/// `app::check_out_writable`.
pub(crate) fn check_reachable(out: &Path) -> Result<bool, ExportError> {
    match Dest::parse(out)? {
        Dest::Local(_) => Ok(false),
        Dest::Store(t) => {
            runtime()?.block_on(t.list(EXPORTS_DIR))?;
            Ok(true)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExportError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExportError::Internal(format!("starting the upload runtime: {e}")))
}

/// A staging folder under the system's temporary directory (`TMPDIR`), removed on drop. Its
/// name carries the PID, so that the next export can remove what a killed one left.
struct Staging(PathBuf);

impl Staging {
    fn create(export_id: &str) -> Result<Staging, ExportError> {
        let tmp = std::env::temp_dir();
        clean_stale_staging(&tmp);
        let dir = tmp.join(format!(
            "{STAGING_PREFIX}{}-{export_id}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).map_err(|source| ExportError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const STAGING_PREFIX: &str = "vmr-export-";

/// Removes the staging folders of exports whose process is gone.
fn clean_stale_staging(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(STAGING_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A new export id: the UTC time to the second and a random suffix, so that ids sort by time
/// and two exports in the same second differ.
fn export_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{now}-{suffix:06x}")
}

/// The UTC month of a fetch time in milliseconds, `YYYY-MM`.
pub(crate) fn fetched_month(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_else(|| NO_MONTH.to_owned())
}

/// One file of an export, as its manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LakeFile {
    /// Relative to the destination, `/`-separated.
    pub path: String,
    pub table: String,
    /// `parquet`, `csv` or `jsonl`.
    pub format: String,
    /// The partition, for the report tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_month: Option<String>,
    pub rows: u64,
    pub bytes: u64,
}

/// `_vmr/exports/<export-id>.json`: the export's id and layout, what every manifest holds, and
/// what it covers.
#[derive(Serialize)]
struct LakeManifest<'a> {
    export_id: &'a str,
    layout: &'static str,
    /// Its files: part files are never rewritten; `requests` and `calls` are rewritten whole by
    /// every export, so the newest manifest's are the current ones. Its row counts: what this
    /// export added per table (all of `requests` and `calls`).
    #[serde(flatten)]
    base: super::Manifest<'a, LakeFile>,
    /// The report versions this export added, as `[vin, version]`: each is the report of one
    /// purchase of that VIN. The next export skips them.
    covers: &'a [(String, i32)],
}

/// What the export reads back from each manifest.
#[derive(Deserialize)]
struct SeenManifest {
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    files: Vec<LakeFile>,
    #[serde(default)]
    covers: Vec<(String, i32)>,
}

/// What the destination holds.
#[derive(Default)]
struct Holdings {
    /// Manifest names, oldest first.
    exports: Vec<String>,
    files: HashSet<String>,
    covers: HashSet<(String, i32)>,
    accounts: Vec<String>,
}

async fn read_holdings(t: &Target) -> Result<Holdings, ExportError> {
    let mut h = Holdings::default();
    for rel in t.list(EXPORTS_DIR).await? {
        if !rel.ends_with(".json") {
            continue;
        }
        let bytes = t.get(&rel).await?;
        let m: SeenManifest = serde_json::from_slice(&bytes).map_err(|e| ExportError::Store {
            url: t.shown.clone(),
            reason: format!("{rel} is not a manifest vmr can read ({e}); move it away or export to a new destination"),
            permanent: true,
        })?;
        h.files.extend(m.files.into_iter().map(|f| f.path));
        h.covers.extend(m.covers);
        if let Some(a) = m.account
            && !h.accounts.contains(&a)
        {
            h.accounts.push(a);
        }
        h.exports.push(rel);
    }
    Ok(h)
}

/// Removes part files no manifest lists: what exports killed before their manifest left.
async fn remove_orphans(t: &Target, h: &Holdings) -> Result<Vec<String>, ExportError> {
    let mut removed = Vec::new();
    let folders = schema::REPORT_TABLES
        .iter()
        .flat_map(|t| [(*t).to_owned(), format!("{CSV_ROOT}{t}")])
        .chain([RAW_REPORTS.to_owned()]);
    for folder in folders {
        for rel in t.list(&folder).await? {
            let name = rel.rsplit('/').next().unwrap_or("");
            if name.starts_with("part-") && !h.files.contains(&rel) {
                t.delete(&rel).await?;
                tracing::info!(
                    "removed {rel} from {}: an export that stopped before its manifest left it",
                    t.shown
                );
                removed.push(rel);
            }
        }
    }
    Ok(removed)
}

/// `vmr export --layout hive`, to a local directory or an object store.
pub(crate) fn export_hive(
    snap: &Snapshot,
    opts: &ExportOptions,
    dest: Dest,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    let target = match dest {
        Dest::Local(dir) => Target::local(&dir)?,
        Dest::Store(t) => t,
    };
    // A second export to the same local directory waits; object stores have no lock (one
    // export per destination at a time, as docs/lake.md says).
    let _lock = match &target.local {
        Some(dir) => Some(write::lock_out(dir)?),
        None => None,
    };
    let rt = runtime()?;
    let holdings = rt.block_on(read_holdings(&target))?;
    if opts.full && !holdings.exports.is_empty() {
        return Err(ExportError::Refused(format!(
            "{} already holds {} exports (the newest is {}); --full starts a new history only in an empty destination: choose a new --out, or export without --full to add to this one",
            target.shown,
            holdings.exports.len(),
            holdings.exports.last().map(String::as_str).unwrap_or("")
        )));
    }
    let account = snap.account()?;
    if let Some(other) = holdings
        .accounts
        .iter()
        .find(|a| Some(a.as_str()) != account.as_deref())
    {
        return Err(ExportError::Refused(format!(
            "{} holds the reports of vendor account {other}, and this checkpoint is {}; export each account to its own destination",
            target.shown,
            account.as_deref().unwrap_or("not bound to an account")
        )));
    }
    rt.block_on(remove_orphans(&target, &holdings))?;
    let id = export_id();
    let staging = Staging::create(&id)?;
    let staged = stage_hive(snap, opts, &staging.0, &id, &holdings.covers)?;
    publish(snap, opts, &rt, &target, &id, staged, started)
}

/// What an export staged locally, ready to upload.
struct StagedExport {
    /// (local file, its entry), part files first, then `requests` and `calls`.
    files: Vec<(PathBuf, LakeFile)>,
    rows: Vec<(String, u64)>,
    jsonl_lines: Option<u64>,
    covers: Vec<(String, i32)>,
    collected: Collected,
}

/// What [`Parts::finish`] gives: each file (local path, entry), the rows per report table, and
/// the lines of raw reports.
type PartsDone = (Vec<(PathBuf, LakeFile)>, Vec<u64>, u64);

/// The open part files of one export, per table and month.
struct Parts<'a> {
    dir: &'a Path,
    id: &'a str,
    plan: Plan<'a>,
    schemas: Vec<SchemaRef>,
    /// The column indices of each report table's hive file (all but `is_latest`).
    projections: Vec<Option<Vec<usize>>>,
    open: BTreeMap<(usize, String), TableSink>,
    /// The next part number per table and month.
    next: BTreeMap<(usize, String), u32>,
    jsonl: BTreeMap<String, (Staged, std::io::BufWriter<fs::File>, u64)>,
    finished: Vec<(PathBuf, LakeFile)>,
    rows: Vec<u64>,
    jsonl_lines: u64,
}

impl<'a> Parts<'a> {
    fn new(dir: &'a Path, id: &'a str, plan: Plan<'a>) -> Result<Parts<'a>, ExportError> {
        let mut schemas = Vec::new();
        let mut projections = Vec::new();
        for table in schema::REPORT_TABLES {
            let full = schema::of(table).ok_or_else(|| ExportError::Internal(table.into()))?;
            let keep: Vec<usize> = (0..full.fields().len())
                .filter(|&i| full.field(i).name() != IS_LATEST)
                .collect();
            if keep.len() < full.fields().len() {
                schemas.push(Arc::new(full.project(&keep)?));
                projections.push(Some(keep));
            } else {
                schemas.push(full);
                projections.push(None);
            }
        }
        Ok(Parts {
            dir,
            id,
            plan,
            schemas,
            projections,
            open: BTreeMap::new(),
            next: BTreeMap::new(),
            jsonl: BTreeMap::new(),
            finished: Vec::new(),
            rows: vec![0; schema::REPORT_TABLES.len()],
            jsonl_lines: 0,
        })
    }

    fn folder(&self, table: &str, month: &str) -> (String, PathBuf) {
        let rel = format!("{table}/{PARTITION}={month}");
        let local = self.dir.join(table).join(format!("{PARTITION}={month}"));
        (rel, local)
    }

    fn write(&mut self, t: usize, month: &str, batch: &RecordBatch) -> Result<(), ExportError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = match &self.projections[t] {
            Some(keep) => batch.project(keep)?,
            None => batch.clone(),
        };
        let key = (t, month.to_owned());
        if !self.open.contains_key(&key) {
            let table = schema::REPORT_TABLES[t];
            let (_, local) = self.folder(table, month);
            fs::create_dir_all(&local).map_err(|source| ExportError::Io {
                path: local.clone(),
                source,
            })?;
            let n = self.next.entry(key.clone()).or_insert(0);
            let stem = format!("part-{}-{n}", self.id);
            *n += 1;
            let sink = TableSink::create(
                &local,
                &stem,
                self.schemas[t].clone(),
                self.plan.props.as_ref(),
                self.plan.csv,
            )?;
            self.open.insert(key.clone(), sink);
        }
        let sink = self
            .open
            .get_mut(&key)
            .ok_or_else(|| ExportError::Internal("a part file vanished".into()))?;
        sink.write(&batch)?;
        self.rows[t] += batch.num_rows() as u64;
        if sink.rows() >= PART_ROWS {
            self.close(&key)?;
        }
        Ok(())
    }

    fn close(&mut self, key: &(usize, String)) -> Result<(), ExportError> {
        let Some(sink) = self.open.remove(key) else {
            return Ok(());
        };
        let table = schema::REPORT_TABLES[key.0];
        let (rel_dir, _) = self.folder(table, &key.1);
        let (rows, files) = sink.finish()?;
        for s in files {
            let name = s.name();
            let bytes = s.bytes()?;
            let local = s.commit()?;
            let format = name.rsplit('.').next().unwrap_or("").to_owned();
            self.finished.push((
                local,
                LakeFile {
                    path: format!("{}{rel_dir}/{name}", format_root(&format)),
                    table: table.to_owned(),
                    format,
                    fetched_month: Some(key.1.clone()),
                    rows,
                    bytes,
                },
            ));
        }
        Ok(())
    }

    fn write_jsonl(&mut self, month: &str, lines: u64, bytes: &[u8]) -> Result<(), ExportError> {
        if lines == 0 {
            return Ok(());
        }
        if !self.jsonl.contains_key(month) {
            let (_, local) = self.folder(RAW_REPORTS, month);
            fs::create_dir_all(&local).map_err(|source| ExportError::Io {
                path: local.clone(),
                source,
            })?;
            let (s, f) = Staged::create(&local, &format!("part-{}-0.jsonl", self.id))?;
            self.jsonl.insert(
                month.to_owned(),
                (s, std::io::BufWriter::with_capacity(1 << 20, f), 0),
            );
        }
        let Some((s, w, n)) = self.jsonl.get_mut(month) else {
            return Err(ExportError::Internal("a jsonl part vanished".into()));
        };
        w.write_all(bytes).map_err(|source| ExportError::Io {
            path: s.tmp_path().to_owned(),
            source,
        })?;
        *n += lines;
        self.jsonl_lines += lines;
        Ok(())
    }

    /// Closes every part; returns the files, the rows per report table and the JSON lines.
    fn finish(mut self) -> Result<PartsDone, ExportError> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.close(&k)?;
        }
        for (month, (s, w, lines)) in std::mem::take(&mut self.jsonl) {
            let path = s.tmp_path().to_owned();
            let file = w.into_inner().map_err(|e| ExportError::Io {
                path: path.clone(),
                source: e.into_error(),
            })?;
            write::sync(&file, &path)?;
            let name = s.name();
            let bytes = s.bytes()?;
            let local = s.commit()?;
            self.finished.push((
                local,
                LakeFile {
                    path: format!("{RAW_REPORTS}/{PARTITION}={month}/{name}"),
                    table: RAW_REPORTS.to_owned(),
                    format: "jsonl".to_owned(),
                    fetched_month: Some(month),
                    rows: lines,
                    bytes,
                },
            ));
        }
        self.finished.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        Ok((self.finished, self.rows, self.jsonl_lines))
    }
}

/// Writes the new report versions into part files, and `requests` and `calls` whole, in
/// `dir`.
fn stage_hive(
    snap: &Snapshot,
    opts: &ExportOptions,
    dir: &Path,
    id: &str,
    covered: &HashSet<(String, i32)>,
) -> Result<StagedExport, ExportError> {
    let plan = Plan::of(opts);
    let want = plan.want;
    let mut collected = Collected::default();
    let mut covers = Vec::new();
    let mut parts = Parts::new(dir, id, Plan::of(opts))?;
    let mut reports = snap.reports()?;
    loop {
        // This chunk's new versions, by month. The body is read only for the versions this
        // export writes.
        let mut months: BTreeMap<String, (Vec<SourceReport>, Vec<flatten::ReportVersion>)> =
            BTreeMap::new();
        // One key reused for every lookup: no allocation per report read.
        let mut key = (String::new(), 0i32);
        let chunk = reports.next_chunk(CHUNK_ROWS, |vin, version| {
            key.0.clear();
            key.0.push_str(vin);
            key.1 = i32::try_from(version).unwrap_or(i32::MAX);
            !covered.contains(&key)
        })?;
        if chunk.read == 0 {
            break;
        }
        for r in chunk.reports {
            let version = i32::try_from(r.version).unwrap_or(i32::MAX);
            covers.push((r.vin.clone(), version));
            let group = months.entry(fetched_month(r.fetched_at)).or_default();
            group.0.push(super::source_report(r));
            group.1.push(flatten::ReportVersion {
                version,
                is_latest: false,
            });
        }
        for (month, (reports, versions)) in months {
            let flats: Vec<Result<flatten::Flat, ArrowError>> = reports
                .par_chunks(SLICE_ROWS)
                .zip(versions.par_chunks(SLICE_ROWS))
                .map(|(slice, v)| flatten::flatten_versions(slice, v, want))
                .collect();
            for flat in flats {
                let flat = flat?;
                collected.add(&flat.quality, flat.bad);
                for (t, batch) in flat.batches.iter().enumerate() {
                    parts.write(t, &month, batch)?;
                }
                if want.jsonl {
                    parts.write_jsonl(&month, flat.jsonl_lines, &flat.jsonl)?;
                }
            }
        }
    }
    let (mut files, part_rows, jsonl_lines) = parts.finish()?;
    let mut rows: Vec<(String, u64)> = Vec::new();
    if want.tables {
        // `requests` and `calls`, whole, each in its own folder.
        let mut done = Written::default();
        for table in [RequestCols::TABLE, CallCols::TABLE] {
            let folder = dir.join(table);
            fs::create_dir_all(&folder).map_err(|source| ExportError::Io {
                path: folder.clone(),
                source,
            })?;
            let plan = Plan {
                out: &folder,
                ..Plan::of(opts)
            };
            super::write_table(&plan, table, &mut done, |sink, q| {
                if table == RequestCols::TABLE {
                    super::write_requests(snap, sink, q)
                } else {
                    super::write_calls(snap, sink, q)
                }
            })?;
        }
        collected.quality.merge(&done.collected.quality);
        let n_of = |t: &str| done.rows.iter().find(|(n, _)| n == t).map_or(0, |r| r.1);
        rows.push((RequestCols::TABLE.to_owned(), n_of(RequestCols::TABLE)));
        for (t, n) in schema::REPORT_TABLES.iter().zip(&part_rows) {
            rows.push(((*t).to_owned(), *n));
        }
        rows.push((CallCols::TABLE.to_owned(), n_of(CallCols::TABLE)));
        for (s, n) in done.staged {
            let name = s.name();
            let (table, format) = name
                .rsplit_once('.')
                .map(|(t, f)| (t.to_owned(), f.to_owned()))
                .unwrap_or_default();
            let bytes = s.bytes()?;
            let local = s.commit()?;
            files.push((
                local,
                LakeFile {
                    path: format!("{}{table}/{name}", format_root(&format)),
                    table,
                    format,
                    fetched_month: None,
                    rows: n,
                    bytes,
                },
            ));
        }
    }
    Ok(StagedExport {
        files,
        rows,
        jsonl_lines: want.jsonl.then_some(jsonl_lines),
        covers,
        collected,
    })
}

/// Uploads a staged hive export: part files, then `requests` and `calls`, then the manifest,
/// then `_SUCCESS`.
#[allow(clippy::too_many_arguments)]
fn publish(
    snap: &Snapshot,
    opts: &ExportOptions,
    rt: &tokio::runtime::Runtime,
    target: &Target,
    id: &str,
    staged: StagedExport,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    let (parts, whole): (Vec<_>, Vec<_>) = staged
        .files
        .iter()
        .map(|(local, f)| (local.clone(), f.path.clone()))
        .partition(|(_, rel)| {
            rel.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("part-"))
        });
    rt.block_on(target.upload_all(&parts))?;
    rt.block_on(target.upload_all(&whole))?;
    let entries: Vec<LakeFile> = staged.files.iter().map(|(_, f)| f.clone()).collect();
    let formats = super::format_names(&opts.formats);
    let manifest = LakeManifest {
        export_id: id,
        layout: "hive",
        base: super::Manifest::new(
            snap,
            opts,
            &formats,
            &entries,
            &staged.rows,
            staged.jsonl_lines,
            &staged.collected,
        )?,
        covers: &staged.covers,
    };
    let billed_unusable = manifest.base.billed_unusable.count;
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ExportError::Internal(format!("manifest: {e}")))?;
    let manifest_rel = format!("{EXPORTS_DIR}/{id}.json");
    rt.block_on(target.put(&manifest_rel, text))?;
    rt.block_on(target.put(SUCCESS, format!("{id}\n").into_bytes()))?;
    let mut files: Vec<PathBuf> = entries.iter().map(|f| PathBuf::from(&f.path)).collect();
    files.push(PathBuf::from(manifest_rel));
    files.push(PathBuf::from(SUCCESS));
    Ok(ExportSummary {
        out: PathBuf::from(&target.shown),
        formats,
        rows: staged.rows,
        jsonl_lines: staged.jsonl_lines,
        quality: staged.collected.quality,
        bad_bodies: staged.collected.bad_bodies,
        bad_body_list: staged.collected.bad_body_list,
        billed_unusable,
        files,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// `vmr export --layout flat` to an object store: the flat export, staged locally, then
/// uploaded with the old `manifest.json` removed first and the new one put last.
pub(crate) fn export_flat_to_store(
    snap: &Snapshot,
    opts: &ExportOptions,
    target: Target,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    let rt = runtime()?;
    // First contact: a missing bucket or refused credential stops here.
    rt.block_on(target.list(super::MANIFEST))?;
    let staging = Staging::create(&export_id())?;
    let local = ExportOptions {
        out: staging.0.clone(),
        ..opts.clone()
    };
    let mut summary = super::export_local(snap, &local, started)?;
    let mut files = Vec::new();
    let mut manifest = None;
    for f in &summary.files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == super::MANIFEST {
            manifest = Some(f.clone());
        } else {
            files.push((f.clone(), name));
        }
    }
    rt.block_on(async {
        target.delete(super::MANIFEST).await?;
        target.upload_all(&files).await?;
        if let Some(m) = &manifest {
            target.upload(m, super::MANIFEST).await?;
        }
        Ok::<(), ExportError>(())
    })?;
    summary.out = PathBuf::from(&target.shown);
    summary.files = files
        .into_iter()
        .map(|(_, n)| PathBuf::from(n))
        .chain(manifest.map(|_| PathBuf::from(super::MANIFEST)))
        .collect();
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// The layout and destination an export takes.
pub(crate) fn route(opts: &ExportOptions) -> Result<(Dest, Layout), ExportError> {
    if opts.full && opts.layout != Layout::Hive {
        return Err(ExportError::Refused(
            "--full starts a new history of a hive destination; it needs --layout hive".into(),
        ));
    }
    Ok((Dest::parse(&opts.out)?, opts.layout))
}

/// `--input s3://…` (and the other URLs `--out` takes): the object copied into `out` with the
/// lake output's client, credentials and retries; a `file://` URL names a local file. This is
/// the [`crate::input::Fetch`] the commands hand to `input`, which knows no store.
pub(crate) fn fetch_input(
    arg: &Path,
    out: &mut std::fs::File,
) -> Result<crate::input::Fetched, String> {
    match Dest::parse(arg).map_err(|e| e.to_string())? {
        Dest::Local(path) => Ok(crate::input::Fetched::Local(path)),
        Dest::Store(target) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let (recorded, _) = rt.block_on(target.download(out)).map_err(|e| match e {
                ExportError::Store { reason, .. } => reason,
                other => other.to_string(),
            })?;
            Ok(crate::input::Fetched::Copied {
                shown: target.shown.clone(),
                recorded,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_the_utc_month_of_the_fetch() {
        // 2024-05-31T23:30:00Z and 2024-06-01T00:30:00+08:00 (still May in UTC).
        assert_eq!(fetched_month(1_717_198_200_000), "2024-05");
        assert_eq!(fetched_month(1_717_173_000_000), "2024-05");
        assert_eq!(fetched_month(1_717_200_000_000), "2024-06");
        assert_eq!(fetched_month(i64::MAX), NO_MONTH);
    }

    #[test]
    fn export_ids_sort_by_time_and_differ() {
        let a = export_id();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = export_id();
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), "20261202T123456Z-abcdef".len());
    }

    #[test]
    fn out_is_a_path_a_file_url_or_s3() {
        assert!(
            matches!(Dest::parse(Path::new("vmr-out")), Ok(Dest::Local(p)) if p == Path::new("vmr-out"))
        );
        assert!(
            matches!(Dest::parse(Path::new("file:///tmp/x")), Ok(Dest::Local(p)) if p == Path::new("/tmp/x"))
        );
        match Dest::parse(Path::new("s3://bucket/some/prefix/")) {
            Ok(Dest::Store(t)) => {
                assert_eq!(t.shown, "s3://bucket/some/prefix");
                assert_eq!(t.path("a/b.json").as_ref(), "some/prefix/a/b.json");
            }
            _ => panic!("s3 URL not taken"),
        }
    }

    #[test]
    fn a_credential_in_the_url_is_refused_and_not_repeated() {
        let Err(e) = Dest::parse(Path::new("s3://AKIDEXAMPLE:s3cr3t@bucket/p")) else {
            panic!("accepted a credential in the URL");
        };
        let text = e.to_string();
        assert!(
            !text.contains("s3cr3t") && !text.contains("AKIDEXAMPLE"),
            "{text}"
        );
        assert!(matches!(
            e,
            ExportError::Store {
                permanent: true,
                ..
            }
        ));
    }

    #[test]
    fn an_s3_error_document_is_told_in_one_line() {
        let text = "Error performing GET http://h/bk?list-type=2 in 17ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>bk</BucketName></Error>";
        assert_eq!(
            one_line(text),
            "Error performing GET http://h/bk?list-type=2 in 17ms - Server returned non-2xx status code: 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(one_line("timed out\n"), "timed out");
    }

    #[test]
    fn other_schemes_are_refused_with_what_is_supported() {
        let Err(e) = Dest::parse(Path::new("gs://bucket/p")) else {
            panic!("accepted gs://");
        };
        assert!(e.to_string().contains("s3://"), "{e}");
    }
}
