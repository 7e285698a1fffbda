//! Showing a run as it goes: live spinners on a terminal, plain log lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use siteflow_engine::runner::{RunEvent, RunObserver};
use siteflow_engine::state::StepStatus;
use siteflow_step::LogStream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often a retry countdown is redrawn.
const TICK: Duration = Duration::from_secs(1);

/// The line that names a run as it starts, so it can be resumed whatever happens next.
fn run_started(run_id: &str, resumed: bool) -> String {
    let what = if resumed { "resumed" } else { "started" };
    format!("run {run_id} {what} (resume with: siteflow resume {run_id})")
}

/// A duration shown in whole seconds, rounded up (a countdown never shows 0s early).
fn whole_seconds(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Plain lines on stderr, one per event: one line per retry, no countdown.
pub struct PlainLines {
    /// Also print each line of step output.
    pub show_output: bool,
}

impl RunObserver for PlainLines {
    fn event(&self, e: &RunEvent) {
        match e {
            RunEvent::RunStarted { run_id, resumed } => {
                eprintln!("{}", run_started(run_id, *resumed))
            }
            RunEvent::Started { key, kind, attempt } => {
                eprintln!("[{key}] started {kind} (attempt {attempt})")
            }
            RunEvent::Retrying {
                key,
                attempt,
                delay,
                error,
            } => eprintln!(
                // One line: the output lines were shown as they came.
                "[{key}] attempt {attempt} failed ({}: {}); retrying in {}",
                error.code,
                error.message.lines().next().unwrap_or_default(),
                whole_seconds(*delay)
            ),
            RunEvent::Waiting { key, recheck_after } => eprintln!(
                "[{key}] waiting; rechecking in {}",
                whole_seconds(*recheck_after)
            ),
            RunEvent::Log { key, stream, line } if self.show_output => {
                let mark = if *stream == LogStream::Stderr {
                    "!"
                } else {
                    "|"
                };
                eprintln!("[{key}] {mark} {line}");
            }
            RunEvent::Log { .. } => {}
            RunEvent::Finished { key, status, note } => match note {
                Some(n) => eprintln!("[{key}] {} ({n})", status.event_kind()),
                None => eprintln!("[{key}] {}", status.event_kind()),
            },
        }
    }
}

/// What a step's live line shows.
#[derive(Debug, Default)]
struct StepLine {
    attempt: u32,
    /// While the step waits to retry: when the next attempt starts, and why the last failed.
    retry: Option<(Instant, String)>,
    /// The kind, the newest output line or what the step waits for.
    text: String,
}

impl StepLine {
    /// The step's name, with the attempt from the second on.
    fn prefix(&self, key: &str) -> String {
        match self.attempt {
            0 | 1 => key.to_string(),
            n => format!("{key} (attempt {n})"),
        }
    }

    /// The message at `now`: a retry counts down to the next attempt.
    fn message(&self, now: Instant) -> String {
        match &self.retry {
            Some((at, code)) => format!(
                "attempt {} failed ({code}); retrying in {}",
                self.attempt,
                whole_seconds(at.saturating_duration_since(now))
            ),
            None => self.text.clone(),
        }
    }
}

/// The spinners' shared state: one bar and line per step.
struct Board {
    multi: MultiProgress,
    steps: Mutex<HashMap<String, (ProgressBar, StepLine)>>,
}

impl Board {
    /// Changes a step's line (making its bar on first sight) and redraws its message.
    fn update(&self, key: &str, f: impl FnOnce(&mut StepLine)) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let (pb, line) = steps.entry(key.to_string()).or_insert_with(|| {
            let pb = self.multi.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            (pb, StepLine::default())
        });
        f(line);
        pb.set_prefix(line.prefix(key));
        pb.set_message(line.message(Instant::now()));
    }

    /// Redraws the countdowns.
    fn tick(&self, now: Instant) {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        for (pb, line) in steps.values().filter(|(_, l)| l.retry.is_some()) {
            pb.set_message(line.message(now));
        }
    }
}

/// Live spinners, one per running step; a step waiting to retry counts down to its next
/// attempt.
pub struct Spinners {
    board: Arc<Board>,
}

impl Spinners {
    /// Spinners drawn on stderr. Call inside the runtime: the countdowns tick on a task.
    pub fn new() -> Self {
        Self::drawn_on(ProgressDrawTarget::stderr())
    }

