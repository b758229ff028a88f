//! Instants: milliseconds since the Unix epoch, UTC, printed and parsed as RFC 3339.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time, with millisecond precision, in UTC.
/// The default is the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(i64);

/// The text is not an RFC 3339 instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid instant {0:?}: expected RFC 3339 such as 2019-11-05T00:00:00Z")]
pub struct InvalidInstant(pub String);

impl Instant {
    /// The earliest representable instant; `facts_as_of(Instant::MIN)` is the empty world.
    pub const MIN: Instant = Instant(i64::MIN);
    /// The latest representable instant.
    pub const MAX: Instant = Instant(i64::MAX);

    pub const fn from_millis(millis: i64) -> Instant {
        Instant(millis)
    }
    pub const fn from_secs(secs: i64) -> Instant {
        Instant(secs.saturating_mul(1000))
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// Whole seconds since the epoch, rounded down.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// The wall clock now.
    pub fn now() -> Instant {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Instant(millis)
    }
    pub fn plus_millis(self, millis: i64) -> Instant {
        Instant(self.0.saturating_add(millis))
    }
    pub fn plus_secs(self, secs: i64) -> Instant {
        self.plus_millis(secs.saturating_mul(1000))
    }
    pub fn plus_days(self, days: i64) -> Instant {
        self.plus_secs(days.saturating_mul(86_400))
    }

    /// Parses RFC 3339 (`2018-04-04T00:00:00Z`) or a bare date (`2018-04-04`, midnight UTC).
    pub fn parse(text: &str) -> Result<Instant, InvalidInstant> {
        let bad = || InvalidInstant(text.to_string());
        let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_string() };
        let at = OffsetDateTime::parse(&full, &Rfc3339).map_err(|_| bad())?;
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).map(Instant).map_err(|_| bad())
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(|t| t.format(&Rfc3339).ok()) {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let at = Instant::parse("2018-04-04T00:00:00Z").unwrap_or(Instant::MIN);
        assert_eq!(at.secs(), 1_522_800_000);
        assert_eq!(at.to_string(), "2018-04-04T00:00:00Z");
        assert_eq!(Instant::parse("2018-04-04"), Ok(at));
    }

    #[test]
    fn garbage_is_refused_with_the_text() {
        let err = Instant::parse("yesterday").err();
        assert_eq!(err, Some(InvalidInstant("yesterday".into())));
    }
}
