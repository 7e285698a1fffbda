//! The store: one SQLite connection owned by a dedicated thread; concurrent writes that
//! arrive together share one durable commit (group commit).

use super::schema;
use super::status::{AttemptOutcome, RunStatus, StepStatus};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use siteflow_step::{LogStream, StepError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("open state database {path}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Creating the state directory failed.
    #[error("create state directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A query failed.
    #[error("state database query")]
    Sql(#[from] rusqlite::Error),
    /// The commit failed; nothing of the batch was written.
    #[error("commit to the state database: {0}")]
    Commit(String),
    /// The store thread is gone.
    #[error("the state store has shut down")]
    Closed,
    /// No run has this id.
    #[error("no run `{0}` in the state database")]
    NoSuchRun(String),
    /// A reading command found a database older than this siteflow (it never migrates).
    #[error(
        "the state database {path} has schema version {found}, older than this siteflow's {current}; a command that writes (`siteflow run`, `resume`, `cancel`, `unlock`) upgrades it, then this one can read it"
    )]
    OldSchema {
        /// The database path.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// This siteflow's version.
        current: i64,
    },
    /// The database was written by a newer siteflow.
    #[error(
        "the state database {path} has schema version {found}, newer than this siteflow's {current}: use the siteflow that wrote it"
    )]
    NewSchema {
        /// The database path.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// This siteflow's version.
        current: i64,
    },
    /// This runner no longer holds the run's lease (another runner took it over): nothing
    /// of the refused writes was made.
    #[error(
        "this runner lost the run's lease to another runner (it was stopped or cut off longer than the lease lasts); it stopped, and the new holder continues the run"
    )]
    LeaseLost,
}

/// The error a [`Write::Fence`] raises inside a transaction (rolled back with it); carried
/// as a conversion failure, the one custom rusqlite error without extra features.
#[derive(Debug, thiserror::Error)]
#[error("the run's lease is held by another runner")]
struct LeaseLostError;

/// A query error, with a refused fence told apart.
fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::ToSqlConversionFailure(inner) if inner.is::<LeaseLostError>() => {
            StoreError::LeaseLost
        }
        _ => StoreError::Sql(e),
    }
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// What the store thread receives.
enum Msg {
    /// Work to commit (grouped with whatever else is queued).
    Job(Job),
    /// Copy the WAL into the database file and truncate it, between commits.
    Checkpoint(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to the state database; cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    jobs: mpsc::Sender<Msg>,
    commits: Arc<AtomicU64>,
    /// Whether writes currently come back to back (polling pays off).
    hot: Arc<AtomicBool>,
    path: PathBuf,
}

/// A run as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Site name.
    pub site: Option<String>,
    /// Where the run stands.
    pub status: RunStatus,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// The sources (JSON of [`crate::plan::Sources`]).
    #[serde(skip)]
    pub sources: String,
    /// Hash of the sources.
    pub sources_hash: String,
    /// Resolved inputs (JSON), no secret values.
    pub inputs: Value,
    /// The directory the run was started in.
    pub working_dir: String,
    /// The run's trace id (32 hex digits).
    pub trace_id: String,
    /// The run's root span id (16 hex digits) every invocation's span hangs from.
    pub root_span_id: String,
    /// Current lease holder, if any.
    pub lease_holder: Option<String>,
    /// The layered workflow (JSON), written at creation; not loaded with the row.
    #[serde(skip)]
    pub effective: Option<String>,
}

/// A step instance as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRow {
    /// Instance key (`id` or `id[3]`).
    pub key: String,
    /// The step id.
    pub step_id: String,
    /// Its kind.
    pub kind: String,
    /// Where the instance stands.
    pub status: StepStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Outputs (secrets stripped).
    pub outputs: Option<Value>,
    /// Last error.
    pub error: Option<StepError>,
    /// Hash of the resolved input (secrets redacted).
    pub input_hash: Option<String>,
    /// Saved progress.
    pub progress: Option<Value>,
}

/// One attempt as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    /// Instance key.
    pub step_key: String,
    /// 1-based.
    pub attempt: u32,
    /// Start (ms).
    pub started_at: i64,
    /// End (ms).
    pub finished_at: Option<i64>,
    /// How it ended, once it did.
    pub outcome: Option<AttemptOutcome>,
    /// Error class.
    pub error_class: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// The attempt's span id.
    pub span_id: Option<String>,
}

/// One event of the append-only log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    /// Sequence number.
    pub seq: i64,
    /// Instance key, if about a step.
    pub step_key: Option<String>,
    /// Attempt, if about one.
    pub attempt: Option<u32>,
    /// Time (ms).
    pub at: i64,
    /// started, succeeded, failed, retry, wait, stdout, stderr, info, skipped, …
    pub kind: String,
    /// Text (secrets redacted).
    pub message: String,
}

