//! Prometheus as a source (SPEC 5.2): an alarm or a target-tracking policy with a `query` reads
//! each period's datapoint from the operator's Prometheus (`--prometheus-url`), evaluating the
//! query at the period's end through `/api/v1/query?time=`.
//!
//! A scalar, or a vector of exactly one sample, is the datapoint. An empty result, NaN, several
//! samples, or an error (a timeout included) is a missing period, never 0, and the reason is
//! kept for the alarm's state reason or the decision's activity. Queries run on the evaluator's
//! task, never on the actors' threads, [`CONCURRENCY`] at a time and each within [`TIMEOUT`],
//! so a slow Prometheus delays at most the evaluation, never a webhook.

use std::fmt;
use std::time::Duration;

use flotilla_actors::clock::Timestamp;
use serde_json::Value;

/// How long one query may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How many queries run at once.
pub const CONCURRENCY: usize = 16;

/// How long a tick's queries may take together: one not answered by then is missing.
pub const STEP_DEADLINE: Duration = Duration::from_secs(5);

/// The largest answer read: 1 MiB (one sample's is a few hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a query gave no datapoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// The result was empty.
    Empty,
    /// The value was NaN.
    NaN,
    /// The result held more than one sample.
    Several(usize),
    /// The query failed: Prometheus's error, a timeout, or an answer that does not read.
    Error(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Empty => write!(f, "query: empty result"),
            Missing::NaN => write!(f, "query: NaN"),
            Missing::Several(n) => write!(f, "query: {n} samples, not one"),
            Missing::Error(why) => write!(f, "query: error: {why}"),
        }
    }
}

/// The datapoint of an `/api/v1/query` answer (SPEC 5.2's rules).
pub fn datapoint(answer: &Value) -> Result<f64, Missing> {
    if answer["status"] != "success" {
        let why = answer["error"].as_str().unwrap_or("not a success");
        return Err(Missing::Error(why.chars().take(200).collect()));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result = data["result"].as_array().map_or(&[][..], Vec::as_slice);
            match result {
                [] => return Err(Missing::Empty),
                [one] => &one["value"],
                several => return Err(Missing::Several(several.len())),
            }
        }
        other => {
            let kind: String = other.unwrap_or("missing").chars().take(40).collect();
            return Err(Missing::Error(format!(
                "a {kind} result, not a scalar or a vector"
            )));
        }
    };
    let value = sample[1]
        .as_str()
        .and_then(|text| text.parse::<f64>().ok())
        .ok_or_else(|| Missing::Error("a sample without a value".into()))?;
    if value.is_nan() {
        return Err(Missing::NaN);
    }
    if !value.is_finite() {
        return Err(Missing::Error(format!("the value {value} is not finite")));
    }
    Ok(value)
}

/// The operator's Prometheus.
pub struct Prometheus {
    base: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// The Prometheus at `base` (its root URL).
    pub fn new(base: &str) -> Prometheus {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("a client with a timeout builds");
        Prometheus {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// `query`'s datapoint at `at`, or why there is none.
    pub async fn value_at(&self, query: &str, at: Timestamp) -> Result<f64, Missing> {
        let time = format!(
            "{}.{:03}",
            at.as_millis().div_euclid(1000),
            at.as_millis().rem_euclid(1000)
        );
        let mut answer = self
            .client
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", query), ("time", time.as_str())])
            .send()
            .await
            .map_err(|e| {
                Missing::Error(if e.is_timeout() {
                    "timed out".into()
                } else {
                    "Prometheus unreachable".into()
                })
            })?;
        let status = answer.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|_| Missing::Error("the answer broke off".into()))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Missing::Error(format!(
                    "an answer over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| Missing::Error(format!("an answer ({status}) that is not JSON")))?;
        datapoint(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_sample_or_a_scalar_is_the_datapoint_anything_else_is_missing() {
        let vector = |result: Value| json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        let one = vector(json!([{"metric": {}, "value": [1.0, "500"]}]));
        assert_eq!(datapoint(&one), Ok(500.0));
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2.5"]}});
        assert_eq!(datapoint(&scalar), Ok(2.5));
        assert_eq!(datapoint(&vector(json!([]))), Err(Missing::Empty));
        let nan = vector(json!([{"metric": {}, "value": [1.0, "NaN"]}]));
        assert_eq!(datapoint(&nan), Err(Missing::NaN));
        let two = vector(json!([{"value": [1.0, "1"]}, {"value": [1.0, "2"]}]));
        assert_eq!(datapoint(&two), Err(Missing::Several(2)));
        let error = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert_eq!(datapoint(&error), Err(Missing::Error("parse error".into())));
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(matches!(datapoint(&matrix), Err(Missing::Error(_))));
        assert_eq!(Missing::Empty.to_string(), "query: empty result");
    }
}