    fn drawn_on(target: ProgressDrawTarget) -> Self {
        let board = Arc::new(Board {
            multi: MultiProgress::with_draw_target(target),
            steps: Mutex::new(HashMap::new()),
        });
        let weak: Weak<Board> = Arc::downgrade(&board);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let Some(board) = weak.upgrade() else { break };
                board.tick(Instant::now());
            }
        });
        Spinners { board }
    }
}

impl RunObserver for Spinners {
    fn event(&self, e: &RunEvent) {
        match e {
            RunEvent::RunStarted { run_id, resumed } => {
                let line = run_started(run_id, *resumed);
                self.board.multi.suspend(|| eprintln!("{line}"));
            }
            RunEvent::Started { key, kind, attempt } => {
                self.board.update(key, |l| {
                    l.attempt = *attempt;
                    l.retry = None;
                    l.text = kind.clone();
                });
                // The time shown is the attempt's.
                let steps = self.board.steps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((pb, _)) = steps.get(key) {
                    pb.reset_elapsed();
                }
            }
            RunEvent::Retrying {
                key,
                attempt,
                delay,
                error,
            } => self.board.update(key, |l| {
                l.attempt = *attempt;
                l.retry = Some((Instant::now() + *delay, error.code.clone()));
            }),
            RunEvent::Waiting { key, recheck_after } => self.board.update(key, |l| {
                l.text = format!("waiting ({} between checks)", whole_seconds(*recheck_after));
            }),
            RunEvent::Log { key, line, .. } => self.board.update(key, |l| {
                l.text = line.chars().take(80).collect();
            }),
            RunEvent::Finished { key, status, note } => {
                let mark = match status {
                    StepStatus::Succeeded => "✓",
                    StepStatus::Skipped => "-",
                    _ => "✗",
                };
                // One line keeps the bars in place; the summary shows a failure's stderr.
                let msg = match note.as_deref().and_then(|n| n.lines().next()) {
                    Some(n) => format!("{mark} {} ({n})", status.event_kind()),
                    None => format!("{mark} {}", status.event_kind()),
                };
                self.board.update(key, |l| l.retry = None);
                let steps = self.board.steps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((pb, _)) = steps.get(key) {
                    pb.set_style(
                        ProgressStyle::with_template("  {prefix:.bold} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.finish_with_message(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siteflow_step::StepError;

    /// The seconds a step's line counts down from, if it waits to retry.
    fn countdown(s: &Spinners, key: &str) -> Option<u64> {
        let steps = s.board.steps.lock().unwrap();
        let msg = steps[key].0.message();
        let secs = msg.split("retrying in ").nth(1)?;
        secs.trim_end_matches('s').parse().ok()
    }

    fn prefix(s: &Spinners, key: &str) -> String {
        s.board.steps.lock().unwrap()[key].0.prefix()
    }

    /// A step waiting to retry counts down on its own, once a second, and its line names
    /// the attempt from the second on.
    #[tokio::test(start_paused = true)]
    async fn a_retry_counts_down_live() {
        let s = Spinners::drawn_on(ProgressDrawTarget::hidden());
        s.event(&RunEvent::Started {
            key: "a".into(),
            kind: "shell".into(),
            attempt: 1,
        });
        assert_eq!(prefix(&s, "a"), "a");
        assert_eq!(countdown(&s, "a"), None);
        s.event(&RunEvent::Retrying {
            key: "a".into(),
            attempt: 1,
            delay: Duration::from_secs(10),
            error: StepError::retryable("ExitStatus", "exited 1"),
        });
        assert_eq!(countdown(&s, "a"), Some(10));
        // No event in between: only the ticking redraws the line.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(countdown(&s, "a"), Some(7), "three frames later");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(countdown(&s, "a"), Some(2));
        // A line of output while waiting does not stop the countdown.
        s.event(&RunEvent::Log {
            key: "a".into(),
            stream: LogStream::Stderr,
            line: "late".into(),
        });
        assert_eq!(countdown(&s, "a"), Some(2));

        s.event(&RunEvent::Started {
            key: "a".into(),
            kind: "shell".into(),
            attempt: 2,
        });
        assert_eq!(prefix(&s, "a"), "a (attempt 2)");
        assert_eq!(
            countdown(&s, "a"),
            None,
            "the countdown ends with the attempt"
        );
    }
}
