//! Durations as workflows write them everywhere (`30s`, `5m`, `1h30m`, `250ms`; a bare
//! number is seconds): the one parser, and [`Duration`], the serde type step inputs use,
//! which reads that syntax and writes one Go's `time.ParseDuration` reads too.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// Parses a duration as workflows write them everywhere: `30s`, `5m`, `1h30m`, `250ms`;
/// a bare number is seconds. The one parser for step inputs and the workflow spec alike.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>()
        && secs >= 0.0
        && secs.is_finite()
    {
        return Ok(std::time::Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(t).map_err(|e| e.to_string())
}

/// A duration that (de)serializes as workflows write it: read from `"500ms"`, `"2s"`,
/// `"1m30s"` or a number of seconds, written compactly (`"1m30s"`, `"0s"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The standard library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Written in units both our parser and Go's `time.ParseDuration` read (`h`, `m`, `s`,
/// `ms`, `us`, `ns`; no days), so a duration can go verbatim into a Flux or Kubernetes
/// manifest: `1h30m`, `1s500ms`, `0s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        let parts = [
            (secs / 3600, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (u64::from(nanos / 1_000_000), "ms"),
            (u64::from(nanos / 1_000 % 1_000), "us"),
            (u64::from(nanos % 1_000), "ns"),
        ];
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `2s` or `1m30s`, or a number of seconds")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse()
                    .map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration ({e}); write it like `30s`, `5m`, `1h30m` or `250ms`"
                    ))
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration(std::time::Duration::from_secs(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not a duration (negative)")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                std::time::Duration::try_from_secs_f64(v)
                    .map(Duration)
                    .map_err(|e| E::custom(format!("{v} is not a duration ({e})")))
            }
        }

        d.deserialize_any(DurationVisitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as `500ms`, `2s` or `1m30s`; a bare number is seconds.",
            "type": ["string", "number"],
            "minimum": 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn one_duration_syntax() {
        assert_eq!(parse_duration("90"), Ok(Std::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Ok(Std::from_millis(1500)));
        assert_eq!(parse_duration(" 1h30m "), Ok(Std::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Std::from_millis(250)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("forever").is_err());
    }

    #[test]
    fn serde_round_trip_in_the_workflow_syntax() {
        for (text, d) in [
            ("500ms", Std::from_millis(500)),
            ("2s", Std::from_secs(2)),
            ("1m30s", Std::from_secs(90)),
            ("1h1m1s", Std::from_secs(3661)),
            ("0s", Std::ZERO),
            ("36h", Std::from_secs(36 * 3600)),
            ("2s1us", Std::new(2, 1_000)),
        ] {
            let parsed: Duration = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(parsed, Duration(d), "{text}");
            assert_eq!(
                serde_json::to_value(parsed).unwrap(),
                serde_json::json!(text)
            );
        }
        let secs: Duration = serde_json::from_str("90").unwrap();
        assert_eq!(secs.get(), Std::from_secs(90));
        let frac: Duration = serde_json::from_str("1.5").unwrap();
        assert_eq!(frac.to_string(), "1s500ms");
        let bad = serde_json::from_str::<Duration>("\"forever\"").unwrap_err();
        assert!(
            bad.to_string().contains("\"forever\" is not a duration"),
            "{bad}"
        );
        assert!(serde_json::from_str::<Duration>("-1").is_err());
        assert!(serde_json::from_str::<Duration>("true").is_err());
    }

    #[test]
    fn schema_is_a_string_or_seconds() {
        let schema = serde_json::to_value(schemars::schema_for!(Duration)).unwrap();
        assert_eq!(schema["type"], serde_json::json!(["string", "number"]));
        assert!(schema["description"].as_str().unwrap().contains("1m30s"));
    }
}
