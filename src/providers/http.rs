//! `http`: an external orchestrator creates and deletes servers, the way Heat's engine adjusts
//! a group.
//!
//! Launch configuration: `{"provider": "http", "url": "https://orchestrator/servers",
//! "secret": "whsec_...", "timeout_ms": 5000, "retries": 2, "status_interval_seconds": 30}`; without `secret`, the operator's
//! `--provider-http-secret` signs. Every request is a `POST` to `url` with a JSON body, signed
//! with Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), so the
//! orchestrator verifies it with any library of that standard:
//!
//! - create: `{"action": "create", "group_id", "server_id", "launch": <launch configuration>,
//!   "env": {"FLOTILLA_GROUP_ID", "FLOTILLA_SERVER_ID", "FLOTILLA_METRICS_URL",
//!   "FLOTILLA_METRICS_TOKEN"}}`, answered 2xx with a JSON object holding at least `"id"`; that
//!   object is the server's handle.
//! - delete: `{"action": "delete", "handle": <handle>}`, answered 2xx (404: already gone).
//! - status: `{"action": "status", "handle": <handle>}`, answered 2xx with `{"status":
//!   "running" | "exited" | anything else (unknown)}`.
//!
//! Each active server's status is asked about once every `status_interval_seconds` (default 30;
//! 0 asks at every pass of the converger), the group's servers paced over the interval; each
//! pending server's at every pass.
//!
//! A request that times out, cannot connect or is answered 5xx, 408 or 429 is retried `retries`
//! times (100 ms, 200 ms, ...), then the orchestrator counts as unreachable (a pass asks it no
//! more); another 4xx is not retried, and refuses only its request. The answer's status becomes
//! the failure's reason.

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::clock::Clock;
use serde_json::{json, Value};

use super::{Launch, Provider, ProviderError, Status};
use crate::{signature, token};

/// The default time a request may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The default number of retries after a first failed attempt.
pub const DEFAULT_RETRIES: u64 = 2;

/// The default `status_interval_seconds`: a group of 1,000 active servers is asked about at
/// about 33 a second.
pub const DEFAULT_STATUS_INTERVAL_SECONDS: u64 = 30;

/// The most of an orchestrator's answer that is read: past it, the answer is refused unread.
pub const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// The largest server handle kept, as JSON: what the journal takes of any object's field
/// (`launch` and `metadata` too). A larger answer to a create is refused, and the server it
/// made deleted at once.
pub const MAX_HANDLE_BYTES: usize = flotilla_actors::domain::MAX_FIELD_JSON_BYTES;

/// The deepest server handle kept: arrays and objects within one another. The journal reads a
/// handle back inside its event and record, within serde_json's limit of 128 levels: an answer
/// that just fit that limit as read made a record no replay could decode.
pub const MAX_HANDLE_DEPTH: usize = 32;

/// How many arrays and objects lie within one another in `value` (0 for a scalar).
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut open = vec![(value, 0)];
    while let Some((value, above)) = open.pop() {
        let inner: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(above + 1);
        open.extend(inner.map(|item| (item, above + 1)));
    }
    deepest
}

/// The http provider.
pub struct HttpProvider {
    clock: Arc<dyn Clock>,
    secret: Option<String>,
}

impl HttpProvider {
    /// Signs with `secret` when a launch configuration has none, timestamps with `clock`.
    pub fn new(clock: Arc<dyn Clock>, secret: Option<String>) -> HttpProvider {
        HttpProvider { clock, secret }
    }

