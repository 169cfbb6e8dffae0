//! Benchmark helper (not a user command): the floor for export, as issue 25 defines it:
//! reading the same bodies from the checkpoint and parsing each with serde_json into
//! `IgnoredAny`, nothing written.
//!
//! It reads as export does: pages of 2,000 bodies in (VIN id, version) order on this thread,
//! each page parsed on the rayon pool while the next one is read. That whole pass, timed from
//! the first read to the last parse, is the floor (`PARSE_FLOOR_SECONDS`, and the CPU time it
//! took, `PARSE_FLOOR_CPU_SECONDS`). For reference it then
//! times the parts alone on bodies held in memory: the read, the `IgnoredAny` parse and a parse
//! into `serde_json::Value` (what an export that built a tree per body would pay).
//!
//! Usage: parse_floor STATE_DIR

use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;
use vmr::checkpoint;

/// Bodies per page, as export reads them.
const PAGE: i64 = 2_000;

/// A page of bodies and the (VIN id, version) of its last one.
type Page = ((i64, i64), Vec<Vec<u8>>);

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn valid(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

fn main() -> anyhow::Result<()> {
    let state = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "bench-state".into()),
    );
    let conn = checkpoint::open_reader(&checkpoint::db_path(&state))?;
    let tx = conn.unchecked_transaction()?;
    let mut st = tx.prepare(
        "SELECT vin_id, version, body FROM reports WHERE (vin_id, version) > (?1, ?2)
         ORDER BY vin_id, version LIMIT ?3",
    )?;
    let mut read_page = |after: (i64, i64)| -> rusqlite::Result<Page> {
        let mut last = after;
        let mut bodies = Vec::with_capacity(PAGE as usize);
        let mut rows = st.query(rusqlite::params![after.0, after.1, PAGE])?;
        while let Some(r) = rows.next()? {
            last = (r.get(0)?, r.get(1)?);
            bodies.push(r.get(2)?);
        }
        Ok((last, bodies))
    };

    // The floor: read and parse, overlapped as export overlaps them.
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    let (mut after, mut page) = read_page((i64::MIN, i64::MIN))?;
    let (mut n, mut ok, mut bytes) = (0usize, 0usize, 0usize);
    let mut all = Vec::new();
    while !page.is_empty() {
        let mut next = Ok((after, Vec::new()));
        let mut good = 0;
        rayon::in_place_scope(|s| {
            let page = &page;
            let good = &mut good;
            s.spawn(move |_| *good = page.par_iter().filter(|b| valid(b)).count());
            next = read_page(after);
        });
        n += page.len();
        ok += good;
        bytes += page.iter().map(Vec::len).sum::<usize>();
        all.append(&mut page);
        (after, page) = next?;
    }
    let floor = t.elapsed().as_secs_f64();
    let floor_cpu = cpu_seconds() - cpu0;

    // The parts alone, for reference.
    let t = Instant::now();
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let (last, page) = read_page(after)?;
        if page.is_empty() {
            break;
        }
        after = last;
    }
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ignored = all.par_iter().filter(|b| valid(b)).count();
    let ignored_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let value = all
        .par_iter()
        .filter(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok())
        .count();
    let value_s = t.elapsed().as_secs_f64();

    let mb = bytes as f64 / 1e6;
    println!("parse_floor: {n} bodies, {mb:.1} MB, {ok} valid JSON");
    println!(
        "parse_floor: read + IgnoredAny, overlapped (the floor) {floor:.2}s  {:.0} MB/s",
        mb / floor
    );
    println!(
        "parse_floor: alone: read {read:.2}s, IgnoredAny {ignored_s:.2}s ({ignored} ok), \
         serde_json::Value {value_s:.2}s ({value} ok)"
    );
    println!("PARSE_FLOOR_SECONDS={floor:.3}");
    println!("PARSE_FLOOR_CPU_SECONDS={floor_cpu:.3}");
    Ok(())
}
