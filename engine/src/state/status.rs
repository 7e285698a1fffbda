//! Typed statuses of runs, step instances and attempts, stored as the same text as ever.
//!
//! Each enum is written to and read from SQLite through `ToSql`/`FromSql` with the names
//! below, so databases written before these types existed read back unchanged.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Declares a status enum with its stored names, `as_str`, parsing, SQL and string comparison.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The stored name (as [`Self::as_str`]).
            pub fn name(self) -> &'static str {
                self.as_str()
            }

            /// The value stored as `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Reads as the text it is stored as (`row.status.to_lowercase()`,
        /// `attempt.outcome.as_deref() == Some("failed")`).
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(concat!("unknown ", stringify!($name), " `{}`"), text).into(),
                    )
                })
            }
        }
    };
}

stored_enum! {
    /// Where a run stands: Running while a runner holds it, then final.
    RunStatus {
        /// Created, not yet started (not written by this version; read for completeness).
        Queued => "Queued",
        /// A runner works on it (or one died; `resume` continues).
        Running => "Running",
        /// Every step succeeded or was skipped.
        Succeeded => "Succeeded",
        /// A step failed; `siteflow resume` continues.
        Failed => "Failed",
        /// Stopped by Ctrl-C or `siteflow cancel`; resumable.
        Cancelled => "Cancelled",
    }
}

stored_enum! {
    /// Where a step instance stands (`steps.<id>.status` in expressions).
    StepStatus {
        /// Not started yet (or reset by a rerun).
        Pending => "Pending",
        /// An attempt is in flight.
        Running => "Running",
        /// An attempt failed; another follows after a delay.
        WaitingRetry => "WaitingRetry",
        /// Done (run, satisfied, or reused from an earlier invocation).
        Succeeded => "Succeeded",
        /// Its last attempt failed.
        Failed => "Failed",
        /// Its `if` was false, or a step it needs was skipped.
        Skipped => "Skipped",
        /// Stopped by a cancel; resumable.
        Cancelled => "Cancelled",
        /// A step it needs did not succeed: never started (reported, not stored).
        Blocked => "Blocked",
    }
}

stored_enum! {
    /// How one attempt ended.
    AttemptOutcome {
        /// `apply` finished.
        Succeeded => "succeeded",
        /// `observe` found it already done.
        Satisfied => "satisfied",
        /// It failed.
        Failed => "failed",
        /// It was cancelled.
        Cancelled => "cancelled",
    }
}

impl StepStatus {
    /// The lowercase name the event log and progress lines use (`succeeded`, `skipped`).
    pub fn event_kind(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::WaitingRetry => "waitingretry",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Blocked => "blocked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// The names databases hold today (written before these types existed).
    const RUN_NAMES: &[&str] = &["Queued", "Running", "Succeeded", "Failed", "Cancelled"];
    const STEP_NAMES: &[&str] = &[
        "Pending",
        "Running",
        "WaitingRetry",
        "Succeeded",
        "Failed",
        "Skipped",
        "Cancelled",
        "Blocked",
    ];
    const OUTCOME_NAMES: &[&str] = &["succeeded", "satisfied", "failed", "cancelled"];

    fn round_trip<T: ToSql + FromSql + PartialEq + std::fmt::Debug>(names: &[&str], all: &[T]) {
        let c = Connection::open_in_memory().unwrap();
        c.execute("CREATE TABLE t (s TEXT)", []).unwrap();
        assert_eq!(names.len(), all.len());
        for (name, value) in names.iter().zip(all) {
            // An old row reads back as the typed value...
            let read: T = c
                .query_row("SELECT ?1", [name], |r| r.get(0))
                .unwrap_or_else(|e| panic!("`{name}` does not read back: {e}"));
            assert_eq!(&read, value);
            // ...and the typed value is stored as the old text.
            c.execute("DELETE FROM t", []).unwrap();
            c.execute("INSERT INTO t VALUES (?1)", [value]).unwrap();
            let stored: String = c.query_row("SELECT s FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(&stored, name);
        }
    }

    #[test]
    fn statuses_are_stored_as_the_names_old_databases_hold() {
        round_trip(RUN_NAMES, RunStatus::ALL);
        round_trip(STEP_NAMES, StepStatus::ALL);
        round_trip(OUTCOME_NAMES, AttemptOutcome::ALL);
    }

    #[test]
    fn an_unknown_stored_status_is_an_error_not_a_default() {
        let c = Connection::open_in_memory().unwrap();
        let r: rusqlite::Result<StepStatus> = c.query_row("SELECT 'Done'", [], |r| r.get(0));
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn statuses_serialize_as_their_stored_names() {
        for s in StepStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.event_kind(), s.as_str().to_lowercase());
        }
        for s in RunStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            serde_json::to_value(AttemptOutcome::Satisfied).unwrap(),
            "satisfied"
        );
    }
}
