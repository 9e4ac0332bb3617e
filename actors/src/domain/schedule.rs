//! When a scheduled action runs (SPEC 2.2), as pure functions over the injected clock's
//! instants: a one-off `at`, or a 5-field cron `recurrence` read in an IANA time zone, between an
//! optional start and end. The cron grammar and its daylight-saving behaviour are croner's
//! (Vixie cron's, per the Open Cron Pattern Specification):
//!
//! - a fixed-time job whose wall-clock time falls in a spring-forward gap runs at the first
//!   valid minute after the gap, the same day;
//! - a fixed-time job in a fall-back overlap runs once, at the first of the two times;
//! - an interval job (`*/30` minutes) runs at every matching wall-clock time, both passes of an
//!   overlap included, and none inside a gap.
//!
//! A scheduler asks [`When::due`] at each tick: the latest occurrence up to now not yet run. An
//! occurrence missed while the service was down therefore runs once when it is back (only the
//! latest of several).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use super::Rejection;
use crate::clock::Timestamp;

/// The earliest instant a schedule may name: 1970-01-01T00:00:00Z.
pub const EARLIEST: Timestamp = Timestamp::from_millis(0);
/// The latest instant a schedule may name: 9999-12-31T23:59:59.999Z, the last that RFC 3339's
/// four-digit year can write.
pub const LATEST: Timestamp = Timestamp::from_millis(253_402_300_799_999);

/// An instant from RFC 3339 text (any offset), or a 400 naming `field`.
pub fn parse_instant(field: &'static str, text: &str) -> Result<Timestamp, Rejection> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| Timestamp::from_millis(at.timestamp_millis()))
        .map_err(|error| Rejection::invalid(field, format!("must be an RFC 3339 time: {error}")))
}

/// A cron recurrence read in a time zone.
#[derive(Debug, Clone)]
pub struct Recurrence {
    cron: Cron,
    zone: Tz,
}

impl Recurrence {
    /// Parses `expression` (exactly 5 fields: minute, hour, day of month, month, day of week)
    /// in `time_zone` (an IANA name); a bad one is a 400 naming `recurrence` or `time_zone`.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Recurrence, Rejection> {
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(Rejection::invalid(
                "recurrence",
                format!(
                    "must have 5 fields (minute hour day-of-month month day-of-week), has {fields}"
                ),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|error| Rejection::invalid("recurrence", error.to_string()))?;
        let zone = Tz::from_str(time_zone).map_err(|_| {
            Rejection::invalid(
                "time_zone",
                format!("{time_zone:?} is not an IANA time zone name"),
            )
        })?;
        Ok(Recurrence { cron, zone })
    }

    fn local(&self, at: Timestamp) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(at.as_millis())
            .single()
            .map(|utc| utc.with_timezone(&self.zone))
    }

    /// The first occurrence strictly after `at`.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        let next = self
            .cron
            .find_next_occurrence(&self.local(at)?, false)
            .ok()?;
        Some(Timestamp::from_millis(next.timestamp_millis()))
    }

    /// The last occurrence at or before `at`.
    pub fn last_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let last = self
            .cron
            .find_previous_occurrence(&self.local(at)?, true)
            .ok()?;
        Some(Timestamp::from_millis(last.timestamp_millis()))
    }
}

/// When a scheduled action runs.
#[derive(Debug, Clone)]
pub enum When {
    /// Once, at this instant.
    At(Timestamp),
    /// At each occurrence of a recurrence within `[start, end]`.
    Recurring {
        /// The recurrence (boxed: a parsed cron is large beside an instant).
        recurrence: Box<Recurrence>,
        /// No occurrence before this.
        start: Option<Timestamp>,
        /// No occurrence after this.
        end: Option<Timestamp>,
    },
}

impl When {
    /// The latest occurrence in `(since, now]`: the one to run now, if any. `since` is the last
    /// occurrence run, or the schedule's creation.
    pub fn due(&self, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
        match self {
            When::At(at) => (since < *at && *at <= now).then_some(*at),
            When::Recurring {
                recurrence,
                start,
                end,
            } => {
                let upto = end.map_or(now, |end| end.min(now));
                let last = recurrence.last_at_or_before(upto)?;
                // An occurrence exactly at `start` counts.
                let after = start.map_or(since, |start| since.max(start.plus_millis(-1)));
                (last > after).then_some(last)
            }
        }
    }