    /// Sends `body` to the configuration's URL; answers the JSON of a 2xx (Null when empty),
    /// or `Ok(None)` on a 404.
    fn send(
        &self,
        config: &Value,
        body: &Value,
        fence: Option<&flotilla_journal::Fence>,
    ) -> Result<Option<Value>, ProviderError> {
        let url = config["url"]
            .as_str()
            .ok_or_else(|| ProviderError::new("launch.url is required for the http provider"))?;
        let secret = config["secret"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| self.secret.clone())
            .ok_or_else(|| {
                ProviderError::new(
                    "no secret to sign with: set launch.secret or --provider-http-secret",
                )
            })?;
        let key = signature::key_of(&secret).ok_or_else(|| {
            ProviderError::new("the http provider's secret is not a whsec_ secret")
        })?;
        let timeout = Duration::from_millis(
            config["timeout_ms"]
                .as_u64()
                .unwrap_or(DEFAULT_TIMEOUT_MS)
                .min(60_000),
        );
        let retries = config["retries"]
            .as_u64()
            .unwrap_or(DEFAULT_RETRIES)
            .min(10);
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::new(format!("cannot build an http client: {e}")))?;
        let payload = serde_json::to_vec(body).unwrap_or_default();
        let mut last = String::new();
        // One message, however many attempts: Standard Webhooks' receivers deduplicate by it.
        let id = token::generate("msg_");
        for attempt in 0..=retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << (attempt - 1).min(6)));
            }
            let timestamp = self.clock.now().as_secs();
            // The attempt's whole time, its answer's body included: the client's timeout
            // bounds the wait for the answer's head, and each wait for more of its body.
            let deadline = std::time::Instant::now() + timeout;
            let mut request = client.post(url);
            if let Some(fence) = fence {
                // The lease a launch is made under: an orchestrator that has seen a higher
                // token for the same lease knows this node was fenced off.
                request = request
                    .header("flotilla-lease", &fence.lease)
                    .header("flotilla-fencing-token", fence.token.to_string());
            }
            let answer = request
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signature::sign(&key, &id, timestamp, &payload),
                )
                .body(payload.clone())
                .send();
            match answer {
                Ok(response) if response.status().is_success() => {
                    let text = match read_answer(response, deadline) {
                        Ok(body) => body,
                        Err(Unread::TooLarge) => {
                            return Err(ProviderError::new(format!(
                                "the orchestrator's answer is over {MAX_ANSWER_BYTES} bytes"
                            )))
                        }
                        Err(Unread::Late) => {
                            last =
                                format!("orchestrator timed out after {} ms", timeout.as_millis());
                            tracing::warn!(attempt, reason = %last, "orchestrator request failed");
                            continue;
                        }
                        Err(Unread::Broken(error)) => {
                            // Its kind only: reqwest's text names the URL.
                            let kind = error.kind();
                            last =
                                format!("orchestrator unreachable: its answer broke off ({kind})");
                            tracing::warn!(attempt, reason = %last, "orchestrator request failed");
                            continue;
                        }
                    };
                    if text.trim_ascii().is_empty() {
                        return Ok(Some(Value::Null));
                    }
                    return serde_json::from_slice(&text).map(Some).map_err(|e| {
                        ProviderError::new(format!("the orchestrator's answer is not JSON: {e}"))
                    });
                }
                Ok(response) if response.status().as_u16() == 404 => return Ok(None),
                Ok(response) => {
                    // The answer's body is not kept: an orchestrator may echo the request,
                    // which carries the server's metrics token.
                    let status = response.status().as_u16();
                    last = format!("orchestrator answered {status}");
                    if status < 500 && !matches!(status, 408 | 429) {
                        // A refusal of this request, not an orchestrator down or asking to be
                        // left alone for a while (408, 429: retried, then unreachable).
                        return Err(ProviderError::new(last));
                    }
                }
                Err(error) if error.is_timeout() => {
                    last = format!("orchestrator timed out after {} ms", timeout.as_millis());
                }
                // Without its URL, which may carry credentials: the reason is recorded.
                Err(error) => last = format!("orchestrator unreachable: {}", error.without_url()),
            }
            tracing::warn!(attempt, reason = %last, "orchestrator request failed");
        }
        Err(ProviderError::unreachable(last))
    }
}

/// Why an answer's body was not read.
enum Unread {
    /// It is over [`MAX_ANSWER_BYTES`].
    TooLarge,
    /// It was still coming at the attempt's deadline (an orchestrator that trickles its answer
    /// is as slow as one that never answers).
    Late,
    /// The connection failed while it came.
    Broken(std::io::Error),
}

/// Whether a read of an answer's body failed for the client's timeout (reqwest's blocking
/// reads say so inside an `io::Error` of another kind).
fn timed_out(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::TimedOut
        || error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout)
}