/// Who holds a run.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `user@host:pid`.
    pub holder: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time (from /proc), to tell a reused pid apart.
    pub pid_start: String,
    /// Which taking of the lease this is (one more each time a runner takes it): every
    /// write of the runner is fenced with it ([`Write::Fence`]).
    pub generation: i64,
}

impl Lease {
    /// The lease this process would hold.
    pub fn this_process() -> Lease {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let pid = std::process::id();
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        Lease {
            holder: format!("{user}@{host}:{pid}"),
            host,
            pid,
            pid_start: process_start(pid).unwrap_or_default(),
            generation: 0,
        }
    }
}

/// Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another live runner holds it.
    #[error(
        "run {run} is held by {holder} (lease expires in {expires_in:?}); if that runner is dead, `siteflow unlock {run}`"
    )]
    Held {
        /// The run.
        run: String,
        /// Who holds it.
        holder: String,
        /// Until when.
        expires_in: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `StateStore::unlock` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlock {
    /// The lease of this holder was broken.
    Broken(String),
    /// Nobody held the run.
    NotLocked,
    /// A live runner holds it: nothing was changed (`force` breaks it anyway).
    Live {
        /// Who.
        holder: String,
        /// When its lease runs out without a heartbeat.
        expires_in: Duration,
        /// Whether it runs on this host (its process is alive).
        same_host: bool,
    },
}

/// How long a lease lasts without a heartbeat.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// One change to a run's state; a batch of them is one commit.
#[derive(Debug, Clone)]
pub enum Write {
    /// The `Started` writes after this one are skipped when a cancel of the run has been
    /// requested (checked in the same transaction, so no step starts once a cancel is
    /// committed); [`StateStore::write_starts`] says whether they were.
    StartGate,
    /// Refuses the whole commit (with [`StoreError::LeaseLost`]) unless `holder` still holds
    /// the run's lease in `generation`: a runner that lost its lease writes nothing more.
    Fence {
        /// The holder.
        holder: String,
        /// The lease generation it took.
        generation: i64,
    },
    /// A step instance starts an attempt (status Running, attempt row, event).
    Started {
        /// Instance key.
        key: String,
        /// Step id.
        step_id: String,
        /// Kind.
        kind: String,
        /// 1-based attempt.
        attempt: u32,
        /// Hash of the resolved input.
        input_hash: String,
        /// The attempt's span id, when known.
        span_id: Option<String>,
    },
    /// An attempt ended.
    AttemptEnded {
        /// Instance key.
        key: String,
        /// Attempt.
        attempt: u32,
        /// How it ended.
        outcome: AttemptOutcome,
        /// The error, if failed.
        error: Option<StepError>,
    },
    /// The step waits before another attempt.
    WaitingRetry {
        /// Instance key.
        key: String,
        /// The attempt that failed.
        attempt: u32,
        /// The delay.
        delay: Duration,
    },
    /// A step instance reached a final state.
    Finished {
        /// Instance key.
        key: String,
        /// Step id.
        step_id: String,
        /// Kind.
        kind: String,
        /// Succeeded, Failed, Skipped or Cancelled.
        status: StepStatus,
        /// Outputs (secrets stripped).
        outputs: Option<Value>,
        /// The error.
        error: Option<StepError>,
        /// Input hash, when the step was resolved.
        input_hash: Option<String>,
        /// A note for the event log.
        note: Option<String>,
    },
    /// The span id of an attempt, once known.
    AttemptSpan {
        /// Instance key.
        key: String,
        /// Attempt.
        attempt: u32,
        /// Span id (hex).
        span_id: String,
    },
    /// Saved progress of a running step.
    Progress {
        /// Instance key.
        key: String,
        /// The progress value.
        progress: Value,
    },
    /// A line for the event log.
    Event {
        /// Instance key.
        key: Option<String>,
        /// Attempt.
        attempt: Option<u32>,
        /// Event kind.
        kind: &'static str,
        /// Text (already redacted).
        message: String,
    },
    /// The run's status.
    RunStatus(RunStatus),
    /// Gives the lease up (if still held by `holder`), in the same commit as the writes
    /// before it.
    ReleaseLease {
        /// The holder giving it up.
        holder: String,
    },
    /// A run-scoped value a step saved ([`StateStore::run_value`]).
    RunValue {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The value (already redacted).
        value: Value,
    },
    /// A value every run shares, saved by a step of this run ([`StateStore::shared_value`]).
    SharedValue {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The value (already redacted).
        value: Value,
    },
    /// Forget a step's result so it runs again (`rerun`, `--reload`).
    Reset {
        /// Instance key (or a step id: its instances are reset too).
        step_id: String,
    },
}

/// Clears the lease of run `?1` if `?2` holds it.
const RELEASE_LEASE: &str = "UPDATE runs SET lease_holder = NULL, lease_host = NULL, lease_pid = NULL, \
     lease_pid_start = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_holder = ?2";

impl StateStore {
    /// Opens (creating if needed) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let mut conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            // Switching a new file to WAL can answer "locked" at once (no busy wait) while
            // another process creates the schema: retry it for as long as the busy timeout.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match conn.pragma_update(None, "journal_mode", "WAL") {
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => {
                        other?;
                        break;
                    }
                }
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            schema::migrate(&mut conn)?;
            Ok(conn)
        };
        let conn = open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::start(conn, path, false)
    }

    /// Opens an existing database for reading only: it is never created, migrated or
    /// written. A database older than this siteflow is an error that says which command
    /// upgrades it ([`StoreError::OldSchema`]).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let current = schema::VERSION;
        if found < current {
            return Err(StoreError::OldSchema {
                path: path.to_path_buf(),
                found,
                current,
            });
        }
        if found > current {
            return Err(StoreError::NewSchema {
                path: path.to_path_buf(),
                found,
                current,
            });
        }
        Self::start(conn, path, true)
    }

    fn start(conn: Connection, path: &Path, read_only: bool) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let commits = Arc::new(AtomicU64::new(0));
        let c2 = commits.clone();
        let hot = Arc::new(AtomicBool::new(false));
        let h2 = hot.clone();
        std::thread::Builder::new()
            .name("siteflow-state".into())
            .spawn(move || store_thread(conn, rx, c2, &h2, read_only))
            .map_err(|e| StoreError::Commit(format!("spawn store thread: {e}")))?;
        Ok(StateStore {
            jobs: tx,
            commits,
            hot,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durable commits made so far by this handle's thread.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` in the store thread; returns once its writes are durably committed.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let r = f(conn);
            let ok = r.is_ok();
            let done: Completion = Box::new(move |commit| {
                let out = match (r, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(sql_error(e)),
                    (Ok(_), Err(e)) => Err(StoreError::Commit(e)),
                };
                let _ = tx.send(out);
            });
            (ok, done)
        });
        self.jobs
            .send(Msg::Job(job))
            .map_err(|_| StoreError::Closed)?;
        answer(rx, &self.hot).await
    }

    /// Copies the WAL into the database file and truncates it (`wal_checkpoint(TRUNCATE)`,
    /// between commits). The CLI calls it once a command is done with the store, so the
    /// housekeeping of a large run is paid at its end, not by the next command.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Msg::Checkpoint(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues writes without waiting: they go out with the next commit.
    pub fn write_later(&self, run_id: &str, writes: Vec<Write>) {
        let run = run_id.to_string();
        let job: Job = Box::new(move |conn| {
            let ok = apply_writes(conn, &run, &writes).is_ok();
            (ok, Box::new(|_| {}))
        });
        let _ = self.jobs.send(Msg::Job(job));
    }

    /// Applies writes as one durable commit (shared with whatever else is queued).
    pub async fn write(&self, run_id: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        self.write_starts(run_id, writes).await.map(|_| ())
    }

    /// Like [`StateStore::write`]; returns `true` when a [`Write::StartGate`] found a cancel
    /// requested, so the `Started` writes after it were not made.
    pub async fn write_starts(&self, run_id: &str, writes: Vec<Write>) -> Result<bool, StoreError> {
        let run = run_id.to_string();
        self.call(move |conn| apply_writes(conn, &run, &writes))
            .await
    }

    /// Whether a cancel of the run has been requested (`siteflow cancel`), or
    /// [`StoreError::LeaseLost`] when `lease` no longer holds the run.
    pub async fn cancel_requested(&self, run_id: &str, lease: &Lease) -> Result<bool, StoreError> {
        let (run, holder, generation) =
            (run_id.to_string(), lease.holder.clone(), lease.generation);
        self.call(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT cancel_requested, lease_holder = ?2 AND lease_generation = ?3 FROM runs WHERE id = ?1",
                )?
                .query_row(params![run, holder, generation], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<bool>>(1)?))
                })
                .optional()?;
            match row {
                Some((_, Some(false) | None)) | None => {
                    Err(rusqlite::Error::ToSqlConversionFailure(Box::new(LeaseLostError)))
                }
                Some((cancel, Some(true))) => Ok(cancel != 0),
            }
        })
        .await
    }

    /// Creates a run, holding its lease.
    /// Returns the lease's generation (1).
    pub async fn create_run(&self, run: RunRow, lease: Lease) -> Result<i64, StoreError> {
        self.call(move |c| {
            let now = now_ms();
            c.execute(
                "INSERT INTO runs (id, workflow, site, status, created_at, updated_at, sources, sources_hash,
                   inputs, working_dir, trace_id, root_span_id, lease_holder, lease_host, lease_pid,
                   lease_pid_start, lease_expires_at, effective, lease_generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, 1)",
                params![
                    run.id,
                    run.workflow,
                    run.site,
                    run.status,
                    now,
                    run.sources,
                    run.sources_hash,
                    run.inputs.to_string(),
                    run.working_dir,
                    run.trace_id,
                    run.root_span_id,
                    lease.holder,
                    lease.host,
                    lease.pid,
                    lease.pid_start,
                    now + LEASE_TTL.as_millis() as i64,
                    run.effective,
                ],
            )?;
            Ok(1)
        })
        .await
    }

    /// The layered workflow a run was created with, if recorded.
    /// (The JSON text: callers parse it off the store thread, which has other work.)
    pub async fn run_effective(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let run = run_id.to_string();
        self.call(move |c| {
            c.query_row("SELECT effective FROM runs WHERE id = ?1", [&run], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
        })
        .await
    }

    /// Takes the run's lease, or says who holds it. Returns the lease's new generation.
    pub async fn acquire_lease(&self, run_id: &str, lease: Lease) -> Result<i64, LeaseError> {
        let run = run_id.to_string();
        let r = self
            .call(move |c| {
                let row = c
                    .query_row(
                        "SELECT lease_holder, lease_host, lease_pid, lease_pid_start, lease_expires_at FROM runs WHERE id = ?1",
                        [&run],
                        |r| {
                            Ok((
                                r.get::<_, Option<String>>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, Option<u32>>(2)?,
                                r.get::<_, Option<String>>(3)?,
                                r.get::<_, Option<i64>>(4)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((holder, host, pid, pid_start, expires)) = row else {
                    return Ok(Err(None));
                };
                let now = now_ms();
                if let (Some(holder), Some(expires)) = (holder, expires) {
                    let alive = expires > now
                        && holder != lease.holder
                        && !(host.as_deref() == Some(lease.host.as_str())
                            && pid.is_some_and(|p| process_start(p) != pid_start));
                    if alive {
                        return Ok(Err(Some((holder, Duration::from_millis((expires - now) as u64)))));
                    }
                }
                c.execute(
                    "UPDATE runs SET lease_holder = ?2, lease_host = ?3, lease_pid = ?4, lease_pid_start = ?5,
                       lease_expires_at = ?6, cancel_requested = 0, updated_at = ?7,
                       lease_generation = lease_generation + 1 WHERE id = ?1",
                    params![run, lease.holder, lease.host, lease.pid, lease.pid_start, now + LEASE_TTL.as_millis() as i64, now],
                )?;
                c.query_row("SELECT lease_generation FROM runs WHERE id = ?1", [&run], |r| {
                    r.get::<_, i64>(0)
                })
                .map(Ok)
            })
            .await?;
        match r {
            Ok(generation) => Ok(generation),
            Err(None) => Err(StoreError::NoSuchRun(run_id.to_string()).into()),
            Err(Some((holder, expires_in))) => Err(LeaseError::Held {
                run: run_id.to_string(),
                holder,
                expires_in,
            }),
        }
    }

    /// Extends the lease; returns whether a cancel was requested, or
    /// [`StoreError::LeaseLost`] when `lease` no longer holds the run.
    pub async fn heartbeat(&self, run_id: &str, lease: &Lease) -> Result<bool, StoreError> {
        let (run, holder, generation) =
            (run_id.to_string(), lease.holder.clone(), lease.generation);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE runs SET lease_expires_at = ?3 WHERE id = ?1 AND lease_holder = ?2 AND lease_generation = ?4",
                params![run, holder, now_ms() + LEASE_TTL.as_millis() as i64, generation],
            )?;
            if n == 0 {
                return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(LeaseLostError)));
            }
            c.query_row(
                "SELECT cancel_requested FROM runs WHERE id = ?1",
                [&run],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v != 0)
        })
        .await
    }

    /// Gives the lease up (if still ours).
    pub async fn release_lease(&self, run_id: &str, holder: &str) -> Result<(), StoreError> {
        let (run, holder) = (run_id.to_string(), holder.to_string());
        self.call(move |c| {
            c.execute(RELEASE_LEASE, params![run, holder])?;
            Ok(())
        })
        .await
    }

    /// Breaks whatever lease the run has; returns the former holder.
    pub async fn unlock(&self, run_id: &str, force: bool) -> Result<Unlock, StoreError> {
        let run = run_id.to_string();
        let me = Lease::this_process();
        let r = self
            .call(move |c| {
                let row = c
                    .query_row(
                        "SELECT lease_holder, lease_host, lease_pid, lease_pid_start, lease_expires_at FROM runs WHERE id = ?1",
                        [&run],
                        |r| {
                            Ok((
                                r.get::<_, Option<String>>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, Option<u32>>(2)?,
                                r.get::<_, Option<String>>(3)?,
                                r.get::<_, Option<i64>>(4)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((holder, host, pid, pid_start, expires)) = row else {
                    return Ok(None);
                };
                let Some(holder) = holder else {
                    return Ok(Some(Unlock::NotLocked));
                };
                let now = now_ms();
                let expires = expires.unwrap_or(0);
                let here = host.as_deref() == Some(me.host.as_str());
                // On this host the process itself says whether it lives; elsewhere, the
                // heartbeat's expiry does.
                let live = if here {
                    pid.is_some_and(|p| process_start(p).is_some() && process_start(p) == pid_start)
                } else {
                    expires > now
                };
                if live && !force {
                    return Ok(Some(Unlock::Live {
                        holder,
                        expires_in: Duration::from_millis((expires - now).max(0) as u64),
                        same_host: here,
                    }));
                }
                c.execute(
                    "UPDATE runs SET lease_holder = NULL, lease_host = NULL, lease_pid = NULL, lease_pid_start = NULL,
                       lease_expires_at = NULL WHERE id = ?1",
                    [&run],
                )?;
                Ok(Some(Unlock::Broken(holder)))
            })
            .await?;
        r.ok_or_else(|| StoreError::NoSuchRun(run_id.to_string()))
    }

    /// Asks the run's holder to cancel; returns the holder, if any.
    pub async fn request_cancel(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let run = run_id.to_string();
        let r = self
            .call(move |c| {
                let n = c.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [&run])?;
                if n == 0 {
                    return Ok(None);
                }
                c.query_row("SELECT lease_holder FROM runs WHERE id = ?1", [&run], |r| {
                    r.get(0)
                })
                .map(Some)
            })
            .await?;
        r.ok_or_else(|| StoreError::NoSuchRun(run_id.to_string()))
    }

    /// The run, if it exists.
    pub async fn run(&self, run_id: &str) -> Result<RunRow, StoreError> {
        let run = run_id.to_string();
        let r = self
            .call(move |c| {
                c.query_row(&format!("{RUN_SELECT} WHERE id = ?1"), [&run], run_from_row)
                    .optional()
            })
            .await?;
        r.ok_or_else(|| StoreError::NoSuchRun(run_id.to_string()))
    }

    /// The newest runs first.
    /// Ids of runs starting with `prefix` (at most `limit`), newest first.
    pub async fn run_ids_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let escaped: String = prefix
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT id FROM runs WHERE id LIKE ?1 || '%' ESCAPE '\\'
                 ORDER BY created_at DESC, id DESC LIMIT ?2",
            )?;
            st.query_map(params![escaped, limit], |r| r.get(0))?
                .collect()
        })
        .await
    }

    pub async fn runs(&self, limit: u32) -> Result<Vec<RunRow>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "{RUN_SELECT} ORDER BY created_at DESC, id DESC LIMIT ?1"
            ))?;
            st.query_map([limit], run_from_row)?.collect()
        })
        .await
    }

    /// The run's step instances, in start order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
        self.load_steps(run_id, true).await
    }

    /// The run's step instances in key order (cheaper: no sort), as a resume needs them.
    pub async fn steps_for_resume(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
        self.load_steps(run_id, false).await
    }

    async fn load_steps(
        &self,
        run_id: &str,
        in_start_order: bool,
    ) -> Result<Vec<StepRow>, StoreError> {
        let run = run_id.to_string();
        self.call(move |c| {
            let order = if in_start_order {
                "ORDER BY COALESCE(started_at, finished_at), key"
            } else {
                ""
            };
            let mut st = c.prepare(&format!(
                "SELECT key, step_id, kind, status, attempts, outputs, error, input_hash, progress
                 FROM steps WHERE run_id = ?1 {order}"
            ))?;
            fn json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
                s.and_then(|s| serde_json::from_str(&s).ok())
            }
            st.query_map([run], |r| {
                let status: StepStatus = r.get(3)?;
                // A succeeded step's last error is history nobody reads on resume.
                let error = if in_start_order || status != StepStatus::Succeeded {
                    json(r.get(6)?)
                } else {
                    None
                };
                Ok(StepRow {
                    key: r.get(0)?,
                    step_id: r.get(1)?,
                    kind: r.get(2)?,
                    status,
                    attempts: r.get(4)?,
                    outputs: json(r.get(5)?),
                    error,
                    input_hash: r.get(7)?,
                    progress: json(r.get(8)?),
                })
            })?
            .collect()
        })
        .await
    }

    /// The run's attempts.
    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        let run = run_id.to_string();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT step_key, attempt, started_at, finished_at, outcome, error_class, error_code, error_message, span_id
                 FROM attempts WHERE run_id = ?1 ORDER BY started_at, step_key, attempt",
            )?;
            st.query_map([run], |r| {
                Ok(AttemptRow {
                    step_key: r.get(0)?,
                    attempt: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    outcome: r.get(4)?,
                    error_class: r.get(5)?,
                    error_code: r.get(6)?,
                    error_message: r.get(7)?,
                    span_id: r.get(8)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// The run's events, optionally for one step (its instances included).
    pub async fn events(
        &self,
        run_id: &str,
        step: Option<&str>,
    ) -> Result<Vec<EventRow>, StoreError> {
        let run = run_id.to_string();
        let step = step.map(str::to_string);
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT seq, step_key, attempt, at, kind, message FROM events
                 WHERE run_id = ?1 AND (?2 IS NULL OR step_key = ?2 OR step_key LIKE ?2 || '[%')
                 ORDER BY seq",
            )?;
            st.query_map(params![run, step], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    step_key: r.get(1)?,
                    attempt: r.get(2)?,
                    at: r.get(3)?,
                    kind: r.get(4)?,
                    message: r.get(5)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// The last `lines` lines (oldest first) a step instance's `attempt` wrote to `stream`
    /// (`stderr`, `stdout`), as stored: redacted and bounded.
    pub async fn log_tail(
        &self,
        run_id: &str,
        key: &str,
        attempt: u32,
        stream: LogStream,
        lines: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (run, key) = (run_id.to_string(), key.to_string());
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT message FROM events WHERE run_id = ?1 AND step_key = ?2 AND attempt = ?3
                 AND kind = ?4 ORDER BY seq DESC LIMIT ?5",
            )?;
            let mut tail = st
                .query_map(params![run, key, attempt, stream.name(), lines], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tail.reverse();
            Ok(tail)
        })
        .await
    }

    /// A run-scoped value.
    pub async fn run_value(
        &self,
        run_id: &str,
        ns: &str,
        key: &str,
    ) -> Result<Option<Value>, StoreError> {
        let (run, ns, key) = (run_id.to_string(), ns.to_string(), key.to_string());
        self.call(move |c| {
            c.query_row(
                "SELECT value FROM run_values WHERE run_id = ?1 AND namespace = ?2 AND key = ?3",
                params![run, ns, key],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|v| v.and_then(|s| serde_json::from_str(&s).ok()))
        })
        .await
    }

    /// A value every run of this database shares.
    pub async fn shared_value(&self, ns: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.call(move |c| {
            c.query_row(
                "SELECT value FROM shared_values WHERE namespace = ?1 AND key = ?2",
                params![ns, key],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|v| v.and_then(|s| serde_json::from_str(&s).ok()))
        })
        .await
    }

    /// Saves a shared value durably, noting the run that saved it. Unfenced: a runner saves
    /// its shared values with [`Write::SharedValue`] behind its lease's [`Write::Fence`].
    pub async fn set_shared_value(
        &self,
        ns: &str,
        key: &str,
        value: Value,
        run_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let (ns, key, run) = (ns.to_string(), key.to_string(), run_id.map(str::to_string));
        self.call(move |c| put_shared_value(c, &ns, &key, &value, run.as_deref(), now_ms()))
            .await
    }

    /// Every shared value of a namespace: (key, value, updated_at ms, run id), by key.
    pub async fn shared_values(
        &self,
        ns: &str,
    ) -> Result<Vec<(String, Value, i64, Option<String>)>, StoreError> {
        let ns = ns.to_string();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT key, value, updated_at, run_id FROM shared_values WHERE namespace = ?1 ORDER BY key",
            )?;
            st.query_map(params![ns], |r| {
                let v: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    serde_json::from_str(&v).unwrap_or(Value::Null),
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?
            .collect()
        })
        .await
    }

    /// Removes a shared value; whether it existed.
    pub async fn delete_shared_value(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.call(move |c| {
            Ok(c.execute(
                "DELETE FROM shared_values WHERE namespace = ?1 AND key = ?2",
                params![ns, key],
            )? > 0)
        })
        .await
    }

    /// Runs `PRAGMA integrity_check`; `ok` when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        self.call(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .await
    }
}

