//! `POST /v1/write`: Prometheus remote write 1.0 (SPEC 5.1), so that Prometheus's own
//! `remote_write` feeds alarms and target tracking with no adapter.
//!
//! The body is a snappy block-compressed protobuf `WriteRequest`
//! (`prometheus/prometheus prompb/remote.proto`, `types.proto`). Its four messages are written
//! out below with prost's derive: the crates that ship them are unmaintained. Fields this
//! service does not read (metadata, exemplars, histograms) are skipped by the decoder, so a
//! request with metadata only (Prometheus sends one a minute) is a valid, empty write.
//!
//! The decompressed length is read from the block's header and checked against
//! [`MAX_DECOMPRESSED`] before anything is decompressed. A series' `__name__` is the metric;
//! its group is the metrics token's, or (with a tenant's token) its `flotilla_group` label. A
//! series that names no group, or one the token cannot write to, is skipped and counted; NaN
//! samples (stale markers) are skipped; the rest feed the same series store as `/v1/metrics`.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::samples::{validate_metric, MAX_SAMPLE_TIMESTAMP_SECS};
use prost::Message;

use super::error::ErrorBody;
use super::samples::{poster, Poster};
use super::{ApiError, AppState};

/// The most bytes a write request may have on the wire: 2 MiB.
pub const MAX_WIRE: usize = crate::intake::MAX_BODY;

/// The most bytes a write request may decompress to: 32 MiB.
pub const MAX_DECOMPRESSED: usize = 32 << 20;

/// The most series, and the most samples, one write may carry: far above what Prometheus
/// sends (500 samples a request by default), and bounding what decoding one may allocate.
pub const MAX_SERIES: usize = 100_000;

/// See [`MAX_SERIES`].
pub const MAX_SAMPLES: usize = 100_000;

/// The label that names a series' metric.
const NAME: &str = "__name__";

/// The label that names a series' group, with a tenant's token.
const GROUP: &str = "flotilla_group";

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Its labels, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Its samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RemoteSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct RemoteSample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// What became of a write's samples, by outcome (the `outcome` label in `/metrics`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    counts: Vec<(&'static str, usize)>,
}

impl Tally {
    fn add(&mut self, outcome: &'static str, n: usize) {
        if n == 0 {
            return;
        }
        match self.counts.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, count)) => *count += n,
            None => self.counts.push((outcome, n)),
        }
    }

    /// Each outcome with its count.
    pub fn counts(&self) -> &[(&'static str, usize)] {
        &self.counts
    }

    /// The count of `outcome`.
    pub fn of(&self, outcome: &str) -> usize {
        self.counts
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }
}

/// Decompresses and decodes a write request: 413 when it claims more than
/// [`MAX_DECOMPRESSED`] bytes (checked before decompressing), 400 when it is not snappy or
/// not a `WriteRequest`.
pub fn decode(body: &[u8]) -> Result<WriteRequest, ApiError> {
    let length = snap::raw::decompress_len(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_write_request",
            format!("not snappy-compressed: {e}"),
        )
    })?;
    if length > MAX_DECOMPRESSED {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the write request decompresses to {length} bytes, over {MAX_DECOMPRESSED}"),
        ));
    }
    let bytes = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_write_request",
                format!("not snappy-compressed: {e}"),
            )
        })?;
    // Counted on the wire before any message is built: 32 MiB of tiny messages would
    // otherwise decode to a gigabyte of them.
    let (series, samples) = count(&bytes).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_write_request",
            "not a remote write 1.0 WriteRequest: a malformed field",
        )
    })?;
    if series > MAX_SERIES || samples > MAX_SAMPLES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_samples",
            format!(
                "{series} series and {samples} samples; a write carries at most \
                 {MAX_SERIES} and {MAX_SAMPLES}"
            ),
        ));
    }
    WriteRequest::decode(bytes.as_slice()).map_err(|e| {
        ApiError::bad_request(
            "invalid_write_request",
            format!("not a remote write 1.0 WriteRequest: {e}"),
        )
    })
}

