//! A launch configuration's schema (SPEC 6): each provider's fields, their types and ranges,
//! checked when the configuration is set, so that a bad one is a 400 naming the field, never a
//! server that fails for ever.
//!
//! - `process`: `command` (1 to 64 non-empty strings, required), `env` (strings by non-empty
//!   names without `=` or NUL), `grace_seconds` (0 to 3600);
//! - `http`: `url` (http or https, with a host, required), `secret` (`whsec_` and base64),
//!   `timeout_ms` (1 to 60000), `retries` (0 to 10), `status_interval_seconds` (0 to 86400),
//!   `start_timeout_seconds` (0 to 86400; see [`start_timeout`]);
//! - `simulated`: `start_seconds` (0 to 86400), `failure_rate` (0 to 1), `seed` (an unsigned
//!   integer).
//!
//! Any other field is refused. Whether an `http` configuration without a `secret` may lean on
//! the operator's `--provider-http-secret` is the service's to say.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::domain::Rejection;

/// The launch providers a group may name in `launch.provider`.
pub const PROVIDERS: [&str; 3] = ["process", "http", "simulated"];

/// The most seconds a `process` server is given to stop before it is killed.
pub const MAX_GRACE_SECONDS: u64 = 3600;

/// The longest a `simulated` server takes to start, in seconds.
pub const MAX_START_SECONDS: f64 = 86_400.0;

/// Bytes that may not appear in a process's arguments, environment or URL (JSON Schema
/// patterns, as Python's and ECMAScript's `re` read them).
const NO_NUL: &str = "^[^\\x00]*$";

/// The launch configurations this service accepts, as a JSON Schema (for the OpenAPI document):
/// [`validate`]'s rules, less the `process` provider unless the operator allows it, and with an
/// `http` provider's `secret` required unless the operator set one.
pub fn schema(allow_process: bool, operator_secret: bool) -> Value {
    let process = json!({
        "type": "object",
        "description": "each server a child process of the service",
        "additionalProperties": false,
        "required": ["provider", "command"],
        "properties": {
            "provider": {"const": "process"},
            "command": {
                "type": "array", "minItems": 1, "maxItems": 64,
                "prefixItems": [{"type": "string", "minLength": 1, "pattern": NO_NUL}],
                "items": {"type": "string", "pattern": NO_NUL},
            },
            "env": {
                "type": "object",
                "propertyNames": {"minLength": 1, "pattern": "^[^=\\x00]*$"},
                "additionalProperties": {"type": "string", "pattern": NO_NUL},
            },
            "grace_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS},
        },
    });
    let mut http = json!({
        "type": "object",
        "description": "servers created and deleted by an external orchestrator",
        "additionalProperties": false,
        "required": ["provider", "url"],
        "properties": {
            "provider": {"const": "http"},
            "url": {
                "type": "string", "maxLength": 2048,
                "pattern": "^https?://[^/?#\\s\\x00-\\x1f\\x7f-\\x9f][^\\s\\x00-\\x1f\\x7f-\\x9f]*$",
            },
            "secret": {
                "type": "string",
                "description": "whsec_ and standard base64 with its padding",
                "pattern": "^whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$",
            },
            "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60_000},
            "retries": {"type": "integer", "minimum": 0, "maximum": 10},
            "status_interval_seconds": {
                "type": "integer", "minimum": 0, "maximum": MAX_STATUS_INTERVAL_SECONDS,
                "description": "each active server's status is asked about once every this many seconds, paced over them (default 30; 0: at every pass)",
            },
            "start_timeout_seconds": {
                "type": "integer", "minimum": 0, "maximum": MAX_START_TIMEOUT_SECONDS,
                "description": "a server the orchestrator does not say is running this many seconds after its answer to the server's create was recorded fails, and its slot is launched again (default 3600; 0: never)",
            },
        },
    });
    if !operator_secret {
        http["required"] = json!(["provider", "url", "secret"]);
    }
    let simulated = json!({
        "type": "object",
        "description": "in-memory servers, for demos and benchmarks",
        "additionalProperties": false,
        "required": ["provider"],
        "properties": {
            "provider": {"const": "simulated"},
            "start_seconds": {"type": "number", "minimum": 0, "maximum": MAX_START_SECONDS},
            "failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "seed": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
        },
    });
    let mut providers = vec![http, simulated];
    if allow_process {
        providers.insert(0, process);
    }
    json!({"oneOf": providers})
}

