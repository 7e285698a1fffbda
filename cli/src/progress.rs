//! Showing a run as it goes: live spinners on a terminal, plain log lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use siteflow_engine::runner::{RunEvent, RunObserver};
use siteflow_step::LogStream;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Plain lines on stderr, one per event.
pub struct PlainLines {
    /// Also print each line of step output.
    pub show_output: bool,
}

impl RunObserver for PlainLines {
    fn event(&self, e: &RunEvent) {
        match e {
            RunEvent::Started { key, kind, attempt } => {
                eprintln!("[{key}] started {kind} (attempt {attempt})")
            }
            RunEvent::Retrying {
                key,
                attempt,
                delay,
                error,
            } => eprintln!(
                "[{key}] attempt {attempt} failed ({error}); retrying in {}",
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            ),
            RunEvent::Waiting { key, recheck_after } => eprintln!(
                "[{key}] waiting; rechecking in {}",
                humantime::format_duration(Duration::from_millis(recheck_after.as_millis() as u64))
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
                Some(n) => eprintln!("[{key}] {} ({n})", status.to_lowercase()),
                None => eprintln!("[{key}] {}", status.to_lowercase()),
            },
        }
    }
}

/// Live spinners, one per running step.
pub struct Spinners {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Spinners {
    /// Spinners drawn on stderr.
    pub fn new() -> Self {
        Spinners {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, key: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(key.to_string())
            .or_insert_with(|| {
                let pb = self.multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed:.dim}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_prefix(key.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                pb
            })
            .clone()
    }
}

impl RunObserver for Spinners {
    fn event(&self, e: &RunEvent) {
        match e {
            RunEvent::Started { key, kind, attempt } => {
                let pb = self.bar(key);
                pb.set_message(if *attempt > 1 {
                    format!("{kind} (attempt {attempt})")
                } else {
                    kind.clone()
                });
            }
            RunEvent::Retrying {
                key, delay, error, ..
            } => self.bar(key).set_message(format!(
                "retry in {} — {}",
                humantime::format_duration(Duration::from_secs(delay.as_secs().max(1))),
                error.code
            )),
            RunEvent::Waiting { key, recheck_after } => self.bar(key).set_message(format!(
                "waiting ({} between checks)",
                humantime::format_duration(Duration::from_secs(recheck_after.as_secs().max(1)))
            )),
            RunEvent::Log { key, line, .. } => {
                let short: String = line.chars().take(80).collect();
                self.bar(key).set_message(short);
            }
            RunEvent::Finished { key, status, note } => {
                let pb = self.bar(key);
                let mark = match *status {
                    "Succeeded" => "✓",
                    "Skipped" => "-",
                    _ => "✗",
                };
                let msg = match note {
                    Some(n) => format!("{mark} {} ({n})", status.to_lowercase()),
                    None => format!("{mark} {}", status.to_lowercase()),
                };
                pb.set_style(
                    ProgressStyle::with_template("  {prefix:.bold} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.finish_with_message(msg);
            }
        }
    }
}