const RUN_SELECT: &str =
    "SELECT id, workflow, site, status, created_at, updated_at, sources, sources_hash, inputs,
    working_dir, trace_id, root_span_id, lease_holder FROM runs";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        workflow: r.get(1)?,
        site: r.get(2)?,
        status: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        sources: r.get(6)?,
        sources_hash: r.get(7)?,
        inputs: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or(Value::Null),
        working_dir: r.get(9)?,
        trace_id: r.get(10)?,
        root_span_id: r.get(11)?,
        lease_holder: r.get(12)?,
        effective: None,
    })
}

fn error_json(e: &Option<StepError>) -> Option<String> {
    e.as_ref().and_then(|e| serde_json::to_string(e).ok())
}

/// Applies `writes`; returns whether a [`Write::StartGate`] skipped the `Started` writes.
fn apply_writes(c: &Connection, run: &str, writes: &[Write]) -> rusqlite::Result<bool> {
    let now = now_ms();
    let mut skip_starts = false;
    for w in writes {
        match w {
            Write::StartGate => {
                skip_starts = c
                    .prepare_cached("SELECT cancel_requested FROM runs WHERE id = ?1")?
                    .query_row([run], |r| r.get::<_, i64>(0))
                    .optional()?
                    .is_some_and(|v| v != 0);
            }
            Write::Fence { holder, generation } => {
                let held = c
                    .prepare_cached(
                        "SELECT 1 FROM runs WHERE id = ?1 AND lease_holder = ?2 AND lease_generation = ?3",
                    )?
                    .query_row(params![run, holder, generation], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !held {
                    return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                        LeaseLostError,
                    )));
                }
            }
            Write::Started { .. } if skip_starts => {}
            Write::Started {
                key,
                step_id,
                kind,
                attempt,
                input_hash,
                span_id,
            } => {
                c.prepare_cached(
                    "INSERT INTO steps (run_id, key, step_id, kind, status, attempts, input_hash, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?8, ?5, ?6, ?7)
                     ON CONFLICT (run_id, key) DO UPDATE SET status = ?8, attempts = ?5,
                       input_hash = ?6, kind = ?4, error = NULL, finished_at = NULL",
                )?
                .execute(params![
                    run,
                    key,
                    step_id,
                    kind,
                    attempt,
                    input_hash,
                    now,
                    StepStatus::Running
                ])?;
                c.prepare_cached(
                    "INSERT OR REPLACE INTO attempts (run_id, step_key, attempt, started_at, span_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![run, key, attempt, now, span_id])?;
                // The attempt row records the start (`logs` shows it); the event log gets
                // what happened in it, so a step start costs fewer page writes.
            }
            Write::AttemptEnded {
                key,
                attempt,
                outcome,
                error,
            } => {
                c.prepare_cached(
                    "UPDATE attempts SET finished_at = ?4, outcome = ?5, error_class = ?6, error_code = ?7,
                       error_message = ?8 WHERE run_id = ?1 AND step_key = ?2 AND attempt = ?3",
                )?
                .execute(params![
                    run,
                    key,
                    attempt,
                    now,
                    outcome,
                    error.as_ref().map(|e| e.class.name()),
                    error.as_ref().map(|e| e.code.as_str()),
                    error.as_ref().map(|e| e.message.as_str()),
                ])?;
                if let Some(e) = error {
                    event(
                        c,
                        run,
                        Some(key),
                        Some(*attempt),
                        now,
                        AttemptOutcome::Failed.as_str(),
                        &format!("attempt {attempt} failed: {e}"),
                    )?;
                }
            }
            Write::WaitingRetry {
                key,
                attempt,
                delay,
            } => {
                c.prepare_cached("UPDATE steps SET status = ?3 WHERE run_id = ?1 AND key = ?2")?
                    .execute(params![run, key, StepStatus::WaitingRetry])?;
                event(
                    c,
                    run,
                    Some(key),
                    Some(*attempt),
                    now,
                    "retry",
                    &format!(
                        "retrying in {}",
                        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                    ),
                )?;
            }
            Write::Finished {
                key,
                step_id,
                kind,
                status,
                outputs,
                error,
                input_hash,
                note,
            } => {
                c.prepare_cached(
                    "INSERT INTO steps (run_id, key, step_id, kind, status, outputs, error, input_hash, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (run_id, key) DO UPDATE SET status = ?5, outputs = ?6, error = ?7,
                       input_hash = COALESCE(?8, input_hash), finished_at = ?9",
                )?
                .execute(params![
                    run,
                    key,
                    step_id,
                    kind,
                    status,
                    outputs.as_ref().map(Value::to_string),
                    error_json(error),
                    input_hash,
                    now
                ])?;
                // A plain success is already in the attempts table (`logs` shows it from
                // there); the event log records what else happened, at one row less per step.
                let msg = match (note, error) {
                    (Some(n), _) => Some(n.clone()),
                    (None, Some(e)) => Some(e.to_string()),
                    (None, None) if *status != StepStatus::Succeeded => {
                        Some(status.event_kind().to_string())
                    }
                    (None, None) => None,
                };
                if let Some(msg) = msg {
                    event(c, run, Some(key), None, now, status.event_kind(), &msg)?;
                }
            }
            Write::AttemptSpan {
                key,
                attempt,
                span_id,
            } => {
                c.prepare_cached("UPDATE attempts SET span_id = ?4 WHERE run_id = ?1 AND step_key = ?2 AND attempt = ?3")?
                    .execute(params![run, key, attempt, span_id])?;
            }
            Write::Progress { key, progress } => {
                c.prepare_cached("UPDATE steps SET progress = ?3 WHERE run_id = ?1 AND key = ?2")?
                    .execute(params![run, key, progress.to_string()])?;
            }
            Write::Event {
                key,
                attempt,
                kind,
                message,
            } => event(c, run, key.as_deref(), *attempt, now, kind, message)?,
            Write::RunStatus(status) => {
                c.prepare_cached("UPDATE runs SET status = ?2, updated_at = ?3 WHERE id = ?1")?
                    .execute(params![run, status, now])?;
            }
            Write::ReleaseLease { holder } => {
                c.prepare_cached(RELEASE_LEASE)?
                    .execute(params![run, holder])?;
            }
            Write::RunValue {
                namespace,
                key,
                value,
            } => {
                c.prepare_cached(
                    "INSERT INTO run_values (run_id, namespace, key, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (run_id, namespace, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![run, namespace, key, value.to_string()])?;
            }
            Write::SharedValue {
                namespace,
                key,
                value,
            } => put_shared_value(c, namespace, key, value, Some(run), now)?,
            Write::Reset { step_id } => {
                c.prepare_cached(
                    "UPDATE steps SET status = ?3, outputs = NULL, error = NULL, progress = NULL
                     WHERE run_id = ?1 AND (key = ?2 OR step_id = ?2)",
                )?
                .execute(params![run, step_id, StepStatus::Pending])?;
            }
        }
    }
    Ok(skip_starts)
}