/// The integer fields of the providers, which JSON (and the schema) may write as `30.0`.
const WHOLE_FIELDS: [&str; 6] = [
    "grace_seconds",
    "timeout_ms",
    "retries",
    "status_interval_seconds",
    "start_timeout_seconds",
    "seed",
];

/// The longest `status_interval_seconds` of the http provider: a day.
pub const MAX_STATUS_INTERVAL_SECONDS: u64 = 86_400;

/// The longest `start_timeout_seconds` of the http provider: a day.
pub const MAX_START_TIMEOUT_SECONDS: u64 = 86_400;

/// An http server's `start_timeout_seconds` when its launch gives none: an hour, as an AWS
/// lifecycle hook's default heartbeat timeout. Orchestrators that take long exist (bare metal,
/// stacks of resources), and an existing group got this default with no say: one shorter than
/// their slowest start would fail servers that were about to run, again and again.
pub const DEFAULT_START_TIMEOUT_SECONDS: u64 = 3_600;

/// How long a server of this launch may stay pending once the provider made it (answered its
/// create), in seconds (none: as long as it takes). An `http` orchestrator may answer a status that is neither
/// running nor exited for ever (an image that never pulls); such a server fails after
/// `start_timeout_seconds` (default [`DEFAULT_START_TIMEOUT_SECONDS`], 0: never), so that its
/// slot is launched again. A `process` runs or exits at once, and a `simulated` server runs
/// after its own `start_seconds`: neither times out.
pub fn start_timeout(launch: &Value) -> Option<u64> {
    if launch["provider"] != "http" {
        return None;
    }
    let seconds = match &launch["start_timeout_seconds"] {
        Value::Null => DEFAULT_START_TIMEOUT_SECONDS,
        given => given.as_u64()?.min(MAX_START_TIMEOUT_SECONDS),
    };
    (seconds > 0).then_some(seconds)
}

/// `launch` with its integer fields written as integers (`30.0` as `30`), as the providers read
/// them; anything else as given, for [`validate`] to judge.
pub fn whole_numbers(launch: &Value) -> Value {
    let mut launch = launch.clone();
    if let Some(fields) = launch.as_object_mut() {
        for key in WHOLE_FIELDS {
            if let Some(value) = fields.get_mut(key) {
                let whole = value.as_f64().filter(|f| {
                    value.as_u64().is_none()
                        && f.fract() == 0.0
                        && (0.0..18_446_744_073_709_551_616.0).contains(f)
                });
                if let Some(f) = whole {
                    *value = Value::from(f as u64);
                }
            }
        }
    }
    launch
}

/// Checks `launch` against its provider's schema.
pub(super) fn validate(launch: &Value) -> Result<(), Rejection> {
    let Some(fields) = launch.as_object() else {
        return Err(Rejection::invalid("launch", "must be a JSON object"));
    };
    let provider = match fields.get("provider").and_then(Value::as_str) {
        Some(provider) if PROVIDERS.contains(&provider) => provider,
        Some(provider) => {
            return Err(Rejection::invalid(
                "launch.provider",
                format!("must be one of process, http, simulated; is {provider:?}"),
            ))
        }
        None => {
            return Err(Rejection::invalid(
                "launch.provider",
                "is required and must be one of process, http, simulated",
            ))
        }
    };
    let allowed: &[&str] = match provider {
        "process" => &["provider", "command", "env", "grace_seconds"],
        "http" => &[
            "provider",
            "url",
            "secret",
            "timeout_ms",
            "retries",
            "status_interval_seconds",
            "start_timeout_seconds",
        ],
        _ => &["provider", "start_seconds", "failure_rate", "seed"],
    };
    if let Some(unknown) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(Rejection::invalid(
            "launch",
            format!(
                "the {provider} provider has no field {unknown:?}; its fields are {}",
                allowed.join(", ")
            ),
        ));
    }
    match provider {
        "process" => process(fields),
        "http" => http(fields),
        _ => simulated(fields),
    }
}

