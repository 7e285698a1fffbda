//! The state store's end-of-command housekeeping and a run's last commit, on a real
//! SQLite file.

use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, RunOptions, RunStatus, Runner};
use siteflow_engine::state::StateStore;
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

struct Nothing;

impl Step for Nothing {
    const KIND: &'static str = "test.nothing";
    type Input = serde_json::Map<String, serde_json::Value>;
    type Output = serde_json::Map<String, serde_json::Value>;

    fn description(&self) -> &'static str {
        "does nothing"
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
        _: &StepContext,
        _: &Self::Input,
    ) -> Result<Progress<Self::Output>, StepError> {
        Ok(Progress::Done(Default::default()))
    }
}

/// A finished run's row says how it ended and is no longer leased (both are written in its
/// last commit); a resume of it takes the lease again and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_final_and_unleased() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let registry = Arc::new(Registry::new().with(vec![Arc::new(Nothing)]));
    let sources = Sources {
        workflow: SourceText {
            path: "w.yaml".into(),
            text: "name: w\nsteps:\n  - id: a\n    uses: test.nothing\n  - id: b\n    uses: test.nothing\n    needs: [a]\n".into(),
        },
        site: None,
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
