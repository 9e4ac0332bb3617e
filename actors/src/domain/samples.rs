//! Metric samples aggregated per (group, metric) into epoch-aligned periods, in bounded memory
//! (SPEC section 5). Pure: "now" is passed in, nothing here reads a clock.
//!
//! # Windows and watchers
//!
//! Only what an alarm can read is kept. An alarm registers a need with [`SeriesStore::watch`]:
//! its (group, metric), its period length and how many periods it evaluates. For each period
//! length watched on a series, the store keeps a *window* of [`PeriodStats`], one per period
//! that received a sample. A sample for a (group, metric) nobody watches is dropped
//! ([`Recorded::Unwatched`]).
//!
//! A series also knows its owner, the tenant of its group, as its watchers tell (none once the
//! group is deleted): a tenant's sample for a series it does not own is dropped
//! ([`Recorded::NotWritable`]) on the lookup it pays anyway.
//!
//! # Periods, closing and the readable window
//!
//! With a period of `p` milliseconds, the period holding `t` starts at `floor(t / p) * p` (aligned
//! to the Unix epoch) and ends at `start + p`, exclusive. A period is *closed* once `now >= end`.
//! Let `c` be the start of the period holding `now`, and `n` the most periods any watcher of the
//! window needs. The window keeps the periods starting in `[c - n*p, c + p]`:
//!
//! - the `n` closed periods a watcher may read (`c - n*p` to `c - p`),
//! - the current period `c`, still open, and the next one, `c + p`, for clocks running a little
//!   ahead.
//!
//! A sample older than `c - n*p` is [`Recorded::TooOld`]; one more than a period ahead of `now`
//! (`t > now + p`) is [`Recorded::TooNew`]. A late sample for a closed period still readable is
//! added to it: the next evaluation sees it.
//!
//! # Bounded memory
//!
//! [`SeriesStore::prune`] drops every period that starts before its window's horizon `c - n*p`;
//! [`SeriesStore::record`] does the same for each window it writes to, so a window never holds
//! more than `n + 2` periods after a write. The number of (group, metric) series holding samples
//! is capped ([`DEFAULT_MAX_SERIES`] unless set): past the cap, a sample that would start a new
//! series is refused with [`RecordError::SeriesLimit`]; nothing is ever evicted to make room.
//! Watches themselves are bounded by the number of alarms.

use std::collections::BTreeMap;

use super::alarm::{AlarmDefinition, Statistic};
use super::{GroupId, TenantId};
use crate::clock::Timestamp;

/// How many (group, metric) series may hold samples unless [`SeriesStore::with_max_series`] says
/// otherwise.
pub const DEFAULT_MAX_SERIES: usize = 1_000_000;

/// The longest metric name, in bytes (all printable ASCII).
pub const MAX_METRIC_BYTES: usize = 255;

/// The latest sample timestamp accepted: 9999-12-31T23:59:59Z, in Unix seconds.
pub const MAX_SAMPLE_TIMESTAMP_SECS: f64 = 253_402_300_799.0;

/// One value of a metric at a point in time, as a server reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub metric: String,
    /// The value (finite).
    pub value: f64,
    /// When it was measured.
    pub timestamp: Timestamp,
}

/// The samples of one period, reduced to what every [`Statistic`] needs. Built from at least one
/// sample, so `count >= 1`. Every aggregate stays finite whatever finite samples come: the sum
/// saturates at ±`f64::MAX`, and the mean is kept as a weighted mean (never a sum divided), so
/// two samples of 1.7e308 average to 1.7e308, not to infinity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodStats {
    /// How many samples.
    pub count: u64,
    /// Their sum, saturated at ±`f64::MAX`.
    pub sum: f64,
    /// Their mean.
    pub mean: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl PeriodStats {
    /// The stats of a period holding one sample.
    pub fn of(value: f64) -> Self {
        PeriodStats {
            count: 1,
            sum: value,
            mean: value,
            min: value,
            max: value,
        }
    }

    /// Adds a sample.
    pub fn add(&mut self, value: f64) {
        self.count = self.count.saturating_add(1);
        self.sum = (self.sum + value).clamp(-f64::MAX, f64::MAX);
        // A convex combination of two finite values: finite (the clamp guards the rounding).
        let weight = 1.0 / self.count as f64;
        self.mean = (self.mean * (1.0 - weight) + value * weight).clamp(-f64::MAX, f64::MAX);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The period's datapoint by `statistic`.
    pub fn value(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::Avg => self.mean,
            Statistic::Min => self.min,
            Statistic::Max => self.max,
            Statistic::Sum => self.sum,
            Statistic::Count => self.count as f64,
        }
    }
}

