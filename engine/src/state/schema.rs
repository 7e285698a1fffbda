//! Schema migrations, applied in order and tracked by `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        workflow         TEXT NOT NULL,
        site             TEXT,
        status           TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        sources          TEXT NOT NULL,
        sources_hash     TEXT NOT NULL,
        inputs           TEXT NOT NULL,
        working_dir      TEXT NOT NULL,
        trace_id         TEXT NOT NULL,
        root_span_id     TEXT NOT NULL,
        lease_holder     TEXT,
        lease_host       TEXT,
        lease_pid        INTEGER,
        lease_pid_start  TEXT,
        lease_expires_at INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE steps (
        run_id      TEXT NOT NULL REFERENCES runs(id),
        key         TEXT NOT NULL,
        step_id     TEXT NOT NULL,
        kind        TEXT NOT NULL,
        status      TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        outputs     TEXT,
        error       TEXT,
        input_hash  TEXT,
        progress    TEXT,
        started_at  INTEGER,
        finished_at INTEGER,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id        TEXT NOT NULL,
        step_key      TEXT NOT NULL,
        attempt       INTEGER NOT NULL,
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        outcome       TEXT,
        error_class   TEXT,
        error_code    TEXT,
        error_message TEXT,
        span_id       TEXT,
        PRIMARY KEY (run_id, step_key, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id   TEXT NOT NULL,
        step_key TEXT,
        attempt  INTEGER,
        at       INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        message  TEXT NOT NULL
    );
    CREATE INDEX events_by_run ON events(run_id, step_key, seq);
    CREATE TABLE run_values (
        run_id    TEXT NOT NULL,
        namespace TEXT NOT NULL,
        key       TEXT NOT NULL,
        value     TEXT NOT NULL,
        PRIMARY KEY (run_id, namespace, key)
    ) WITHOUT ROWID;
    "#,
    // 2: the layered workflow, so a resume need not parse YAML again.
    "ALTER TABLE runs ADD COLUMN effective TEXT;",
    // 3: values every run of this database shares (SSH host keys learned by accept-new).
    r#"
    CREATE TABLE shared_values (
        namespace  TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        run_id     TEXT,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    "#,
    // 4: the lease's generation, which fences every write of the runner holding it.
    "ALTER TABLE runs ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0;",
];

/// The schema version this siteflow writes (`PRAGMA user_version`).
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to the newest schema. The version is read and the migrations applied
/// in one `IMMEDIATE` transaction, so processes opening a new database at once take turns
/// (the busy timeout waits) and each migration runs exactly once.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current >= MIGRATIONS.len() {
        return tx.commit();
    }
    for sql in MIGRATIONS.iter().skip(current) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()
}
