//! The state store's end-of-command housekeeping and a run's last commit, on a real
//! SQLite file.

use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, Outcome, RunError, RunOptions, RunStatus, Runner};
use siteflow_engine::state::{StateStore, StoreError};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::sync::Arc;

/// `checkpoint` copies the WAL into the database file and truncates it, between commits:
/// what was committed before is readable after, and writes queued around it still commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_truncates_the_wal_and_keeps_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = StateStore::open(&path).unwrap();
    store
        .call(|c| {
            c.execute("CREATE TABLE t (n INTEGER NOT NULL)", [])
                .map(|_| ())
        })
        .await
        .unwrap();
    for i in 0..200 {
        store
            .call(move |c| c.execute("INSERT INTO t (n) VALUES (?1)", [i]).map(|_| ()))
            .await
            .unwrap();
    }
    let wal = dir.path().join("state.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "commits went to the WAL"
    );

    // Writes queued together with the checkpoint, before and after it.
    let (a, b, c) = tokio::join!(
        store.call(|c| c.execute("INSERT INTO t (n) VALUES (1000)", []).map(|_| ())),
        store.checkpoint(),
        store.call(|c| c.execute("INSERT INTO t (n) VALUES (1001)", []).map(|_| ())),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    store.checkpoint().await.unwrap();
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        0,
        "the WAL was truncated"
    );

    let count: i64 = store
        .call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(count, 202);
    drop(store);

    // A new process (a new store) reads the same rows from the database file.
    let reopened = StateStore::open(&path).unwrap();
    let sum: i64 = reopened
        .call(|c| c.query_row("SELECT sum(n) FROM t", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(sum, (0..200).sum::<i64>() + 1000 + 1001);
}

/// Does nothing; with a [`Takeover`], saves values across a takeover of its run.
#[derive(Default)]
struct TestStep {
    takeover: Option<Takeover>,
}

impl Step for TestStep {
    const KIND: &'static str = "test.step";
    type Input = serde_json::Map<String, serde_json::Value>;
    type Output = serde_json::Map<String, serde_json::Value>;

    fn description(&self) -> &'static str {
        "does nothing, or saves values across a takeover of its run"
    }

    async fn observe(
        &self,
        _: &StepContext,
        _: &Self::Input,
    ) -> Result<Observed<Self::Output>, StepError> {
        Ok(Observed::missing())
    }

    async fn apply(
        &self,
        cx: &StepContext,
        _: &Self::Input,
    ) -> Result<Progress<Self::Output>, StepError> {
        if let Some(t) = &self.takeover {
            t.save_across(cx).await?;
        }
        Ok(Progress::Done(Default::default()))
    }
}

/// Runs `yaml` (steps of kind `test.step`) to its end on `store`.
async fn run_test_steps(store: &StateStore, yaml: &str) -> (Runner, Outcome) {
    let registry = Arc::new(Registry::new().with(vec![Arc::new(TestStep::default())]));
    let sources = Sources {
        workflow: SourceText {
            path: "w.yaml".into(),
            text: yaml.into(),
        },
        site: None,
        groups: vec![],
        sets: vec![],
    };
    let plan = compile(&sources, &registry).unwrap();
    let runner = Runner::new(
        registry,
        store.clone(),
        RunOptions::default(),
        Arc::new(NoObserver),
    );
    let outcome = runner.start(plan, sources).await.unwrap();
    (runner, outcome)
}

/// A finished run's row says how it ended and is no longer leased (both are written in its
/// last commit); a resume of it takes the lease again and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_final_and_unleased() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let (runner, outcome) = run_test_steps(
        &store,
        "name: w\nsteps:\n  - id: a\n    uses: test.step\n  - id: b\n    uses: test.step\n    needs: [a]\n",
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Succeeded);
    let row = store.run(&outcome.run_id).await.unwrap();
    assert_eq!(row.status, "Succeeded");
    assert_eq!(row.lease_holder, None);

    let again = runner.rerun(&outcome.run_id, "b", false).await.unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    runner.settle().await;
    let row = store.run(&outcome.run_id).await.unwrap();
    assert_eq!((row.status.as_str(), row.lease_holder), ("Succeeded", None));
}

/// What a [`Takeover`] saw of its writes: before and after another runner took the run over.
#[derive(Default)]
struct Seen {
    before: Vec<Result<(), StepError>>,
    after: Vec<Result<(), StepError>>,
}

/// Saves a run value and a shared value, lets another runner take the run's lease over (a
/// new generation), then tries both again.
struct Takeover {
    store: StateStore,
    seen: Arc<std::sync::Mutex<Seen>>,
}