/// What became of a sample that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Added to its period in at least one watched window.
    Stored,
    /// No alarm watches its (group, metric): dropped.
    Unwatched,
    /// Older than any watcher of its series can read: dropped.
    TooOld,
    /// More than one period ahead of now in every watched window: dropped.
    TooNew,
    /// Its series is watched for another tenant than the writer: dropped, unseen.
    NotWritable,
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// It would start a new series and the store already holds as many as it may.
    #[error("series limit reached: at most {limit} series may hold samples")]
    SeriesLimit {
        /// The cap.
        limit: usize,
    },
}

/// A map of a few entries (a series' period lengths, a window's needs: one or two each), as a
/// vector sorted by key. An empty `BTreeMap` allocates nothing, but its first entry allocates a
/// node for 11, several hundred bytes; the store holds one of each for every alarm.
#[derive(Debug, Clone)]
struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<K: Ord + Copy, V> SmallMap<K, V> {
    fn get(&self, key: &K) -> Option<&V> {
        let at = self.0.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&self.0[at].1)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.0.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&mut self.0[at].1)
    }

    /// The value of `key`, inserted as its default if missing.
    fn entry_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let at = match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (key, V::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.0.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(self.0.remove(at).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn last_key(&self) -> Option<&K> {
        self.0.last().map(|(k, _)| k)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }
}

/// The periods of one (group, metric, period length) and who reads them.
#[derive(Debug, Clone, Default)]
struct Window {
    /// `periods_needed` → how many watchers need that many.
    needs: SmallMap<u32, usize>,
    /// Period start, in Unix ms → its stats.
    periods: BTreeMap<i64, PeriodStats>,
}

impl Window {
    /// The most periods any watcher reads.
    fn needed(&self) -> u32 {
        self.needs.last_key().copied().unwrap_or(0)
    }

    /// The start of the oldest period a watcher can read at `now`.
    fn horizon(&self, period: i64, now: Timestamp) -> i64 {
        let lookback = period.saturating_mul(i64::from(self.needed()));
        start_of(now.as_millis(), period).saturating_sub(lookback)
    }

    /// Drops the periods starting before `horizon`; returns how many.
    fn trim(&mut self, horizon: i64) -> usize {
        // Most calls drop nothing: `split_off` would still rebuild the map.
        if self
            .periods
            .first_key_value()
            .is_none_or(|(start, _)| *start >= horizon)
        {
            return 0;
        }
        let kept = self.periods.split_off(&horizon);
        let dropped = self.periods.len();
        self.periods = kept;
        dropped
    }
}

/// One (group, metric): the group's tenant, and a window per watched period length, in
/// seconds.
#[derive(Debug, Clone)]
struct Series {
    /// Who may write it: the tenant of its group, as its first watcher (that tenant's alarm
    /// or policy) tells; none once the group is deleted. A tenant's write is checked here, on
    /// the lookup the sample pays anyway.
    owner: Option<TenantId>,
    windows: SmallMap<u32, Window>,
}

impl Series {
    fn holds_samples(&self) -> bool {
        self.windows.values().any(|w| !w.periods.is_empty())
    }

    /// Whether a sample at `t` fits one of its windows at `now`; if not, whether it is too new
    /// for all of them or too old.
    fn fitting(&self, t: i64, now: Timestamp) -> Result<(), Recorded> {
        let mut too_new = false;
        for (&period_seconds, window) in self.windows.iter() {
            match fits(t, period_seconds, window, now) {
                Ok(()) => return Ok(()),
                Err(Recorded::TooNew) => too_new = true,
                Err(_) => {}
            }
        }
        Err(if too_new {
            Recorded::TooNew
        } else {
            Recorded::TooOld
        })
    }
}

/// Whether a sample at `t` fits the window of `period_seconds` at `now`.
fn fits(t: i64, period_seconds: u32, window: &Window, now: Timestamp) -> Result<(), Recorded> {
    let period = millis(period_seconds);
    if t > now.as_millis().saturating_add(period) {
        Err(Recorded::TooNew)
    } else if t >= window.horizon(period, now) {
        Ok(())
    } else {
        Err(Recorded::TooOld)
    }
}

/// A series' key as borrowed text: (group id, metric). It hashes as the stored key
/// `(GroupId, String)` does (a tuple hashes its parts in order, and each id hashes as its
/// text), so the store is searched with it and no key is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Named<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(GroupId, String)> for Named<'_> {
    fn equivalent(&self, key: &(GroupId, String)) -> bool {
        self.0 == key.0.as_str() && self.1 == key.1
    }
}

/// Every watched series' recent periods. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct SeriesStore {
    max_series: usize,
    /// (group, metric) → series, looked up by borrowed text ([`Named`]) so that a lookup
    /// needs no allocation. One map, so a sample pays one lookup. Hashed with foldhash,
    /// seeded per process: keys are only inserted by watchers (alarm and policy definitions).
    series: hashbrown::HashMap<(GroupId, String), Series, foldhash::fast::RandomState>,
    /// How many series hold at least one period.
    holding: usize,
}

