//! Reading the journal for audits: events as JSON lines, filtered by object and time.

use std::io::Write;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use flotilla_journal::export::Line;
use flotilla_journal::{Journal, Record};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// An instant given on the command line: RFC 3339 (`2026-11-25T10:00:00Z`) or Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBound {
    /// Unix milliseconds.
    pub millis: i64,
}

impl FromStr for TimeBound {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(secs) = text.parse::<i64>() {
            let millis = secs
                .checked_mul(1000)
                .ok_or_else(|| format!("{text} is out of range"))?;
            return Ok(TimeBound { millis });
        }
        // With any offset (`+05:30`), as RFC 3339 allows; humantime reads only `Z` and no offset.
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
            if at.timestamp_millis() < 0 {
                return Err(format!("{text} is before 1970"));
            }
            return Ok(TimeBound {
                millis: at.timestamp_millis(),
            });
        }
        let at = humantime::parse_rfc3339_weak(text)
            .map_err(|e| format!("{text:?} is neither RFC 3339 nor Unix seconds: {e}"))?;
        let since_epoch = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{text} is before 1970"))?;
        let millis = i64::try_from(since_epoch.as_millis())
            .map_err(|_| format!("{text} is out of range"))?;
        Ok(TimeBound { millis })
    }
}

/// Which events `audit log` prints.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// Only this stream (one object's events).
    pub object: Option<String>,
    /// Only events at or after this time (inclusive).
    pub since: Option<TimeBound>,
    /// Only events at or before this time (inclusive).
    pub until: Option<TimeBound>,
}

impl LogFilter {
    fn admits(&self, record: &Record) -> bool {
        self.object.as_ref().is_none_or(|o| *o == record.stream)
            && self.since.is_none_or(|t| record.timestamp_ms >= t.millis)
            && self.until.is_none_or(|t| record.timestamp_ms <= t.millis)
    }
}

/// One event as `audit log` prints it: the export line with its time spelled out.
#[derive(Serialize)]
struct LogLine<'a> {
    seq: u64,
    time: String,
    stream: &'a str,
    version: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: u16,
    timestamp_ms: i64,
    payload: Value,
    prev_hash: &'a str,
    hash: &'a str,
}

/// The records `audit log` reads from a journal: one object's stream when the filter names one.
pub fn journal_records<'j>(
    journal: &'j Journal,
    filter: &LogFilter,
) -> Box<dyn Iterator<Item = flotilla_journal::Result<Record>> + 'j> {
    match &filter.object {
        Some(stream) => Box::new(journal.read_stream(stream, 1)),
        None => Box::new(journal.read_all(1)),
    }
}

/// Prints every event of `records` that `filter` admits, one JSON object a line.
pub fn log(
    records: impl Iterator<Item = flotilla_journal::Result<Record>>,
    filter: &LogFilter,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut printed = 0;
    for record in records {
        let record = record?;
        if !filter.admits(&record) {
            continue;
        }
        let line = Line::from_record(&record)?;
        let log_line = LogLine {
            seq: line.seq,
            time: format_millis(line.timestamp_ms),
            stream: &line.stream,
            version: line.version,
            event_type: &line.event_type,
            schema: line.schema,
            timestamp_ms: line.timestamp_ms,
            payload: redacted(line.payload),
            prev_hash: &line.prev_hash,
            hash: &line.hash,
        };
        serde_json::to_writer(&mut *out, &log_line)?;
        out.write_all(b"\n")?;
        printed += 1;
    }
    out.flush()?;
    Ok(printed)
}

/// The payload with any secret replaced (webhook events carry theirs, for restarts).
fn redacted(payload: &RawValue) -> Value {
    let mut value: Value = serde_json::from_str(payload.get()).unwrap_or(Value::Null);
    flotilla_actors::replay::redact_secrets(&mut value);
    value
}

/// RFC 3339 with milliseconds, UTC, for any instant: one before 1970 or after 9999 (which an
/// older build let a schedule hold) is written in ISO 8601's expanded form (`+10000-01-01...`),
/// and one past chrono's range as its milliseconds. Every answer and page that shows a time
/// goes through here, so it must not fail.
pub fn format_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).map_or_else(
        || format!("{millis} ms since the epoch"),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::{format_millis, TimeBound};

    #[test]
    fn a_time_bound_reads_rfc_3339_with_any_offset_or_unix_seconds() {
        let at = |text: &str| text.parse::<TimeBound>().map(|t| t.millis);
        assert_eq!(at("2026-11-25T10:00:00Z"), Ok(1_795_600_800_000));
        // The same instant written with an offset (refused before).
        assert_eq!(at("2026-11-25T15:30:00+05:30"), Ok(1_795_600_800_000));
        assert_eq!(at("2026-11-25T10:00:00.250Z"), Ok(1_795_600_800_250));
        assert_eq!(at("1795600800"), Ok(1_795_600_800_000));
        assert!(at("1969-12-31T23:00:00-02:00").is_ok());
        assert!(at("1969-12-31T23:00:00Z").is_err());
        assert!(at("yesterday").is_err());
    }

    #[test]
    fn any_instant_is_written_and_those_rfc_3339_can_write_as_it_does() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1_780_000_000_123), "2026-05-28T20:26:40.123Z");
        assert_eq!(
            format_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        // Outside it, ISO 8601's expanded years (an older build let a schedule hold these).
        assert_eq!(format_millis(-1_000), "1969-12-31T23:59:59.000Z");
        assert_eq!(
            format_millis(253_402_300_800_000),
            "+10000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_millis(i64::MAX),
            format!("{} ms since the epoch", i64::MAX)
        );
        assert!(!format_millis(i64::MIN).is_empty());
    }
}