impl Takeover {
    async fn save_across(&self, cx: &StepContext) -> Result<(), StepError> {
        let writes = async |n: i64| {
            vec![
                cx.set_run_value("t", "run", serde_json::json!(n)).await,
                cx.set_shared_value("t", "shared", serde_json::json!(n))
                    .await,
            ]
        };
        let before = writes(1).await;
        let run = cx.run_id.clone();
        self.store
            .call(move |c| {
                c.execute(
                    "UPDATE runs SET lease_holder = 'other@elsewhere:1', lease_generation = lease_generation + 1 WHERE id = ?1",
                    [run],
                )
                .map(|_| ())
            })
            .await
            .map_err(|e| StepError::permanent("Test", e.to_string()))?;
        let after = writes(2).await;
        *self.seen.lock().unwrap() = Seen { before, after };
        Ok(())
    }
}

/// A step's run and shared values are fenced with the run's lease like every other write:
/// once another runner took the run over, they are refused with `LeaseLost` and nothing of
/// them is written (issue #9, item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_saved_after_the_lease_was_lost_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let registry = Arc::new(Registry::new().with(vec![Arc::new(TestStep {
        takeover: Some(Takeover {
            store: store.clone(),
            seen: seen.clone(),
        }),
    })]));
    let sources = Sources {
        workflow: SourceText {
            path: "w.yaml".into(),
            text: "name: w\nsteps:\n  - id: a\n    uses: test.step\n".into(),
        },
        site: None,
        groups: vec![],
        sets: vec![],
    };
    let plan = compile(&sources, &registry).unwrap();
    // No heartbeat or cancel poll: the step's own writes are what meet the fence.
    let opts = RunOptions {
        heartbeat: std::time::Duration::ZERO,
        ..RunOptions::default()
    };
    let runner = Runner::new(registry, store.clone(), opts, Arc::new(NoObserver));
    let outcome = runner.start(plan, sources).await;
    assert!(
        matches!(outcome, Err(RunError::Store(StoreError::LeaseLost))),
        "the runner that lost its lease says so: {:?}",
        outcome.map(|o| o.status)
    );

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.before.len(), 2);
    assert!(seen.before.iter().all(Result::is_ok), "{:?}", seen.before);
    assert_eq!(seen.after.len(), 2);
    for r in &seen.after {
        let e = r
            .as_ref()
            .expect_err("a write after the takeover was refused");
        assert_eq!(e.code, "LeaseLost", "{e:?}");
        assert!(e.message.contains("lost the run's lease"), "{e:?}");
    }
    let values: Vec<(String, String)> = store
        .call(|c| {
            c.prepare(
                "SELECT 'run', value FROM run_values UNION ALL SELECT 'shared', value FROM shared_values",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
        .await
        .unwrap();
    assert_eq!(
        values,
        [("run".into(), "1".into()), ("shared".into(), "1".into())],
        "only the writes made while the lease was held"
    );
}

/// Rows whose statuses were written as text by earlier versions (the same names the typed
/// statuses store) read back through the store as typed values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_written_as_text_read_back_typed() {
    use siteflow_engine::state::{AttemptOutcome, StepStatus};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = StateStore::open(&path).unwrap();
    let (runner, outcome) = run_test_steps(
        &store,
        "name: w\nsteps:\n  - id: a\n    uses: test.step\n  - id: b\n    uses: test.step\n",
    )
    .await;
    let run = outcome.run_id;
    runner.settle().await;
    // As an older siteflow left them: plain text in each status column.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "UPDATE runs SET status = 'Cancelled' WHERE id = '{run}';
         UPDATE steps SET status = 'WaitingRetry' WHERE run_id = '{run}' AND key = 'a';
         UPDATE steps SET status = 'Skipped' WHERE run_id = '{run}' AND key = 'b';
         UPDATE attempts SET outcome = 'satisfied' WHERE run_id = '{run}' AND step_key = 'a';"
    ))
    .unwrap();
    drop(conn);
    let reader = StateStore::open_read_only(&path).unwrap();
    assert_eq!(reader.run(&run).await.unwrap().status, RunStatus::Cancelled);
    let mut steps: Vec<(String, StepStatus)> = reader
        .steps(&run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.key, s.status))
        .collect();
    steps.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        steps,
        [
            ("a".to_string(), StepStatus::WaitingRetry),
            ("b".to_string(), StepStatus::Skipped)
        ]
    );
    let outcomes: Vec<(String, Option<AttemptOutcome>)> = reader
        .attempts(&run)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.step_key, a.outcome))
        .collect();
    assert!(
        outcomes.contains(&("a".into(), Some(AttemptOutcome::Satisfied))),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("b".into(), Some(AttemptOutcome::Succeeded))),
        "{outcomes:?}"
    );
}