/// Reads an answer's body, at most [`MAX_ANSWER_BYTES`], by `deadline`. Each read waits at
/// most the client's timeout, so an attempt ends at most that long after its deadline.
fn read_answer(
    mut body: impl std::io::Read,
    deadline: std::time::Instant,
) -> Result<Vec<u8>, Unread> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) if timed_out(&error) => return Err(Unread::Late),
            Err(error) => return Err(Unread::Broken(error)),
        };
        if (bytes.len() + read) as u64 > MAX_ANSWER_BYTES {
            return Err(Unread::TooLarge);
        }
        bytes.extend_from_slice(&chunk[..read]);
        // Only once more is to come: an answer whose head came just in time is not thrown
        // away with its body already there.
        if std::time::Instant::now() > deadline {
            match body.read(&mut chunk) {
                Ok(0) => break,
                _ => return Err(Unread::Late),
            }
        }
    }
    Ok(bytes)
}

impl Provider for HttpProvider {
    fn status_interval(&self, config: &Value) -> Duration {
        let seconds = config["status_interval_seconds"]
            .as_u64()
            .unwrap_or(DEFAULT_STATUS_INTERVAL_SECONDS)
            .min(flotilla_actors::domain::group::launch::MAX_STATUS_INTERVAL_SECONDS);
        Duration::from_secs(seconds)
    }

    fn launch(&self, launch: &Launch) -> Result<Value, ProviderError> {
        let env: serde_json::Map<String, Value> = launch
            .flotilla_env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        let body = json!({
            "action": "create",
            "group_id": launch.group_id,
            "server_id": launch.server_id,
            "launch": launch.config,
            "env": env,
        });
        match self.send(&launch.config, &body, launch.fence.as_ref())? {
            Some(handle) if handle.get("id").is_some() => {
                let size = serde_json::to_vec(&handle).map_or(usize::MAX, |json| json.len());
                let levels = depth(&handle);
                let unkept = if size > MAX_HANDLE_BYTES {
                    Some(format!("{size} bytes of JSON, over {MAX_HANDLE_BYTES}"))
                } else if levels > MAX_HANDLE_DEPTH {
                    Some(format!("{levels} levels deep, over {MAX_HANDLE_DEPTH}"))
                } else {
                    None
                };
                if let Some(unkept) = unkept {
                    // The journal would refuse to record it, or record what it could not read
                    // back, so nothing would ever delete the server it names: deleted now, and
                    // the launch is a failure to retry.
                    let deleted = self.delete(&launch.config, &handle);
                    return Err(ProviderError::new(format!(
                        "the orchestrator's answer to create is {unkept}; its server was {}",
                        if deleted.is_ok() {
                            "deleted"
                        } else {
                            "not deleted"
                        }
                    )));
                }
                Ok(handle)
            }
            _ => Err(ProviderError::new(
                "the orchestrator's answer to create has no \"id\"",
            )),
        }
    }

    fn delete(&self, config: &Value, handle: &Value) -> Result<(), ProviderError> {
        self.send(config, &json!({"action": "delete", "handle": handle}), None)
            .map(|_| ())
    }

    fn status(&self, config: &Value, handle: &Value) -> Status {
        match self.send(config, &json!({"action": "status", "handle": handle}), None) {
            Ok(None) => Status::Exited,
            Ok(Some(answer)) => match answer["status"].as_str() {
                Some("running") => Status::Running,
                Some("exited") => Status::Exited,
                _ => Status::Unknown,
            },
            Err(error) if error.unreachable => Status::Unreachable,
            // A refusal about this server (a 4xx, an answer that is no status): the others
            // are asked.
            Err(_) => Status::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_as_deep_as_its_arrays_and_objects_lie_within_one_another() {
        assert_eq!(depth(&json!(7)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"id": "vm-1", "tags": ["a"]})), 2);
        assert_eq!(depth(&json!([[1], {"a": [{}]}])), 4);
        let deep: Value =
            serde_json::from_str(&format!("{}{}", "[".repeat(40), "]".repeat(40))).unwrap();
        assert_eq!(depth(&deep), 40);
    }
}