/// A protobuf varint at the front of `bytes`, which it moves past.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// One field at the front of `bytes`, which it moves past: its number, and its bytes if it is
/// length-delimited; none if it is malformed.
fn field<'a>(bytes: &mut &'a [u8]) -> Option<(u64, &'a [u8])> {
    let key = varint(bytes)?;
    let payload: &[u8] = match key & 7 {
        0 => {
            varint(bytes)?;
            &[]
        }
        1 | 5 => {
            let n = if key & 7 == 1 { 8 } else { 4 };
            let (_, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            &[]
        }
        2 => {
            let n = usize::try_from(varint(bytes)?).ok()?;
            let (payload, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            payload
        }
        _ => return None,
    };
    Some((key >> 3, payload))
}

/// How many series and samples a `WriteRequest`'s bytes hold, without decoding them; none
/// if they are not well-formed protobuf.
fn count(mut bytes: &[u8]) -> Option<(usize, usize)> {
    let (mut series, mut samples) = (0, 0);
    while !bytes.is_empty() {
        let (number, mut payload) = field(&mut bytes)?;
        if number == 1 {
            series += 1;
            while !payload.is_empty() {
                if field(&mut payload)?.0 == 2 {
                    samples += 1;
                }
            }
        }
    }
    Some((series, samples))
}

/// The samples of a write, borrowed from the request (or the poster): each group's id once,
/// and each sample as (index into `groups`, metric, value, timestamp).
#[derive(Debug, Default)]
struct Writable<'a> {
    groups: Vec<&'a str>,
    samples: Vec<(usize, &'a str, f64, Timestamp)>,
}

impl<'a> Writable<'a> {
    /// Each sample keyed by its group's index, as [`crate::alarms::AlarmTable::ingest_all`]
    /// takes them.
    fn iter(&self) -> impl Iterator<Item = (usize, &'a str, &'a str, f64, Timestamp)> + '_ {
        self.samples
            .iter()
            .map(|&(group, metric, value, at)| (group, self.groups[group], metric, value, at))
    }
}

/// The samples of `request` for `poster`, and the tally of those skipped: with a metrics
/// token, every sample is its group's; with a tenant's token, each series names its group in
/// a label, and whether the tenant may write it is told when the sample is stored.
fn writable<'a>(request: &'a WriteRequest, poster: &'a Poster) -> (Writable<'a>, Tally) {
    let mut writable = Writable::default();
    let mut tally = Tally::default();
    // A group label → its index in `writable.groups`.
    let mut seen: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    if let Poster::Group(group) = poster {
        // The token's group wins over any label.
        writable.groups.push(group.as_str());
    }
    writable
        .samples
        .reserve(request.timeseries.iter().map(|s| s.samples.len()).sum());
    for series in &request.timeseries {
        let label = |name: &str| {
            series
                .labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str())
        };
        let n = series.samples.len();
        let Some(metric) = label(NAME) else {
            tally.add("no_name", n);
            continue;
        };
        let group = match poster {
            Poster::Group(_) => 0,
            Poster::Tenant(_) => {
                let Some(named) = label(GROUP) else {
                    tally.add("no_group", n);
                    continue;
                };
                *seen.entry(named).or_insert_with(|| {
                    writable.groups.push(named);
                    writable.groups.len() - 1
                })
            }
        };
        let metric_ok = validate_metric(metric).is_ok();
        for sample in &series.samples {
            if sample.value.is_nan() {
                tally.add("stale", 1);
                continue;
            }
            match sample_time(sample.timestamp) {
                Some(at) if metric_ok && sample.value.is_finite() => {
                    writable.samples.push((group, metric, sample.value, at));
                }
                _ => tally.add("invalid", 1),
            }
        }
    }
    (writable, tally)
}

/// Of the samples nothing watches (runs of samples, each run given by its group's index in
/// `groups` and its length), how many are in groups `owns` says the writer may not write.
/// `owns` is asked once, with each such group once, and answers for each whether the writer
/// owns it.
fn not_owned(
    groups: &[&str],
    unwatched: &[(usize, usize)],
    owns: impl FnOnce(&[&str]) -> Vec<bool>,
) -> usize {
    if unwatched.is_empty() {
        return 0;
    }
    // A group's index → its index in `asked`.
    let mut asked_at: Vec<Option<usize>> = vec![None; groups.len()];
    let mut asked: Vec<&str> = Vec::new();
    for &(group, _) in unwatched {
        asked_at[group].get_or_insert_with(|| {
            asked.push(groups[group]);
            asked.len() - 1
        });
    }
    let owned = owns(&asked);
    unwatched
        .iter()
        .filter(|&&(group, _)| {
            asked_at[group].is_some_and(|at| !owned.get(at).copied().unwrap_or(false))
        })
        .map(|&(_, n)| n)
        .sum()
}

/// A remote-write timestamp (Unix ms) as a sample's time: none if it is negative or past the
/// end of year 9999, as `/v1/metrics` refuses.
fn sample_time(millis: i64) -> Option<Timestamp> {
    #[allow(clippy::cast_possible_truncation)]
    const MAX_MILLIS: i64 = (MAX_SAMPLE_TIMESTAMP_SECS * 1000.0) as i64;
    (0..=MAX_MILLIS)
        .contains(&millis)
        .then(|| Timestamp::from_millis(millis))
}