/// Inserts or replaces a shared value, noting the run that saved it.
fn put_shared_value(
    c: &Connection,
    ns: &str,
    key: &str,
    value: &Value,
    run: Option<&str>,
    at: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO shared_values (namespace, key, value, updated_at, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
         updated_at = excluded.updated_at, run_id = excluded.run_id",
    )?
    .execute(params![ns, key, value.to_string(), at, run])?;
    Ok(())
}

fn event(
    c: &Connection,
    run: &str,
    key: Option<&str>,
    attempt: Option<u32>,
    at: i64,
    kind: &str,
    message: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO events (run_id, step_key, attempt, at, kind, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![run, key, attempt, at, kind, message])?;
    Ok(())
}

/// The next message. While writes come back to back (a chain's next write comes ~0.1 ms
/// after the previous commit, sooner than a parked thread wakes up: `hot`), it is polled
/// for a short while first, then waited for; whether it came within that while decides
/// `hot` for the next time, so a store whose writes are spread out never polls.
fn wait_for_job(rx: &mpsc::Receiver<Msg>, hot: &AtomicBool) -> Option<Msg> {
    let start = std::time::Instant::now();
    let poll = hot.load(Ordering::Relaxed);
    let got = loop {
        match rx.try_recv() {
            Ok(m) => break Some(m),
            Err(mpsc::TryRecvError::Disconnected) => break None,
            Err(mpsc::TryRecvError::Empty) if poll && start.elapsed() < SPIN => {
                std::thread::yield_now();
            }
            Err(mpsc::TryRecvError::Empty) => break rx.recv().ok(),
        }
    };
    hot.store(start.elapsed() < SPIN, Ordering::Relaxed);
    got
}