    /// The next occurrence after `now`, for the API's `next_run`.
    pub fn next_run(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            When::At(at) => (*at > now).then_some(*at),
            When::Recurring {
                recurrence,
                start,
                end,
            } => {
                let from = start.map_or(now, |start| now.max(start.plus_millis(-1)));
                recurrence
                    .next_after(from)
                    .filter(|next| end.is_none_or(|end| *next <= end))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant from RFC 3339.
    fn t(rfc3339: &str) -> Timestamp {
        Timestamp::from_millis(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
        )
    }

    fn every(expression: &str, zone: &str) -> Recurrence {
        Recurrence::parse(expression, zone).unwrap()
    }

    fn field_of(result: Result<Recurrence, Rejection>) -> &'static str {
        match result {
            Err(Rejection::Invalid { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_recurrence_is_five_cron_fields_in_an_iana_zone() {
        assert_eq!(
            field_of(Recurrence::parse("0 9 * * 1-5 2026", "UTC")),
            "recurrence"
        );
        assert_eq!(
            field_of(Recurrence::parse("0 0 9 * * 1-5", "UTC")),
            "recurrence"
        );
        assert_eq!(field_of(Recurrence::parse("0 9 * *", "UTC")), "recurrence");
        assert_eq!(
            field_of(Recurrence::parse("61 9 * * *", "UTC")),
            "recurrence"
        );
        assert_eq!(
            field_of(Recurrence::parse("0 9 * * *", "Mars/Olympus_Mons")),
            "time_zone"
        );
        // Weekdays at 09:00 in Paris, in winter (UTC+1) and in summer (UTC+2).
        let paris = every("0 9 * * 1-5", "Europe/Paris");
        assert_eq!(
            paris.next_after(t("2026-01-02T12:00:00Z")),
            Some(t("2026-01-05T08:00:00Z"))
        );
        assert_eq!(
            paris.next_after(t("2026-07-01T12:00:00Z")),
            Some(t("2026-07-02T07:00:00Z"))
        );
        assert_eq!(
            paris.last_at_or_before(t("2026-07-02T07:00:00Z")),
            Some(t("2026-07-02T07:00:00Z"))
        );
    }

    #[test]
    fn a_fixed_time_in_the_spring_forward_gap_runs_right_after_it() {
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT; 02:30 does not exist that day.
        let night = every("30 2 * * *", "America/New_York");
        assert_eq!(
            night.next_after(t("2026-03-08T06:00:00Z")),
            Some(t("2026-03-08T07:00:00Z"))
        );
        // The day after, 02:30 EDT again.
        assert_eq!(
            night.next_after(t("2026-03-08T07:00:00Z")),
            Some(t("2026-03-09T06:30:00Z"))
        );
    }

    #[test]
    fn a_fixed_time_in_the_fall_back_overlap_runs_once_and_an_interval_runs_in_both_passes() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let fixed = every("30 1 * * *", "America/New_York");
        assert_eq!(
            fixed.next_after(t("2026-11-01T04:00:00Z")),
            Some(t("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            fixed.next_after(t("2026-11-01T05:30:00Z")),
            Some(t("2026-11-02T06:30:00Z"))
        );
        let interval = every("*/30 * * * *", "America/New_York");
        let mut at = t("2026-11-01T04:50:00Z");
        let mut seen = Vec::new();
        for _ in 0..5 {
            at = interval.next_after(at).unwrap();
            seen.push(at);
        }
        let expected = ["05:00", "05:30", "06:00", "06:30", "07:00"]
            .map(|hm| t(&format!("2026-11-01T{hm}:00Z")));
        assert_eq!(seen, expected);
    }

    #[test]
    fn due_is_the_latest_occurrence_not_yet_run_within_the_start_and_end() {
        let hourly = When::Recurring {
            recurrence: Box::new(every("0 * * * *", "UTC")),
            start: None,
            end: None,
        };
        let created = t("2026-05-01T09:10:00Z");
        assert_eq!(hourly.due(created, t("2026-05-01T09:59:00Z")), None);
        assert_eq!(
            hourly.due(created, t("2026-05-01T10:00:00Z")),
            Some(t("2026-05-01T10:00:00Z"))
        );
        // Down from 10:30 to 14:20: the 11:00 to 14:00 occurrences were missed; 14:00 runs once.
        let ran = t("2026-05-01T10:00:00Z");
        assert_eq!(
            hourly.due(ran, t("2026-05-01T14:20:00Z")),
            Some(t("2026-05-01T14:00:00Z"))
        );
        assert_eq!(
            hourly.due(t("2026-05-01T14:00:00Z"), t("2026-05-01T14:20:00Z")),
            None
        );

        let bounded = When::Recurring {
            recurrence: Box::new(every("0 * * * *", "UTC")),
            start: Some(t("2026-05-01T12:00:00Z")),
            end: Some(t("2026-05-01T15:30:00Z")),
        };
        assert_eq!(bounded.due(created, t("2026-05-01T11:00:00Z")), None);
        assert_eq!(
            bounded.due(created, t("2026-05-01T12:00:00Z")),
            Some(t("2026-05-01T12:00:00Z"))
        );
        assert_eq!(
            bounded.due(created, t("2026-05-01T18:00:00Z")),
            Some(t("2026-05-01T15:00:00Z"))
        );
        assert_eq!(
            bounded.due(t("2026-05-01T15:00:00Z"), t("2026-05-01T18:00:00Z")),
            None
        );
        assert_eq!(
            bounded.next_run(t("2026-05-01T09:00:00Z")),
            Some(t("2026-05-01T12:00:00Z"))
        );
        assert_eq!(bounded.next_run(t("2026-05-01T15:00:00Z")), None);

        let once = When::At(t("2026-05-01T12:00:00Z"));
        assert_eq!(once.due(created, t("2026-05-01T11:59:59Z")), None);
        assert_eq!(
            once.due(created, t("2026-05-02T00:00:00Z")),
            Some(t("2026-05-01T12:00:00Z"))
        );
        assert_eq!(
            once.due(t("2026-05-01T12:00:00Z"), t("2026-05-02T00:00:00Z")),
            None
        );
        assert_eq!(once.next_run(t("2026-05-01T13:00:00Z")), None);
    }
}
