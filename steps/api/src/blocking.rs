//! Blocking work off the async runtime: file system calls, fsync, file locks, big reads and
//! hashes run on tokio's blocking pool, never on the threads that drive the steps.

use crate::StepError;

/// Runs `f` on tokio's blocking pool and returns its result. A panic in `f` resumes in the
/// caller, as if `f` had run inline.
pub async fn blocking<T, F>(f: F) -> Result<T, StepError>
where
    F: FnOnce() -> Result<T, StepError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            // Only when the runtime shuts down before the work started.
            Err(e) => Err(StepError::cancelled(format!(
                "the work did not run, the runtime is shutting down: {e}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_result_and_runs_off_the_runtime() {
        let caller = std::thread::current().id();
        let worker = blocking(|| Ok(std::thread::current().id())).await.unwrap();
        assert_ne!(worker, caller);
        let err = blocking::<(), _>(|| Err(StepError::permanent("X", "no")))
            .await
            .unwrap_err();
        assert_eq!(err.code, "X");
    }

    #[tokio::test]
    #[should_panic(expected = "boom")]
    async fn a_panic_resumes_in_the_caller() {
        let _ = blocking::<(), _>(|| panic!("boom")).await;
    }
}