fn process(fields: &Map<String, Value>) -> Result<(), Rejection> {
    let Some(command) = fields.get("command").and_then(Value::as_array) else {
        return Err(Rejection::invalid(
            "launch.command",
            "is required: the program and its arguments, as a list of strings",
        ));
    };
    let strings = command
        .iter()
        .all(|arg| arg.as_str().is_some_and(|arg| !arg.contains('\0')));
    if command.is_empty() || command.len() > 64 || !strings {
        return Err(Rejection::invalid(
            "launch.command",
            "must be 1 to 64 strings without NUL",
        ));
    }
    if command[0].as_str() == Some("") {
        return Err(Rejection::invalid(
            "launch.command",
            "the program must not be empty",
        ));
    }
    if let Some(env) = fields.get("env") {
        let Some(env) = env.as_object() else {
            return Err(Rejection::invalid(
                "launch.env",
                "must be an object of strings",
            ));
        };
        for (name, value) in env {
            let name_ok = !name.is_empty() && !name.contains(['=', '\0']);
            let value_ok = value.as_str().is_some_and(|value| !value.contains('\0'));
            if !name_ok || !value_ok {
                return Err(Rejection::invalid(
                    "launch.env",
                    format!("{name:?} must be a non-empty name without = or NUL, with a string"),
                ));
            }
        }
    }
    unsigned(
        fields,
        "grace_seconds",
        "launch.grace_seconds",
        0,
        MAX_GRACE_SECONDS,
    )
}

fn http(fields: &Map<String, Value>) -> Result<(), Rejection> {
    let url = fields.get("url").and_then(Value::as_str).ok_or_else(|| {
        Rejection::invalid("launch.url", "is required: the orchestrator's http(s) URL")
    })?;
    // Parsed as the provider's HTTP client parses it (WHATWG URL), so that one accepted here
    // is one it can send to: a bad port or an unclosed IPv6 host used to pass a prefix check,
    // then fail every launch.
    let parsed = url::Url::parse(url).ok().filter(|parsed| {
        matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some_and(|h| !h.is_empty())
    });
    let clean = url.len() <= 2048 && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !clean || parsed.is_none() {
        return Err(Rejection::invalid(
            "launch.url",
            format!("must be an http or https URL with a host, is {url:?}"),
        ));
    }
    if let Some(secret) = fields.get("secret") {
        let decodes = secret
            .as_str()
            .and_then(|secret| secret.strip_prefix("whsec_"))
            .is_some_and(|key| STANDARD.decode(key).is_ok_and(|key| !key.is_empty()));
        if !decodes {
            return Err(Rejection::invalid(
                "launch.secret",
                "must be whsec_ followed by base64",
            ));
        }
    }
    unsigned(fields, "timeout_ms", "launch.timeout_ms", 1, 60_000)?;
    unsigned(fields, "retries", "launch.retries", 0, 10)?;
    unsigned(
        fields,
        "status_interval_seconds",
        "launch.status_interval_seconds",
        0,
        MAX_STATUS_INTERVAL_SECONDS,
    )?;
    unsigned(
        fields,
        "start_timeout_seconds",
        "launch.start_timeout_seconds",
        0,
        MAX_START_TIMEOUT_SECONDS,
    )
}

fn simulated(fields: &Map<String, Value>) -> Result<(), Rejection> {
    if let Some(start) = fields.get("start_seconds") {
        match start.as_f64() {
            Some(start) if (0.0..=MAX_START_SECONDS).contains(&start) => {}
            _ => {
                return Err(Rejection::invalid(
                    "launch.start_seconds",
                    format!("must be a number within [0, {MAX_START_SECONDS}], is {start}"),
                ))
            }
        }
    }
    if let Some(rate) = fields.get("failure_rate") {
        match rate.as_f64() {
            Some(rate) if (0.0..=1.0).contains(&rate) => {}
            _ => {
                return Err(Rejection::invalid(
                    "launch.failure_rate",
                    format!("must be a number within [0, 1], is {rate}"),
                ))
            }
        }
    }
    unsigned(fields, "seed", "launch.seed", 0, u64::MAX)
}

