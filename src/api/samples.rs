//! `POST /v1/metrics`: servers post samples (SPEC 5) with their group's metrics token, or a
//! tenant posts them with its token and a `group_id` on each. Samples are not journaled; they
//! feed the alarms' windows.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use flotilla_actors::domain::samples::{validate_sample, Sample};
use flotilla_actors::domain::GroupId;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::alarms::Ingested;
use crate::token;

/// What a full series store tells a sender to wait, in seconds.
pub(super) const SERIES_RETRY_AFTER_SECONDS: u64 = 60;

/// Most samples one request may carry.
pub const MAX_SAMPLES: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    samples: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    metric: String,
    value: f64,
    timestamp: f64,
    /// The server that measured it (informational).
    #[serde(default)]
    #[allow(dead_code)]
    server: Option<String>,
    /// Required with a tenant's token; with a group's metrics token, absent or that group.
    #[serde(default)]
    group_id: Option<String>,
}

/// One sample of a body, checked, with its place and the group it names (if any).
#[derive(Debug)]
struct Parsed {
    index: usize,
    group_id: Option<String>,
    sample: Sample,
}

/// Reads a body's samples, each checked (SPEC 5): any bytes give samples or an error naming
/// what is wrong (and the index of a bad sample), never a panic.
fn parse(body: &[u8]) -> Result<Vec<Parsed>, ApiError> {
    let batch: Batch = super::from_json(body)?;
    if batch.samples.len() > MAX_SAMPLES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_samples",
            format!(
                "at most {MAX_SAMPLES} samples a request, got {}",
                batch.samples.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(batch.samples.len());
    for (index, raw) in batch.samples.iter().enumerate() {
        let sample: RawSample = serde_json::from_str(raw.get()).map_err(|error| {
            let within = format!("samples[{index}]");
            let why = super::fault::<RawSample>(raw.get().as_bytes(), &error, &within);
            ApiError::bad_request("invalid_sample", why)
        })?;
        let checked = validate_sample(&sample.metric, sample.value, sample.timestamp)
            .map_err(|why| bad_sample(index, why))?;
        parsed.push(Parsed {
            index,
            group_id: sample.group_id,
            sample: checked,
        });
    }
    Ok(parsed)
}

/// Who posts: one group's servers, or a tenant for any of its groups.
pub(super) enum Poster {
    Group(GroupId),
    Tenant(flotilla_actors::domain::TenantId),
}

/// Who the request's bearer token lets post: a group's metrics token, or a tenant's token.
pub(super) async fn poster(state: &AppState, req: &HttpRequest) -> Result<Poster, ApiError> {
    let header = super::auth::presented(req)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
    let hash = token::hash(header);
    // A group or tenant made through another node a moment ago is known once this node
    // catches up.
    state
        .catch_up
        .known(|| {
            state.index.group_of_metrics_token(&hash).is_some()
                || state.index.tenant_of_token(&hash).is_some()
        })
        .await;
    if let Some(group) = state.index.group_of_metrics_token(&hash) {
        return Ok(Poster::Group(group));
    }
    state
        .index
        .tenant_of_token(&hash)
        .map(Poster::Tenant)
        .ok_or_else(|| ApiError::unauthorized("unknown token"))
}

fn bad_sample(index: usize, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_sample", format!("samples[{index}]: {why}"))
}

/// The body of `POST /v1/metrics` (documentation; the handler reads it sample by sample, to
/// name the index of a bad one).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MetricsBody {
    /// Up to 10,000 samples.
    #[schema(max_items = 10000)]
    samples: Vec<SampleBody>,
}

/// One sample.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SampleBody {
    /// The metric's name, 1-255 printable ASCII characters.
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]*[!-~][ -~]*$")]
    metric: String,
    /// A finite number.
    value: f64,
    /// Unix seconds (fractions allowed).
    #[schema(minimum = 0.0, maximum = 253_402_300_799.0)]
    timestamp: f64,
    /// The server that measured it.
    server: Option<String>,
    /// The group, required with a tenant's token.
    group_id: Option<String>,
}