/// The store thread's answer. While writes come back to back (`hot`, see
/// [`wait_for_job`]), for a short while the caller yields to the runtime between looks
/// instead of parking on it: a commit takes ~0.2 ms here, and a parked worker wakes
/// up noticeably later than that. Yielding lets every other ready task run meanwhile.
async fn answer<R>(
    mut rx: oneshot::Receiver<Result<R, StoreError>>,
    hot: &AtomicBool,
) -> Result<R, StoreError> {
    let until = std::time::Instant::now() + SPIN;
    while hot.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        match rx.try_recv() {
            Ok(r) => return r,
            Err(oneshot::error::TryRecvError::Closed) => return Err(StoreError::Closed),
            Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
        }
    }
    rx.await.map_err(|_| StoreError::Closed)?
}

/// How long the store thread polls for its next job before it blocks (and a caller for
/// its answer before it waits).
const SPIN: Duration = Duration::from_micros(200);

fn store_thread(
    mut conn: Connection,
    rx: mpsc::Receiver<Msg>,
    commits: Arc<AtomicU64>,
    hot: &AtomicBool,
    read_only: bool,
) {
    const MAX_BATCH: usize = 4096;
    let mut next: Option<Msg> = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match wait_for_job(&rx, hot) {
                Some(m) => m,
                None => break,
            },
        };
        let first = match first {
            Msg::Job(j) => j,
            Msg::Checkpoint(reply) => {
                let r = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(StoreError::Sql);
                let _ = reply.send(r);
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let mut done = Vec::with_capacity(batch.len());
        let outcome = (|| -> rusqlite::Result<()> {
            // IMMEDIATE: take the write lock up front, so concurrent processes queue on
            // the busy timeout instead of failing a read-to-write upgrade. A read-only
            // store never takes it.
            let mut tx = conn.transaction_with_behavior(if read_only {
                rusqlite::TransactionBehavior::Deferred
            } else {
                rusqlite::TransactionBehavior::Immediate
            })?;
            for job in batch.drain(..) {
                let sp = tx.savepoint()?;
                let (ok, completion) = job(&sp);
                if ok {
                    sp.commit()?;
                }
                // A failed job's savepoint is rolled back on drop; the others still commit.
                done.push(completion);
            }
            tx.commit()
        })();
        if outcome.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        let result = outcome.map_err(|e| e.to_string());
        for d in done {
            d(result.clone());
        }
        // Jobs whose completion never ran (the transaction failed to begin) are dropped,
        // which closes their channel: callers see `Closed`, never a false success.
        for job in batch {
            drop(job);
        }
    }
}