impl Default for SeriesStore {
    fn default() -> Self {
        SeriesStore::new()
    }
}

impl SeriesStore {
    /// An empty store capped at [`DEFAULT_MAX_SERIES`] series.
    pub fn new() -> Self {
        SeriesStore::with_max_series(DEFAULT_MAX_SERIES)
    }

    /// An empty store where at most `max_series` (group, metric) series hold samples.
    pub fn with_max_series(max_series: usize) -> Self {
        SeriesStore {
            max_series,
            series: hashbrown::HashMap::default(),
            holding: 0,
        }
    }

    /// The cap on series holding samples.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// How many (group, metric) series hold at least one period.
    pub fn series_count(&self) -> usize {
        self.holding
    }

    /// How many periods are held, over every series and window.
    pub fn period_count(&self) -> usize {
        self.series
            .values()
            .flat_map(|s| s.windows.values())
            .map(|w| w.periods.len())
            .sum()
    }

    /// Registers a reader of `periods_needed` closed periods of `period_seconds` on (group,
    /// metric), written by `owner` (none: by no tenant, its group being deleted). Called when an
    /// alarm is created, and with the new definition when one is updated. A `period_seconds` of
    /// 0 is read as 1. A group has one tenant, so a series' watchers all name the same owner;
    /// the first one's stays.
    pub fn watch(
        &mut self,
        group: &GroupId,
        owner: Option<&TenantId>,
        metric: &str,
        period_seconds: u32,
        periods_needed: u32,
    ) {
        let window = self
            .series
            .entry((group.clone(), metric.to_owned()))
            .or_insert_with(|| Series {
                owner: owner.cloned(),
                windows: SmallMap::default(),
            })
            .windows
            .entry_or_default(period_seconds.max(1));
        *window.needs.entry_or_default(periods_needed) += 1;
    }