/// 202 with what became of the samples.
#[utoipa::path(
    post,
    path = "/v1/metrics",
    tag = "metrics",
    request_body = MetricsBody,
    responses(
        (status = 202, description = "ingested: how many samples were kept, and why others were not", body = Ingested),
        (status = 400, description = "malformed, or a bad sample (its index named)", body = ErrorBody),
        (status = 401, description = "missing or unknown bearer token", body = ErrorBody),
        (status = 404, description = "a sample names a group that is not the tenant's", body = ErrorBody),
        (status = 413, description = "over 10,000 samples, or the body over its limit", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the request body did not arrive in time", body = ErrorBody),
        (status = 429, description = "`series_limit`: the service holds as many series as it may; retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 405, description = "`method_not_allowed`: the path is served with the methods `Allow` names", body = ErrorBody, headers(("Allow" = String, description = "the methods the path serves"))),
        (status = 503, description = "the journal is still being replayed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    description = "Bearer: the group's metrics token, or the tenant's token with `group_id` on each sample (SPEC 5).",
)]
pub async fn ingest(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let poster = poster(&state, &req).await?;
    let body = super::read_body(payload, state.settings.metrics_body_limit).await?;
    let mut by_group: HashMap<GroupId, Vec<Sample>> = HashMap::new();
    for parsed in parse(&body)? {
        let index = parsed.index;
        let group = match (&poster, parsed.group_id) {
            (Poster::Group(group), None) => group.clone(),
            (Poster::Group(group), Some(named)) if named == group.as_str() => group.clone(),
            (Poster::Group(_), Some(_)) => {
                return Err(bad_sample(
                    index,
                    "a metrics token posts for its own group only",
                ))
            }
            (Poster::Tenant(_), None) => {
                return Err(bad_sample(
                    index,
                    "group_id is required with a tenant's token",
                ))
            }
            (Poster::Tenant(tenant), Some(named)) => {
                let group = GroupId::new(named);
                if !state.index.owns_group(tenant, &group) {
                    return Err(ApiError::not_found(&format!("samples[{index}]: group")));
                }
                group
            }
        };
        by_group.entry(group).or_default().push(parsed.sample);
    }
    let now = state.supervisor.clock().now();
    let batches: Vec<(&GroupId, &[Sample])> = by_group
        .iter()
        .map(|(group, samples)| (group, samples.as_slice()))
        .collect();
    // All or none: a 429 stores nothing, so its retry counts no sample twice.
    let total = state
        .evaluator
        .table()
        .ingest_groups(&batches, now)
        .map_err(|e| {
            // The caller's doing (too many distinct series), not a fault: 429, retried once
            // old periods are pruned (within a minute).
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "series_limit", e.to_string())
                .retry_after(SERIES_RETRY_AFTER_SECONDS)
        })?;
    Ok(HttpResponse::Accepted().json(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_give_samples_or_an_error_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body);
        }

        #[test]
        fn any_json_shaped_text_gives_samples_or_an_error(
            metric in ".{0,300}",
            value in any::<f64>(),
            timestamp in any::<f64>(),
            extra in "[a-z_]{0,8}",
        ) {
            let body = serde_json::json!({"samples": [
                {"metric": metric, "value": value, "timestamp": timestamp},
                {"metric": "cpu", "value": 1, "timestamp": 1_700_000_000, extra.clone(): 1},
            ]});
            match parse(body.to_string().as_bytes()) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.len(), 2);
                    prop_assert!(parsed[0].sample.value.is_finite());
                }
                Err(error) => prop_assert!(error.code() == "invalid_sample" || error.code() == "invalid_json"),
            }
        }
    }

    #[test]
    fn a_sample_of_the_wrong_type_is_named_by_its_index_and_field() {
        let body = br#"{"samples": [{"metric": "cpu", "value": 1, "timestamp": 1}, {"metric": "cpu", "value": "high", "timestamp": 1}]}"#;
        let error = parse(body).unwrap_err();
        assert_eq!(error.code(), "invalid_sample");
        let message = error.to_string();
        assert!(
            message.contains("samples[1].value: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_sample_is_named_by_its_index() {
        let body = br#"{"samples": [{"metric": "cpu", "value": 1, "timestamp": 1}, {"metric": "", "value": 1, "timestamp": 1}]}"#;
        let error = parse(body).unwrap_err();
        assert_eq!(error.code(), "invalid_sample");
        assert!(error.to_string().contains("samples[1]"), "{error}");
    }
}
