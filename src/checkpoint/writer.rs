//! The single writer: one thread owns the write connection and commits in groups.
//!
//! Callers hand it closures; it runs every closure waiting in its queue inside one transaction
//! (each under its own savepoint, so one failing closure does not undo the others), commits once
//! with a full fsync, and only then answers each caller. So when a write returns, it is on disk,
//! and a thousand concurrent callers share a handful of fsyncs instead of paying one each.

use super::Conn;
use std::sync::mpsc;
use std::thread;

use super::CheckpointError;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(&Conn) -> Reply + Send>;

/// Most closures folded into one transaction; bounds commit latency under a flood.
const MAX_GROUP: usize = 4096;

/// A handle on the writer thread; clones share the thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Conn) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || run(conn, rx))
            .expect("spawn the checkpoint writer thread");
        Writer { tx }
    }

    /// Queues `f` for the next group commit and returns at once; the receiver answers once the
    /// group is durable.
    pub(crate) fn submit<R, F>(
        &self,
        f: F,
    ) -> tokio::sync::oneshot::Receiver<Result<R, CheckpointError>>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, CheckpointError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn: &Conn| -> Reply {
            let result = in_savepoint(conn, f);
            Box::new(move |commit_error: Option<String>| {
                let result = match commit_error {
                    Some(e) => Err(CheckpointError::Commit(e)),
                    None => result,
                };
                let _ = tx.send(result);
            })
        });
        // If the writer thread is gone the receiver reports it below.
        let _ = self.tx.send(job);
        rx
    }

    /// Runs `f` in the next group commit and waits until it is durable.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, CheckpointError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, CheckpointError> + Send + 'static,
    {
        self.submit(f)
            .await
            .map_err(|_| CheckpointError::WriterGone)?
    }

    /// The same as [`Writer::write`], for code outside the async runtime.
    pub(crate) fn write_blocking<R, F>(&self, f: F) -> Result<R, CheckpointError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, CheckpointError> + Send + 'static,
    {
        self.submit(f)
            .blocking_recv()
            .map_err(|_| CheckpointError::WriterGone)?
    }
}

fn in_savepoint<R>(
    conn: &Conn,
    f: impl FnOnce(&Conn) -> Result<R, CheckpointError>,
) -> Result<R, CheckpointError> {
    conn.batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            conn.batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            conn.batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn run(conn: Conn, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.batch("BEGIN IMMEDIATE") {
            // Dropping the jobs drops their reply channels: every caller sees the writer fail.
            tracing::error!("checkpoint: cannot begin a transaction: {e}");
            drop(jobs);
            continue;
        }
        let replies: Vec<Reply> = jobs.into_iter().map(|job| job(&conn)).collect();
        let commit_error = conn.batch("COMMIT").err().map(|e| {
            let _ = conn.batch("ROLLBACK");
            e.to_string()
        });
        for reply in replies {
            reply(commit_error.clone());
        }
    }
}
