//! `/metrics` and `/openapi.json`, against the real service on port 0 with a temporary data
//! directory. The harness is kept here, small, apart from `tests/common`'s `Server`; it starts
//! the service with the same start-up.

#[path = "common/serve.rs"]
mod serve;

use std::sync::Arc;
use std::time::Duration;

use flotilla::settings::Settings;
use flotilla::signature;
use flotilla::ticks::{ManualTicks, Ticks};
use flotilla_actors::clock::{ManualClock, Timestamp};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

/// 2026-11-25T00:00:00Z.
const START_SECS: i64 = 1_795_564_800;

struct Service {
    base: String,
    operator_token: String,
    http: Client,
    _running: serve::Running,
    _dir: tempfile::TempDir,
}

impl Service {
    /// The service (manual clock, manual ticks: no loop moves the journal under a test), ready.
    fn start() -> Service {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        let clock = ManualClock::new(Timestamp::from_secs(START_SECS));
        let ticks = Ticks::Manual(ManualTicks::new());
        let running = serve::Running::start(settings, Arc::new(clock), ticks);
        running.wait_ready(Duration::from_secs(30));
        Service {
            base: format!("http://{}", running.addr),
            operator_token: running.operator_token.clone(),
            http: Client::new(),
            _running: running,
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap()
    }

    fn post(&self, token: &str, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().unwrap()
    }

    /// A tenant's token, and a webhook's id and secret for a `change +1` policy of a 0..10 group.
    fn webhook(&self) -> (String, String, String) {
        let tenant = self.post(&self.operator_token, "/v1/tenants", json!({"name": "acme"}));
        let token = tenant["token"].as_str().unwrap().to_owned();
        let group = self.post(
            &token,
            "/v1/groups",
            json!({"name": "web", "min_size": 0, "max_size": 10,
                   "launch": {"provider": "simulated"}}),
        );
        let gid = group["id"].as_str().unwrap();
        let policy = self.post(
            &token,
            &format!("/v1/groups/{gid}/policies"),
            json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
        );
        let pid = policy["id"].as_str().unwrap();
        let webhook = self.post(
            &token,
            &format!("/v1/groups/{gid}/policies/{pid}/webhooks"),
            json!({"name": "alarm"}),
        );
        (
            token,
            webhook["id"].as_str().unwrap().to_owned(),
            webhook["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Calls webhook `id` signed with `key`.
    fn call_hook(&self, id: &str, key: &[u8], nonce: &str) -> Response {
        let body = br#"{"reason":"test"}"#;
        self.http
            .post(format!("{}/v1/hooks/{id}", self.base))
            .header("content-type", "application/json")
            .header("webhook-id", nonce)
            .header("webhook-timestamp", START_SECS.to_string())
            .header(
                "webhook-signature",
                signature::sign(key, nonce, START_SECS, body),
            )
            .body(body.to_vec())
            .send()
            .unwrap()
    }
}

/// One sample line of the exposition: `name{labels} value`, checked for form.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the Prometheus text format (0.0.4), failing on any malformed line.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(["HELP", "TYPE"].contains(&kind), "bad comment: {line}");
            if kind == "TYPE" {
                let kind = comment.rsplit(' ').next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type: {line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let labels = inner
                    .split(',')
                    .map(|pair| {
                        let (key, value) = pair.split_once('=').unwrap();
                        let value = value
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label: {line}"));
                        (key.to_owned(), value.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

#[test]
fn metrics_count_webhook_outcomes_rejections_and_latency_by_route_pattern() {
    let service = Service::start();
    let (_, webhook, secret) = service.webhook();
    let key = signature::key_of(&secret).unwrap();

    let forged = service.call_hook(&webhook, &[7u8; 32], "nonce-1");
    assert_eq!(forged.status(), 401);
    let good = service.call_hook(&webhook, &key, "nonce-2");
    assert_eq!(good.status(), 202);
    let outcome: Value = good.json().unwrap();
    assert_eq!(
        (&outcome["outcome"], &outcome["from"], &outcome["to"]),
        (&json!("executed"), &json!(0), &json!(1)),
        "{outcome}"
    );
    assert_eq!(outcome["desired_capacity"], 1);

    let response = service.get("/metrics");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().unwrap();
    let samples = parse_exposition(&text);

    assert!(
        text.contains("flotilla_webhooks_total{outcome=\"invalid_signature\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_webhooks_total{outcome=\"executed\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        value_of(
            &samples,
            "flotilla_rejections_total",
            &[("code", "invalid_signature")]
        ),
        Some(1.0)
    );
    let hooks = [("method", "POST"), ("route", "/v1/hooks/{wid}")];
    assert_eq!(
        value_of(
            &samples,
            "flotilla_http_request_duration_seconds_count",
            &hooks
        ),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flotilla_http_request_duration_seconds_bucket",
            &[hooks[0], hooks[1], ("le", "+Inf")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flotilla_http_requests_total",
            &[hooks[0], hooks[1], ("status", "202")]
        ),
        Some(1.0)
    );
    assert!(
        !text.contains(&webhook),
        "a raw path (with its id) leaked into a label"
    );
    // tenant, group, policy, webhook, the nonce and the execution: real appends.
    let appends = value_of(&samples, "flotilla_journal_appends_total", &[]).unwrap();
    assert!(appends >= 5.0, "{appends}");
    assert_eq!(
        value_of(&samples, "flotilla_objects", &[("kind", "webhooks")]),
        Some(1.0)
    );
    assert!(value_of(&samples, "flotilla_actors_resident", &[]).unwrap() >= 1.0);
    // Events by type, as the projector saw them appended: one accepted call, one execution,
    // nothing of the forged one.
    let events = |kind| value_of(&samples, "flotilla_journal_events_total", &[("type", kind)]);
    assert_eq!(events("nonce_accepted"), Some(1.0));
    assert_eq!(events("policy_executed"), Some(1.0));
    assert!(
        events("created").unwrap() >= 4.0,
        "tenant, group, policy, webhook"
    );
}

#[test]
fn metric_labels_come_from_closed_sets_whatever_methods_and_paths_are_sent() {
    let service = Service::start();
    for n in 0..30 {
        let method = reqwest::Method::from_bytes(format!("ZZMETH{n}").as_bytes()).unwrap();
        let url = format!("{}/v1/nowhere/{n}", service.base);
        let _ = service.http.request(method, url).send().unwrap();
    }
    let text = service.get("/metrics").text().unwrap();
    assert!(!text.contains("ZZMETH"), "a method name became a label");
    assert!(!text.contains("nowhere"), "a raw path became a label");
    let samples = parse_exposition(&text);
    let other = [("method", "other"), ("route", "unmatched")];
    let counted = value_of(
        &samples,
        "flotilla_http_request_duration_seconds_count",
        &other,
    );
    assert_eq!(counted, Some(30.0));
    // However many methods were tried, the unmatched route has a handful of series.
    let series = samples
        .iter()
        .filter(|s| {
            s.labels
                .iter()
                .any(|(k, v)| k == "route" && v == "unmatched")
        })
        .count();
    assert!(series < 40, "{series} series for unmatched requests");
}

#[test]
fn metrics_pass_promtool_when_it_is_installed() {
    let Ok(version) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        // CI sets FLOTILLA_REQUIRE_EXTERNAL=1 (and installs prometheus): there a missing
        // promtool fails rather than skips silently.
        let required = std::env::var("FLOTILLA_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "promtool is not installed, and FLOTILLA_REQUIRE_EXTERNAL=1"
        );
        eprintln!("promtool is not installed; skipped");
        return;
    };
    assert!(version.status.success());
    let service = Service::start();
    let _ = service.get("/v1/nowhere");
    let text = service.get("/metrics").text().unwrap();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    // promtool exits 1 for lint findings too; only a parse error ("error while linting") fails.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("error while linting"), "{stderr}\n{text}");
}

/// Every route `api::routes` serves, as SPEC section 3 lists them (plus the webhooks' list and
/// show, an extension), with its method.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/tenants"),
    ("post", "/v1/tenants/{id}/token"),
    ("post", "/v1/groups/{id}/metrics-token"),
    ("post", "/v1/groups"),
    ("get", "/v1/groups"),
    ("get", "/v1/groups/{id}"),
    ("patch", "/v1/groups/{id}"),
    ("delete", "/v1/groups/{id}"),
    ("post", "/v1/groups/{id}/pause"),
    ("post", "/v1/groups/{id}/resume"),
    ("get", "/v1/groups/{id}/servers"),
    ("get", "/v1/groups/{id}/activity"),
    ("post", "/v1/groups/{id}/policies"),
    ("get", "/v1/groups/{id}/policies"),
    ("get", "/v1/groups/{id}/policies/{pid}"),
    ("patch", "/v1/groups/{id}/policies/{pid}"),
    ("delete", "/v1/groups/{id}/policies/{pid}"),
    ("post", "/v1/groups/{id}/policies/{pid}/execute"),
    ("post", "/v1/groups/{id}/policies/{pid}/webhooks"),
    ("get", "/v1/groups/{id}/policies/{pid}/webhooks"),
    ("get", "/v1/groups/{id}/policies/{pid}/webhooks/{wid}"),
    (
        "post",
        "/v1/groups/{id}/policies/{pid}/webhooks/{wid}/rotate",
    ),
    ("delete", "/v1/groups/{id}/policies/{pid}/webhooks/{wid}"),
    ("post", "/v1/groups/{id}/schedules"),
    ("get", "/v1/groups/{id}/schedules"),
    ("get", "/v1/groups/{id}/schedules/{sid}"),
    ("patch", "/v1/groups/{id}/schedules/{sid}"),
    ("delete", "/v1/groups/{id}/schedules/{sid}"),
    ("post", "/v1/write"),
    ("post", "/v1/groups/{id}/receivers"),
    ("get", "/v1/groups/{id}/receivers"),
    ("get", "/v1/groups/{id}/receivers/{rid}"),
    ("delete", "/v1/groups/{id}/receivers/{rid}"),
    ("post", "/v1/alertmanager/{rid}"),
    ("post", "/v1/alarms"),
    ("get", "/v1/alarms"),
    ("get", "/v1/alarms/{aid}"),
    ("patch", "/v1/alarms/{aid}"),
    ("delete", "/v1/alarms/{aid}"),
    ("post", "/v1/hooks/{wid}"),
    ("post", "/v1/metrics"),
    ("get", "/v1/journal"),
];

/// Routes of SPEC section 3 the service does not serve yet. Each must answer the catch-all
/// `route not found`: once one is served, this test fails until it moves to [`ROUTES`] and is
/// annotated.
const PENDING: &[(&str, &str)] = &[];

impl Service {
    /// The answer to `method path` (ids replaced by `x`), without credentials or body.
    fn probe(&self, method: &str, path: &str) -> Value {
        let url = format!("{}{}", self.base, path)
            .replace("{id}", "x")
            .replace("{pid}", "x")
            .replace("{wid}", "x")
            .replace("{aid}", "x");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = self.http.request(method, url).send().unwrap();
        response.json().unwrap_or(Value::Null)
    }
}

#[test]
fn openapi_documents_every_served_route_with_its_method() {
    let service = Service::start();
    let response = service.get("/openapi.json");
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().unwrap();
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");

    let route_not_found = json!({"error": {"code": "not_found", "message": "route not found"}});
    for &(method, path) in ROUTES {
        let operation = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert_ne!(
            service.probe(method, path),
            route_not_found,
            "{method} {path} is documented but not served"
        );
        // Every documented error names the error body; every /v1 route but the hooks needs a token.
        for (status, answer) in operation["responses"].as_object().unwrap() {
            if status.starts_with('4') || (status.starts_with('5') && path.starts_with("/v1")) {
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        let secured = operation["security"] == json!([{"bearer": []}]);
        let public = !path.starts_with("/v1") || path.starts_with("/v1/hooks/");
        assert_eq!(secured, !public, "{method} {path}: security");
        if path.contains("{id}") {
            let params = operation["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "id" && p["in"] == "path"),
                "{method} {path}: {params:?}"
            );
        }
    }
    for &(method, path) in PENDING {
        assert_eq!(
            service.probe(method, path),
            route_not_found,
            "{method} {path} is served now: move it to ROUTES and annotate it"
        );
    }

    let documented: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "operations documented but not expected: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn a_served_path_with_another_method_is_405_with_allow_naming_its_documented_methods() {
    let service = Service::start();
    let mut paths: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for &(method, path) in ROUTES {
        paths.entry(path).or_default().push(method.to_uppercase());
    }
    for (path, methods) in paths {
        let other = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .find(|m| !methods.iter().any(|known| known == m))
            .unwrap();
        let url = format!("{}{}", service.base, path)
            .replace("{id}", "x")
            .replace("{pid}", "x")
            .replace("{wid}", "x")
            .replace("{aid}", "x");
        let method = reqwest::Method::from_bytes(other.as_bytes()).unwrap();
        let response = service.http.request(method, url).send().unwrap();
        assert_eq!(response.status(), 405, "{other} {path}");
        let mut allow: Vec<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        allow.sort();
        let mut expected = methods.clone();
        expected.sort();
        assert_eq!(allow, expected, "{path}");
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{path}");
    }
    // A path that is not served at all is still 404.
    let response = service.get("/v1/nowhere");
    assert_eq!(response.status(), 404);
}