    /// Removes one reader registered by [`SeriesStore::watch`] with the same arguments; returns
    /// whether there was one. Called when an alarm is deleted, and with the old definition when
    /// one is updated. A window left without readers is dropped with its periods.
    pub fn unwatch(
        &mut self,
        group: &GroupId,
        metric: &str,
        period_seconds: u32,
        periods_needed: u32,
    ) -> bool {
        let key = Named(group.as_str(), metric);
        let Some(series) = self.series.get_mut(&key) else {
            return false;
        };
        let period_seconds = period_seconds.max(1);
        let held = series.holds_samples();
        let Some(window) = series.windows.get_mut(&period_seconds) else {
            return false;
        };
        let Some(count) = window.needs.get_mut(&periods_needed) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            window.needs.remove(&periods_needed);
        }
        if window.needs.is_empty() {
            series.windows.remove(&period_seconds);
        }
        if held && !series.holds_samples() {
            self.holding -= 1;
        }
        if series.windows.is_empty() {
            self.series.remove(&key);
        }
        true
    }

    /// No tenant writes the series of `group` any more: it was deleted.
    pub fn disown(&mut self, group: &GroupId) {
        for ((watched, _), series) in &mut self.series {
            if watched == group {
                series.owner = None;
            }
        }
    }

    /// [`SeriesStore::watch`] with an alarm's metric, period and N.
    pub fn watch_alarm(&mut self, owner: Option<&TenantId>, definition: &AlarmDefinition) {
        self.watch(
            &definition.group_id,
            owner,
            &definition.metric,
            definition.period_seconds,
            definition.evaluation_periods,
        );
    }

    /// [`SeriesStore::unwatch`] with an alarm's metric, period and N.
    pub fn unwatch_alarm(&mut self, definition: &AlarmDefinition) -> bool {
        self.unwatch(
            &definition.group_id,
            &definition.metric,
            definition.period_seconds,
            definition.evaluation_periods,
        )
    }

    /// How many series recording `samples` of `group` at `now` would start holding samples,
    /// beside [`SeriesStore::room`]: a caller that must take a batch whole or not at all
    /// refuses it before recording any of it.
    pub fn would_start(&self, group: &GroupId, samples: &[Sample], now: Timestamp) -> usize {
        let mut starting = std::collections::HashSet::new();
        for sample in samples {
            let Some(series) = self.series.get(&Named(group.as_str(), &sample.metric)) else {
                continue;
            };
            let starts = !series.holds_samples()
                && series.fitting(sample.timestamp.as_millis(), now).is_ok();
            if starts {
                starting.insert(sample.metric.as_str());
            }
        }
        starting.len()
    }

    /// How many more series may start holding samples.
    pub fn room(&self) -> usize {
        self.max_series.saturating_sub(self.holding)
    }

    /// Adds a sample of `group` to its period in every window of its series that can hold it.
    /// Refuses it, changing nothing, when it would start a new series past the cap.
    pub fn record(
        &mut self,
        group: &GroupId,
        sample: &Sample,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        self.record_value(
            group.as_str(),
            &sample.metric,
            sample.value,
            sample.timestamp,
            now,
            None,
        )
    }

    /// [`SeriesStore::record`] with the sample's parts borrowed, the group as its id's text,
    /// so that a caller holding many samples (a remote write) allocates nothing per sample.
    /// With a `writer`, a watched series of another tenant's (or of a deleted group) is
    /// [`Recorded::NotWritable`]; without one, the caller has checked that the writer may
    /// write the group.
    pub fn record_value(
        &mut self,
        group: &str,
        metric: &str,
        value: f64,
        timestamp: Timestamp,
        now: Timestamp,
        writer: Option<&TenantId>,
    ) -> Result<Recorded, RecordError> {
        let Some(series) = self.series.get_mut(&Named(group, metric)) else {
            return Ok(Recorded::Unwatched);
        };
        if writer.is_some_and(|writer| series.owner.as_ref() != Some(writer)) {
            return Ok(Recorded::NotWritable);
        }
        let t = timestamp.as_millis();
        if let Err(unfit) = series.fitting(t, now) {
            return Ok(unfit);
        }
        let held = series.holds_samples();
        if !held && self.holding >= self.max_series {
            return Err(RecordError::SeriesLimit {
                limit: self.max_series,
            });
        }
        for (&period_seconds, window) in series.windows.iter_mut() {
            if fits(t, period_seconds, window, now).is_err() {
                continue;
            }
            let period = millis(period_seconds);
            window.trim(window.horizon(period, now));
            window
                .periods
                .entry(start_of(t, period))
                .and_modify(|stats| stats.add(value))
                .or_insert_with(|| PeriodStats::of(value));
        }
        if !held {
            self.holding += 1;
        }
        Ok(Recorded::Stored)
    }

    /// The datapoints of the last `n` closed periods of `period_seconds` before `now`, oldest
    /// first; `None` for a period without samples (or one no watcher kept). `n` is an alarm's N,
    /// so small.
    pub fn datapoints(
        &self,
        group: &GroupId,
        metric: &str,
        period_seconds: u32,
        statistic: Statistic,
        n: u32,
        now: Timestamp,
    ) -> Vec<Option<f64>> {
        let period_seconds = period_seconds.max(1);
        let period = millis(period_seconds);
        let current = start_of(now.as_millis(), period);
        let window = self
            .series
            .get(&Named(group.as_str(), metric))
            .and_then(|series| series.windows.get(&period_seconds));
        (1..=i64::from(n))
            .rev()
            .map(|back| {
                let start = current.saturating_sub(period.saturating_mul(back));
                window
                    .and_then(|w| w.periods.get(&start))
                    .map(|stats| stats.value(statistic))
            })
            .collect()
    }

    /// Drops every period no watcher can read any more at `now`; returns how many.
    pub fn prune(&mut self, now: Timestamp) -> usize {
        let mut dropped = 0;
        let mut emptied = 0;
        for series in self.series.values_mut() {
            let held = series.holds_samples();
            for (&period_seconds, window) in series.windows.iter_mut() {
                let period = millis(period_seconds);
                dropped += window.trim(window.horizon(period, now));
            }
            if held && !series.holds_samples() {
                emptied += 1;
            }
        }
        self.holding -= emptied;
        dropped
    }
}

/// The start of the epoch-aligned period of `period_seconds` (0 read as 1) holding `at`.
pub fn period_start(at: Timestamp, period_seconds: u32) -> Timestamp {
    Timestamp::from_millis(start_of(at.as_millis(), millis(period_seconds.max(1))))
}

fn millis(period_seconds: u32) -> i64 {
    i64::from(period_seconds.max(1)) * 1_000
}

fn start_of(at_millis: i64, period: i64) -> i64 {
    at_millis.div_euclid(period) * period
}

/// Checks a metric's name: 1 to [`MAX_METRIC_BYTES`] printable ASCII characters, not blank. The
/// one alphabet of metric names, for samples and for the alarms that watch them. The error is a
/// lowercase reason naming the field.
pub fn validate_metric(metric: &str) -> Result<(), String> {
    if metric.is_empty() {
        return Err("metric must not be empty".to_owned());
    }
    if let Some((at, c)) = metric
        .char_indices()
        .find(|(_, c)| !(' '..='~').contains(c))
    {
        return Err(format!(
            "metric must be printable ascii, has {} at byte {at}",
            c.escape_default()
        ));
    }
    if metric.len() > MAX_METRIC_BYTES {
        return Err(format!(
            "metric must have at most {MAX_METRIC_BYTES} characters, has {}",
            metric.len()
        ));
    }
    if metric.trim().is_empty() {
        return Err("metric must not be blank".to_owned());
    }
    Ok(())
}