/// An optional integer field within `[low, high]`.
fn unsigned(
    fields: &Map<String, Value>,
    key: &str,
    field: &'static str,
    low: u64,
    high: u64,
) -> Result<(), Rejection> {
    let Some(value) = fields.get(key) else {
        return Ok(());
    };
    // A number whose fraction is zero is an integer (JSON Schema's reading, and the document's).
    let whole = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
    });
    match whole {
        Some(n) if (low..=high).contains(&n) => Ok(()),
        _ => Err(Rejection::invalid(
            field,
            format!("must be an integer within [{low}, {high}], is {value}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(launch: Value) -> &'static str {
        match validate(&launch) {
            Err(Rejection::Invalid { field, .. }) => field,
            other => panic!("{launch} was not refused: {other:?}"),
        }
    }

    #[test]
    fn the_probes_findings_are_each_refused_naming_the_field() {
        let cases = [
            (
                json!({"provider": "simulated", "start_seconds": 1e300}),
                "launch.start_seconds",
            ),
            (
                json!({"provider": "simulated", "failure_rate": 2}),
                "launch.failure_rate",
            ),
            (
                json!({"provider": "simulated", "failure_rate": -0.1}),
                "launch.failure_rate",
            ),
            (json!({"provider": "simulated", "seed": -1}), "launch.seed"),
            (json!({"provider": "simulated", "colour": "red"}), "launch"),
            (
                json!({"provider": "http", "url": "not a url"}),
                "launch.url",
            ),
            (
                json!({"provider": "http", "url": "file:///etc/passwd"}),
                "launch.url",
            ),
            (json!({"provider": "http", "url": "http://"}), "launch.url"),
            (json!({"provider": "http"}), "launch.url"),
            // What the HTTP client could never send to (each used to pass, then fail every
            // launch "unreachable").
            (
                json!({"provider": "http", "url": "http://[::1"}),
                "launch.url",
            ),
            (
                json!({"provider": "http", "url": "http://127.0.0.1:99999/"}),
                "launch.url",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "secret": "hunter2"}),
                "launch.secret",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "timeout_ms": 0}),
                "launch.timeout_ms",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "retries": 11}),
                "launch.retries",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "status_interval_seconds": 86401}),
                "launch.status_interval_seconds",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "status_interval_seconds": -1}),
                "launch.status_interval_seconds",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "start_timeout_seconds": 86401}),
                "launch.start_timeout_seconds",
            ),
            (
                json!({"provider": "http", "url": "https://o.example", "start_timeout_seconds": "600"}),
                "launch.start_timeout_seconds",
            ),
            (json!({"provider": "process"}), "launch.command"),
            (
                json!({"provider": "process", "command": []}),
                "launch.command",
            ),
            (
                json!({"provider": "process", "command": [1]}),
                "launch.command",
            ),
            (
                json!({"provider": "process", "command": ["sleep"], "env": {"A=B": "c"}}),
                "launch.env",
            ),
            (
                json!({"provider": "process", "command": ["sleep"], "grace_seconds": 3601}),
                "launch.grace_seconds",
            ),
            (json!({"provider": "mainframe"}), "launch.provider"),
            (json!([]), "launch"),
        ];
        for (launch, field) in cases {
            assert_eq!(refused_field(launch.clone()), field, "{launch}");
        }
    }

    #[test]
    fn only_an_http_server_times_out_starting_after_an_hour_unless_told() {
        let http = |extra: Value| {
            let mut launch = json!({"provider": "http", "url": "https://o.example"});
            launch
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            start_timeout(&launch)
        };
        assert_eq!(http(json!({})), Some(3_600));
        assert_eq!(http(json!({"start_timeout_seconds": 45})), Some(45));
        assert_eq!(http(json!({"start_timeout_seconds": 0})), None);
        assert_eq!(start_timeout(&json!({"provider": "simulated"})), None);
        let process = json!({"provider": "process", "command": ["sleep", "9"]});
        assert_eq!(start_timeout(&process), None);
    }

    #[test]
    fn each_providers_full_configuration_is_accepted() {
        let good = [
            json!({"provider": "simulated"}),
            json!({"provider": "simulated", "start_seconds": 86400, "failure_rate": 1, "seed": 7}),
            json!({"provider": "http", "url": "https://orchestrator.example:8443/v1/servers",
                   "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "timeout_ms": 5000, "retries": 2,
                   "status_interval_seconds": 0, "start_timeout_seconds": 0}),
            json!({"provider": "http", "url": "http://127.0.0.1:9000"}),
            // Schemes are case-insensitive; an IPv6 host.
            json!({"provider": "http", "url": "HTTPS://orchestrator.example/servers"}),
            json!({"provider": "http", "url": "http://[::1]:9000/"}),
            json!({"provider": "process", "command": ["sleep", "1000"], "env": {"ROLE": "web"},
                   "grace_seconds": 5}),
        ];
        for launch in good {
            assert!(validate(&launch).is_ok(), "{launch}");
        }
    }
}