/// Prometheus remote write 1.0 (SPEC 5.1).
#[utoipa::path(
    post,
    path = "/v1/write",
    tag = "metrics",
    request_body(content = Vec<u8>, description = "a snappy-compressed protobuf WriteRequest (remote write 1.0)", content_type = "application/x-protobuf"),
    responses(
        (status = 204, description = "written: the samples feed the same series as /v1/metrics; skipped ones are counted in /metrics"),
        (status = 400, description = "`invalid_write_request`: not snappy, or not a WriteRequest", body = ErrorBody),
        (status = 401, description = "missing or unknown bearer token", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the request body did not arrive in time", body = ErrorBody),
        (status = 413, description = "over 2 MiB on the wire, over 32 MiB decompressed, or over 100,000 series or samples", body = ErrorBody),
        (status = 415, description = "remote write 2.0, or a content encoding other than snappy", body = ErrorBody),
        (status = 405, description = "`method_not_allowed`: the path is served with the methods `Allow` names", body = ErrorBody, headers(("Allow" = String, description = "the methods the path serves"))),
        (status = 503, description = "the journal is still being replayed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    description = "Bearer: a group's metrics token, or the tenant's token with each series' `flotilla_group` label naming its group (SPEC 5.1).",
)]
pub async fn write(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let poster = poster(&state, &req).await?;
    let header_of = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    if header_of(header::CONTENT_TYPE).contains("io.prometheus.write.v2") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "remote write 2.0 is not supported: send prometheus.WriteRequest (remote write 1.0)",
        ));
    }
    let encoding = header_of(header::CONTENT_ENCODING);
    if !encoding.is_empty() && encoding != "snappy" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding {encoding:?}: remote write bodies are snappy"),
        ));
    }
    let body = super::read_body(payload, MAX_WIRE).await?;
    let request = decode(&body)?;
    let (writable, mut tally) = writable(&request, &poster);
    let now = state.supervisor.clock().now();
    // A tenant's samples are checked against the tenant of the series they land on. Past the
    // series cap a sample is skipped and counted, not refused: a 429 after other samples were
    // stored would have Prometheus send them all again.
    let writer = match &poster {
        Poster::Tenant(tenant) => Some(tenant),
        Poster::Group(_) => None,
    };
    let written = state
        .evaluator
        .table()
        .ingest_all(writable.iter(), writer, now);
    // A sample nothing watches is dropped either way; the tally tells whether the tenant could
    // have written it, asking the index once, under one short read lock, about those groups.
    let foreign = match &poster {
        Poster::Tenant(tenant) => not_owned(&writable.groups, &written.unwatched, |groups| {
            state.index.owns_groups_named(tenant, groups)
        }),
        Poster::Group(_) => 0,
    };
    let ingested = written.ingested;
    tally.add("accepted", ingested.accepted);
    tally.add("unwatched", ingested.unwatched - foreign);
    tally.add("not_writable", written.not_writable + foreign);
    tally.add("too_old", ingested.too_old);
    tally.add("too_new", ingested.too_new);
    tally.add("series_limit", written.over_cap);
    for (outcome, n) in tally.counts() {
        state.telemetry.remote_write(outcome, *n);
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_actors::domain::{GroupId, TenantId};
    use proptest::prelude::*;

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(name, value)| Label {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|(value, timestamp)| RemoteSample {
                    value: *value,
                    timestamp: *timestamp,
                })
                .collect(),
        }
    }

    fn compressed(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn a_write_request_round_trips_through_snappy_and_protobuf() {
        let request = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "queue_depth"), ("flotilla_group", "grp_1")],
                &[(500.0, 1_700_000_000_000)],
            )],
        };
        assert_eq!(decode(&compressed(&request)).unwrap(), request);
    }

    #[test]
    fn bad_bodies_are_400s_and_a_large_claim_a_413_before_decompressing() {
        let good = compressed(&WriteRequest {
            timeseries: vec![series(&[("__name__", "cpu")], &[(1.0, 1)])],
        });
        let truncated = &good[..good.len() / 2];
        assert_eq!(
            decode(truncated).unwrap_err().code(),
            "invalid_write_request"
        );
        assert_eq!(
            decode(b"\x1f\x8b\x08gzip").unwrap_err().code(),
            "invalid_write_request"
        );
        // Field 1 as a varint, not a message.
        let wrong_type = snap::raw::Encoder::new()
            .compress_vec(&[0x08, 0x01])
            .unwrap();
        assert_eq!(
            decode(&wrong_type).unwrap_err().code(),
            "invalid_write_request"
        );
        // A header claiming 100 MB, with nothing behind it.
        let mut claim = Vec::new();
        let mut n: u64 = 100_000_000;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.push(n as u8);
        assert_eq!(decode(&claim).unwrap_err().code(), "too_large");
        // Metadata only (field 3): an empty, valid write.
        let metadata = snap::raw::Encoder::new()
            .compress_vec(&[0x1a, 0x02, 0x08, 0x01])
            .unwrap();
        assert_eq!(decode(&metadata).unwrap().timeseries.len(), 0);
    }

    #[test]
    fn a_write_of_millions_of_tiny_messages_is_refused_before_any_is_built() {
        // 32 MiB of empty series (2 bytes each): 16M messages.
        let empty_series = [0x0a, 0x00].repeat(1 << 24);
        let body = snap::raw::Encoder::new()
            .compress_vec(&empty_series)
            .unwrap();
        assert!(body.len() < MAX_WIRE, "{}", body.len());
        assert_eq!(decode(&body).unwrap_err().code(), "too_many_samples");
        // One series of many empty samples.
        let samples = [0x12, 0x00].repeat(200_000);
        let mut one = vec![0x0a];
        let mut len = samples.len();
        while len >= 0x80 {
            one.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        one.push(len as u8);
        one.extend(samples);
        let body = snap::raw::Encoder::new().compress_vec(&one).unwrap();
        assert_eq!(decode(&body).unwrap_err().code(), "too_many_samples");
        assert_eq!(count(&[0x0a, 0x05, 0x12]), None, "a length past the end");
    }

    #[test]
    fn series_go_to_their_group_and_the_rest_are_counted() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "queue"), ("flotilla_group", "grp_mine")],
                    &[(5.0, 1_700_000_000_000), (f64::NAN, 1_700_000_001_000)],
                ),
                series(&[("__name__", "queue")], &[(1.0, 1_700_000_000_000)]),
                series(
                    &[("__name__", "queue"), ("flotilla_group", "grp_theirs")],
                    &[(1.0, 1_700_000_000_000)],
                ),
                series(&[("job", "x")], &[(1.0, 1_700_000_000_000)]),
                series(
                    &[("__name__", "queue"), ("flotilla_group", "grp_mine")],
                    &[(f64::INFINITY, 1_700_000_000_000)],
                ),
            ],
        };
        let tenant = Poster::Tenant(TenantId::new("ten_1"));
        let (named, tally) = writable(&request, &tenant);
        let at = Timestamp::from_millis(1_700_000_000_000);
        // Whose the groups are is told when the samples are stored.
        assert_eq!(
            named.iter().collect::<Vec<_>>(),
            [
                (0, "grp_mine", "queue", 5.0, at),
                (1, "grp_theirs", "queue", 1.0, at)
            ]
        );
        for (outcome, n) in [
            ("stale", 1),
            ("no_group", 1),
            ("no_name", 1),
            ("invalid", 1),
        ] {
            assert_eq!(tally.of(outcome), n, "{outcome}: {tally:?}");
        }
        // A metrics token's group wins over any label.
        let token = Poster::Group(GroupId::new("grp_token"));
        let (by_token, _) = writable(&request, &token);
        assert_eq!(by_token.groups, ["grp_token"]);
        assert_eq!(by_token.samples.len(), 3);
    }

    #[test]
    fn unwatched_samples_of_groups_not_owned_are_told_apart_asking_once() {
        let groups = ["grp_mine", "grp_theirs", "grp_gone"];
        let asked = std::cell::RefCell::new(Vec::new());
        let owns = |names: &[&str]| {
            asked.borrow_mut().push(names.join(","));
            names.iter().map(|n| *n == "grp_mine").collect()
        };
        let runs = [(1, 2), (0, 1), (1, 1), (2, 3), (0, 1)];
        assert_eq!(not_owned(&groups, &runs, owns), 6);
        assert_eq!(*asked.borrow(), ["grp_theirs,grp_mine,grp_gone"]);
        // Nothing unwatched: the index is not asked.
        assert_eq!(
            not_owned(&groups, &[], |_| unreachable!("nothing to ask")),
            0
        );
    }

    #[test]
    fn a_sample_time_is_refused_outside_what_the_json_intake_takes() {
        assert_eq!(sample_time(0), Some(Timestamp::from_millis(0)));
        assert_eq!(sample_time(-1), None);
        assert_eq!(
            sample_time(253_402_300_799_000),
            Some(Timestamp::from_millis(253_402_300_799_000))
        );
        assert_eq!(sample_time(253_402_300_799_001), None);
        assert_eq!(sample_time(i64::MAX), None);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&body);
            let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            let _ = decode(&compressed);
        }
    }
}
