//! The cost of one durable SQLite commit on this machine: the floor under which no durable
//! engine can go when each step must be committed before the next one starts.

use anyhow::Result;
use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

/// Summary of timed samples.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub median: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Fastest.
    pub min: Duration,
}

impl Stats {
    /// Summarises samples (at least one).
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let n = samples.len().max(1);
        let total: Duration = samples.iter().sum();
        let at = |q: f64| {
            samples
                .get(((n - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Stats {
            n: samples.len(),
            mean: total / n as u32,
            median: at(0.5),
            p95: at(0.95),
            min: samples.first().copied().unwrap_or_default(),
        }
    }
}

/// Opens a scratch database in `dir` as the engine opens its own (WAL, synchronous=FULL)
/// and times `samples` transactions of one single-row insert each.
pub fn commit_floor(dir: &Path, samples: usize) -> Result<Stats> {
    let mut conn = Connection::open(dir.join("floor.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, v TEXT NOT NULL)",
    )?;
    let mut one = |i: usize| -> Result<Duration> {
        let t = Instant::now();
        let tx = conn.transaction()?;
        tx.prepare_cached("INSERT INTO t (at, v) VALUES (?1, ?2)")?
            .execute(rusqlite::params![i as i64, "a step finished"])?;
        tx.commit()?;
        Ok(t.elapsed())
    };
    // Warm-up: the WAL file's first pages, the statement cache.
    for i in 0..10 {
        one(i)?;
    }
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples.max(1) {
        out.push(one(i)?);
    }
    Ok(Stats::of(out))
}

/// The durable write one chain step makes, through the engine's own store and without its
/// scheduler: `StateStore::write` of what the scheduler commits between two chain steps
/// (the previous step's attempt end and final row, the next step's start), `samples` times.
pub async fn store_step_cost(dir: &Path, samples: usize) -> Result<Stats> {
    use serde_json::{Value, json};
    use siteflow_engine::state::{
        AttemptOutcome, Lease, RunRow, RunStatus, StateStore, StepStatus, Write,
    };

    let store = StateStore::open(&dir.join("store-floor.db"))?;
    let run = "rstorefloor".to_string();
    store
        .create_run(
            RunRow {
                id: run.clone(),
                workflow: "store-floor".into(),
                site: None,
                status: RunStatus::Running,
                created_at: 0,
                updated_at: 0,
                sources: "{}".into(),
                sources_hash: String::new(),
                inputs: Value::Object(Default::default()),
                working_dir: dir.display().to_string(),
                trace_id: "0".repeat(32),
                root_span_id: "0".repeat(16),
                lease_holder: None,
                effective: None,
            },
            Lease::this_process(),
        )
        .await?;
    let started = |i: usize| Write::Started {
        key: format!("s{i}"),
        step_id: format!("s{i}"),
        kind: "noop".into(),
        attempt: 1,
        input_hash: "0123456789abcdef0123456789abcdef".into(),
        span_id: None,
    };
    let ended = |i: usize| {
        [
            Write::AttemptEnded {
                key: format!("s{i}"),
                attempt: 1,
                outcome: AttemptOutcome::Succeeded,
                error: None,
            },
            Write::Finished {
                key: format!("s{i}"),
                step_id: format!("s{i}"),
                kind: "noop".into(),
                status: StepStatus::Succeeded,
                outputs: Some(json!({})),
                error: None,
                input_hash: Some("0123456789abcdef0123456789abcdef".into()),
                note: None,
            },
        ]
    };
    store.write(&run, vec![started(0)]).await?;
    let mut out = Vec::with_capacity(samples);
    for i in 1..=samples.max(1) + 10 {
        let mut w: Vec<Write> = ended(i - 1).into();
        w.push(started(i));
        let t = Instant::now();
        store.write(&run, w).await?;
        if i > 10 {
            out.push(t.elapsed());
        }
    }
    Ok(Stats::of(out))
}
