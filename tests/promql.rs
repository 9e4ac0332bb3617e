//! Prometheus as a source (SPEC 5.2): an alarm and a target-tracking policy with a `query` read
//! each period's datapoint from a real Prometheus (Debian's, started here on loopback, scraping
//! an exporter written here); an empty result is a missing period with its reason shown; and a
//! query without the operator's `--prometheus-url` is refused.

mod common;

use std::time::Duration;

use common::external;
use common::{assert_error, Server};
use serde_json::json;

#[test]
fn a_query_needs_the_operators_prometheus_and_replaces_the_metric() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let alarm = |extra: serde_json::Value| {
        let mut body = json!({"name": "q", "group_id": group, "statistic": "avg",
            "period_seconds": 60, "evaluation_periods": 1, "comparison": "gt", "threshold": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        server.call("POST", "/v1/alarms", &token, Some(body))
    };
    for extra in [
        json!({"query": "up"}),
        json!({"query": "up", "metric": "cpu"}),
    ] {
        let answer = alarm(extra);
        assert_error(&answer, 400, "invalid_input");
        assert!(answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid query:"));
    }
    let answer = alarm(json!({}));
    assert_error(&answer, 400, "invalid_input");
    let policy = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies"),
        &token,
        Some(json!({"name": "t", "policy_type": "target_tracking", "query": "up", "target": 1})),
    );
    assert_error(&policy, 400, "invalid_input");
}

#[test]
fn a_real_prometheus_query_drives_an_alarm_and_a_group_and_an_empty_result_is_missing() {
    if !external::available("prometheus") {
        return;
    }
    let port = external::free_port();
    let server = Server::start_now_with(|s| {
        s.prometheus_url = Some(format!("http://127.0.0.1:{port}"));
    });
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let (status, alarm) = server.call(
        "POST",
        "/v1/alarms",
        &token,
        Some(
            json!({"name": "queue", "group_id": group, "query": "max(queue_depth)",
            "statistic": "avg", "period_seconds": 5, "evaluation_periods": 1, "comparison": "gt",
            "threshold": 100}),
        ),
    );
    assert_eq!(status, 201, "{alarm}");
    assert_eq!(alarm["query"], "max(queue_depth)");
    assert!(alarm.get("metric").is_none(), "{alarm}");
    let alarm = alarm["id"].as_str().unwrap().to_owned();
    server.policy(
        &token,
        &group,
        json!({"name": "queue", "policy_type": "target_tracking", "query": "max(queue_depth)",
            "target": 100, "target_kind": "total", "period_seconds": 5}),
    );
    let exporter = external::exporter("# TYPE queue_depth gauge\nqueue_depth 500\n".into());
    let (mut prometheus, log, _dir) = external::prometheus(exporter, port, "");
    let state = |server: &Server| {
        server
            .call("GET", &format!("/v1/alarms/{alarm}"), &token, None)
            .1
    };
    // Prometheus scrapes in real time; the service's clock follows it, period by period.
    external::wait_for("the alarm and the group", Duration::from_secs(90), || {
        prometheus.check_alive(&log);
        server.catch_up_with_real_time();
        server.tick();
        state(&server)["state"] == "alarm" && server.capacity(&token, &group) == 5
    });
    let reason = state(&server)["state_reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("500"), "{reason}");

    // A query with an empty result: a missing period, with its reason, never 0.
    let (status, _) = server.call(
        "PATCH",
        &format!("/v1/alarms/{alarm}"),
        &token,
        Some(json!({"query": "max(queue_depth{job=\"nothing\"})"})),
    );
    assert_eq!(status, 200);
    external::wait_for("insufficient data", Duration::from_secs(60), || {
        server.catch_up_with_real_time();
        server.tick();
        state(&server)["state"] == "insufficient_data"
    });
    let reason = state(&server)["state_reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("query: empty result"), "{reason}");
    assert_eq!(server.capacity(&token, &group), 5);
}