/// Checks one sample as the HTTP layer receives it: `metric` 1 to [`MAX_METRIC_BYTES`] printable
/// ASCII characters, not blank; `value` finite; `timestamp_secs` (Unix seconds, fractions
/// allowed) finite, not negative and at most [`MAX_SAMPLE_TIMESTAMP_SECS`], rounded to the
/// nearest millisecond. The error is a lowercase reason naming the field.
pub fn validate_sample(metric: &str, value: f64, timestamp_secs: f64) -> Result<Sample, String> {
    validate_metric(metric)?;
    if !value.is_finite() {
        return Err(format!("value must be a finite number, is {value}"));
    }
    if !timestamp_secs.is_finite() {
        return Err(format!(
            "timestamp must be a finite number of seconds, is {timestamp_secs}"
        ));
    }
    if timestamp_secs < 0.0 {
        return Err(format!(
            "timestamp must not be negative, is {timestamp_secs}"
        ));
    }
    if timestamp_secs > MAX_SAMPLE_TIMESTAMP_SECS {
        return Err(format!(
            "timestamp must be at most {MAX_SAMPLE_TIMESTAMP_SECS} (the end of year 9999), is {timestamp_secs}"
        ));
    }
    // Within [0, 2.6e14] ms: the conversion is exact and cannot saturate.
    let millis = (timestamp_secs * 1_000.0).round() as i64;
    Ok(Sample {
        metric: metric.to_owned(),
        value,
        timestamp: Timestamp::from_millis(millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alarm::Comparison;

    /// A day-aligned time well after the epoch: 2023-11-14T00:00:00Z.
    const T0: Timestamp = Timestamp::from_secs(1_699_920_000);

    fn group() -> GroupId {
        GroupId::new("grp_1")
    }

    fn tenant() -> TenantId {
        TenantId::new("ten_1")
    }

    #[test]
    fn a_writer_other_than_the_series_tenant_stores_nothing() {
        let mut store = SeriesStore::new();
        store.watch(&group(), Some(&tenant()), "cpu", 60, 3);
        let now = Timestamp::from_millis(600_000);
        let record = |store: &mut SeriesStore, writer: Option<&TenantId>| {
            store.record_value("grp_1", "cpu", 1.0, now, now, writer)
        };
        let other = TenantId::new("ten_2");
        assert_eq!(
            record(&mut store, Some(&other)).unwrap(),
            Recorded::NotWritable
        );
        assert_eq!(store.series_count(), 0);
        assert_eq!(store.period_count(), 0);
        assert_eq!(
            record(&mut store, Some(&tenant())).unwrap(),
            Recorded::Stored
        );
        assert_eq!(record(&mut store, None).unwrap(), Recorded::Stored);
        assert_eq!(store.period_count(), 1);
        // Its group deleted, no tenant writes it.
        store.disown(&group());
        assert_eq!(
            record(&mut store, Some(&tenant())).unwrap(),
            Recorded::NotWritable
        );
        // An unwatched series says nothing of its owner: the caller asks who owns it.
        assert_eq!(
            store
                .record_value("grp_2", "cpu", 1.0, now, now, Some(&other))
                .unwrap(),
            Recorded::Unwatched
        );
    }

    fn sample(metric: &str, value: f64, at: Timestamp) -> Sample {
        Sample {
            metric: metric.into(),
            value,
            timestamp: at,
        }
    }

    fn at(secs: i64) -> Timestamp {
        T0.plus_millis(secs * 1_000)
    }

    /// A store with one watcher of 3 periods of 60 s on (grp_1, cpu).
    fn given_cpu_watched() -> SeriesStore {
        let mut store = SeriesStore::new();
        store.watch(&group(), Some(&tenant()), "cpu", 60, 3);
        store
    }

    fn when_recorded(store: &mut SeriesStore, value: f64, at_secs: i64, now_secs: i64) -> Recorded {
        store
            .record(&group(), &sample("cpu", value, at(at_secs)), at(now_secs))
            .unwrap()
    }

    #[test]
    fn t0_is_aligned_to_a_day() {
        assert_eq!(period_start(T0, 60), T0);
        assert_eq!(period_start(T0, 300), T0);
        assert_eq!(period_start(T0, 86_400), T0);
    }

    #[test]
    fn periods_are_aligned_to_the_unix_epoch() {
        let cases = [
            // (timestamp ms, period s, start ms)
            (0, 60, 0),
            (59_999, 60, 0),
            (60_000, 60, 60_000),
            (1_732_400_000_500, 60, 1_732_399_980_000),
            (1_732_400_000_500, 300, 1_732_399_800_000),
            (1_732_400_000_500, 1, 1_732_400_000_000),
            (1_732_400_000_500, 86_400, 1_732_320_000_000),
            (-1, 60, -60_000),
        ];
        for (ts, period, start) in cases {
            assert_eq!(
                period_start(Timestamp::from_millis(ts), period),
                Timestamp::from_millis(start),
                "{ts} ms in periods of {period} s"
            );
        }
    }

    #[test]
    fn each_statistic_reduces_a_periods_samples() {
        let mut stats = PeriodStats::of(4.0);
        stats.add(1.0);
        stats.add(7.0);
        let cases = [
            (Statistic::Avg, 4.0),
            (Statistic::Min, 1.0),
            (Statistic::Max, 7.0),
            (Statistic::Sum, 12.0),
            (Statistic::Count, 3.0),
        ];
        for (statistic, expected) in cases {
            assert_eq!(stats.value(statistic), expected, "{statistic:?}");
        }
    }

    #[test]
    fn each_statistic_is_read_back_from_the_store_per_period() {
        let mut store = given_cpu_watched();
        for (value, secs) in [(4.0, 0), (1.0, 10), (7.0, 59), (2.0, 60)] {
            assert_eq!(
                when_recorded(&mut store, value, secs, 119),
                Recorded::Stored
            );
        }
        let read = |statistic| store.datapoints(&group(), "cpu", 60, statistic, 1, at(120));
        let cases = [
            (Statistic::Avg, 2.0),
            (Statistic::Min, 2.0),
            (Statistic::Max, 2.0),
            (Statistic::Sum, 2.0),
            (Statistic::Count, 1.0),
        ];
        for (statistic, expected) in cases {
            assert_eq!(read(statistic), vec![Some(expected)], "{statistic:?}");
        }
        let older = |statistic| store.datapoints(&group(), "cpu", 60, statistic, 2, at(120));
        assert_eq!(older(Statistic::Avg), vec![Some(4.0), Some(2.0)]);
        assert_eq!(older(Statistic::Min), vec![Some(1.0), Some(2.0)]);
        assert_eq!(older(Statistic::Max), vec![Some(7.0), Some(2.0)]);
        assert_eq!(older(Statistic::Sum), vec![Some(12.0), Some(2.0)]);
        assert_eq!(older(Statistic::Count), vec![Some(3.0), Some(1.0)]);
    }

    #[test]
    fn datapoints_are_the_last_n_closed_periods_oldest_first_with_gaps_as_none() {
        let mut store = given_cpu_watched();
        when_recorded(&mut store, 1.0, 0, 150);
        when_recorded(&mut store, 3.0, 120, 150);
        let points = store.datapoints(&group(), "cpu", 60, Statistic::Avg, 3, at(180));
        assert_eq!(points, vec![Some(1.0), None, Some(3.0)]);
    }

    #[test]
    fn a_period_not_closed_yet_is_not_evaluated() {
        let mut store = given_cpu_watched();
        when_recorded(&mut store, 1.0, 0, 30);
        when_recorded(&mut store, 2.0, 60, 90);
        // At 119.999 s the period [60, 120) is still open: the newest datapoint is [0, 60).
        let open = store.datapoints(
            &group(),
            "cpu",
            60,
            Statistic::Avg,
            1,
            at(120).plus_millis(-1),
        );
        assert_eq!(open, vec![Some(1.0)]);
        // At exactly 120 s it has closed.
        let closed = store.datapoints(&group(), "cpu", 60, Statistic::Avg, 1, at(120));
        assert_eq!(closed, vec![Some(2.0)]);
    }

    #[test]
    fn a_sample_for_an_unwatched_series_is_dropped_and_said_so() {
        let mut store = given_cpu_watched();
        let outcome = store.record(&group(), &sample("mem", 1.0, T0), T0).unwrap();
        assert_eq!(outcome, Recorded::Unwatched);
        let other_group = store
            .record(&GroupId::new("grp_2"), &sample("cpu", 1.0, T0), T0)
            .unwrap();
        assert_eq!(other_group, Recorded::Unwatched);
        assert_eq!(store.series_count(), 0);
        assert_eq!(store.period_count(), 0);
    }

    #[test]
    fn samples_too_far_ahead_or_older_than_any_watcher_reads_are_dropped() {
        let cases = [
            // (sample at s, now s, outcome): window of 3 periods of 60 s; now at 200 → c = 180.
            (260, 200, Recorded::Stored), // exactly one period ahead of now
            (261, 200, Recorded::TooNew), // more than one period ahead
            (0, 200, Recorded::Stored),   // start of the oldest readable period, 180 - 3*60
            (-1, 200, Recorded::TooOld),  // just before it
            (150, 200, Recorded::Stored), // a late sample for a closed period
        ];
        for (sample_at, now, expected) in cases {
            let mut store = given_cpu_watched();
            assert_eq!(
                when_recorded(&mut store, 1.0, sample_at, now),
                expected,
                "sample at {sample_at} s, now {now} s"
            );
        }
    }

    #[test]
    fn a_sample_goes_into_every_watched_period_length_that_can_hold_it() {
        let mut store = given_cpu_watched();
        store.watch(&group(), Some(&tenant()), "cpu", 300, 2);
        // 400 s back: too old for 3 × 60 s, readable for 2 × 300 s.
        assert_eq!(when_recorded(&mut store, 5.0, 0, 400), Recorded::Stored);
        assert_eq!(when_recorded(&mut store, 7.0, 380, 400), Recorded::Stored);
        let minutes = store.datapoints(&group(), "cpu", 60, Statistic::Sum, 3, at(420));
        assert_eq!(minutes, vec![None, None, Some(7.0)]);
        let fives = store.datapoints(&group(), "cpu", 300, Statistic::Sum, 2, at(600));
        assert_eq!(fives, vec![Some(5.0), Some(7.0)]);
    }

    #[test]
    fn prune_drops_what_no_watcher_can_read_and_keeps_the_rest() {
        let mut store = given_cpu_watched();
        store.watch(&group(), Some(&tenant()), "cpu", 60, 5);
        for secs in [0, 60, 120, 180, 240, 300] {
            when_recorded(&mut store, 1.0, secs, 300);
        }
        assert_eq!(store.period_count(), 6);
        // At 360 s, c = 360: the largest need (5) reads back to 60; the period at 0 goes.
        assert_eq!(store.prune(at(360)), 1);
        assert_eq!(store.period_count(), 5);
        assert_eq!(
            store.datapoints(&group(), "cpu", 60, Statistic::Sum, 5, at(360)),
            vec![Some(1.0); 5]
        );
        // Once the watcher of 5 goes, the one of 3 reads back to 180 only.
        assert!(store.unwatch(&group(), "cpu", 60, 5));
        assert_eq!(store.prune(at(360)), 2);
        assert_eq!(store.period_count(), 3);
        // Long after, nothing is readable: the series holds nothing and no longer counts.
        assert_eq!(store.series_count(), 1);
        store.prune(at(10_000));
        assert_eq!(store.period_count(), 0);
        assert_eq!(store.series_count(), 0);
    }

    #[test]
    fn recording_trims_the_window_it_writes_to_without_a_prune() {
        let mut store = given_cpu_watched();
        for minute in 0..100 {
            when_recorded(&mut store, 1.0, minute * 60, minute * 60);
        }
        // The 3 readable periods and the current one.
        assert_eq!(store.period_count(), 4);
    }

    #[test]
    fn unwatching_the_last_reader_drops_the_series_and_its_periods() {
        let mut store = given_cpu_watched();
        store.watch(&group(), Some(&tenant()), "cpu", 60, 3);
        when_recorded(&mut store, 1.0, 0, 0);
        assert!(store.unwatch(&group(), "cpu", 60, 3));
        assert_eq!(store.period_count(), 1, "one reader remains");
        assert!(store.unwatch(&group(), "cpu", 60, 3));
        assert_eq!(store.period_count(), 0);
        assert_eq!(store.series_count(), 0);
        assert!(
            !store.unwatch(&group(), "cpu", 60, 3),
            "nothing left to unwatch"
        );
        assert_eq!(
            store.record(&group(), &sample("cpu", 1.0, T0), T0).unwrap(),
            Recorded::Unwatched
        );
    }

    #[test]
    fn the_series_cap_refuses_a_new_series_rather_than_evicting_one() {
        let mut store = SeriesStore::with_max_series(2);
        for metric in ["a", "b", "c"] {
            store.watch(&group(), Some(&tenant()), metric, 60, 1);
        }
        assert_eq!(
            store.record(&group(), &sample("a", 1.0, T0), T0),
            Ok(Recorded::Stored)
        );
        assert_eq!(
            store.record(&group(), &sample("b", 1.0, T0), T0),
            Ok(Recorded::Stored)
        );
        assert_eq!(
            store.record(&group(), &sample("c", 1.0, T0), T0),
            Err(RecordError::SeriesLimit { limit: 2 })
        );
        // The series already held still take samples, and nothing was evicted.
        assert_eq!(
            store.record(&group(), &sample("a", 2.0, T0), T0),
            Ok(Recorded::Stored)
        );
        assert_eq!(store.series_count(), 2);
        assert_eq!(store.period_count(), 2);
        // Once a series ages out, there is room again.
        let later = T0.plus_secs(600u32);
        store.prune(later);
        assert_eq!(store.series_count(), 0);
        assert_eq!(
            store.record(&group(), &sample("c", 1.0, later), later),
            Ok(Recorded::Stored)
        );
    }

    #[test]
    fn the_default_cap_is_a_million_series() {
        assert_eq!(SeriesStore::new().max_series(), 1_000_000);
    }

    #[test]
    fn an_alarm_watches_its_metric_period_and_n() {
        let definition = AlarmDefinition {
            name: "cpu high".into(),
            group_id: group(),
            metric: "cpu".into(),
            query: None,
            statistic: Statistic::Avg,
            period_seconds: 60,
            evaluation_periods: 3,
            datapoints_to_alarm: 3,
            comparison: Comparison::Gt,
            threshold: 0.8,
            treat_missing: Default::default(),
            alarm_actions: vec![],
            ok_actions: vec![],
            repeat_actions: false,
        };
        let mut store = SeriesStore::new();
        store.watch_alarm(Some(&tenant()), &definition);
        assert_eq!(when_recorded(&mut store, 1.0, 0, 0), Recorded::Stored);
        assert!(store.unwatch_alarm(&definition));
        assert_eq!(store.series_count(), 0);
    }

    #[test]
    fn a_valid_sample_converts_its_seconds_to_milliseconds() {
        let sample = validate_sample("cpu", 0.73, 1_732_400_000.5).unwrap();
        assert_eq!(sample.metric, "cpu");
        assert_eq!(sample.value, 0.73);
        assert_eq!(sample.timestamp, Timestamp::from_millis(1_732_400_000_500));
        assert_eq!(
            validate_sample("cpu", 1.0, 1.013).unwrap().timestamp,
            Timestamp::from_millis(1_013)
        );
        assert!(validate_sample(&"x".repeat(255), 0.0, 0.0).is_ok());
    }

    #[test]
    fn an_invalid_sample_says_why() {
        let cases = [
            ("", 1.0, 1.0, "metric must not be empty"),
            ("   ", 1.0, 1.0, "metric must not be blank"),
            (
                "c\npu",
                1.0,
                1.0,
                "metric must be printable ascii, has \\n at byte 1",
            ),
            (
                "cpu é",
                1.0,
                1.0,
                "metric must be printable ascii, has \\u{e9} at byte 4",
            ),
            (
                "cpu",
                f64::NAN,
                1.0,
                "value must be a finite number, is NaN",
            ),
            (
                "cpu",
                f64::INFINITY,
                1.0,
                "value must be a finite number, is inf",
            ),
            (
                "cpu",
                1.0,
                f64::NAN,
                "timestamp must be a finite number of seconds, is NaN",
            ),
            ("cpu", 1.0, -0.5, "timestamp must not be negative, is -0.5"),
            (
                "cpu",
                1.0,
                1e12,
                "timestamp must be at most 253402300799 (the end of year 9999), is 1000000000000",
            ),
        ];
        for (metric, value, timestamp, reason) in cases {
            assert_eq!(
                validate_sample(metric, value, timestamp).unwrap_err(),
                reason,
                "{metric:?} {value} {timestamp}"
            );
        }
        assert_eq!(
            validate_sample(&"x".repeat(256), 1.0, 1.0).unwrap_err(),
            "metric must have at most 255 characters, has 256"
        );
    }
}

#[cfg(test)]
mod finite {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_samples_of_1_7e308_average_to_1_7e308_and_sum_to_the_largest_finite() {
        let mut stats = PeriodStats::of(1.7e308);
        stats.add(1.7e308);
        assert_eq!(stats.value(Statistic::Avg), 1.7e308);
        assert_eq!(stats.value(Statistic::Sum), f64::MAX);
        let mut low = PeriodStats::of(-f64::MAX);
        low.add(-f64::MAX);
        assert_eq!(low.value(Statistic::Sum), -f64::MAX);
        assert_eq!(low.value(Statistic::Avg), -f64::MAX);
    }

    proptest! {
        #[test]
        fn every_aggregate_of_finite_samples_is_finite_and_the_mean_within_min_and_max(
            values in proptest::collection::vec(
                prop_oneof![any::<f64>().prop_filter("finite", |v| v.is_finite()),
                            Just(f64::MAX), Just(-f64::MAX), Just(1.7e308)],
                1..50,
            )
        ) {
            let mut stats = PeriodStats::of(values[0]);
            for value in &values[1..] {
                stats.add(*value);
            }
            for statistic in [Statistic::Avg, Statistic::Min, Statistic::Max, Statistic::Sum, Statistic::Count] {
                prop_assert!(stats.value(statistic).is_finite(), "{:?} of {:?}", statistic, values);
            }
            let mean = stats.value(Statistic::Avg);
            let spread = (stats.max - stats.min).abs().max(1.0) * 1e-9;
            prop_assert!(mean >= stats.min - spread && mean <= stats.max + spread, "{} not in [{}, {}]", mean, stats.min, stats.max);
        }
    }
}
