//! Prometheus remote write (SPEC 5.1) over HTTP: written bodies built here feed a
//! target-tracking policy, bad bodies get their status, and a real Prometheus, scraping a tiny
//! exporter written here, writes to the service with a tenant's token until the group follows
//! its queue.

mod common;

use std::time::Duration;

use common::external;
use common::{assert_error, Server};
use flotilla::api::remote_write::{Label, RemoteSample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::json;

fn body(series: Vec<TimeSeries>) -> Vec<u8> {
    let request = WriteRequest { timeseries: series };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

fn series(labels: &[(&str, &str)], value: f64, at_ms: i64) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(name, value)| Label {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        samples: vec![RemoteSample {
            value,
            timestamp: at_ms,
        }],
    }
}

/// Posts `body` to `/v1/write` with Prometheus's headers, `headers` in place of any of them.
fn send(
    server: &Server,
    token: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let defaults = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ];
    let mut request = server.request("POST", "/v1/write", Some(token));
    for (name, value) in defaults {
        let value = headers
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(value, |(_, v)| *v);
        request = request.header(name, value);
    }
    common::read(request.body(body).send().unwrap())
}

/// A tenant, a group (0..10 at 1) and a `total` target-tracking policy on `queue_depth`,
/// target 100, over `period` seconds: (token, group).
fn queue_group(server: &Server, period: u32) -> (String, String) {
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    server.policy(
        &token,
        &group,
        json!({"name": "queue", "policy_type": "target_tracking", "metric": "queue_depth",
            "statistic": "max", "target": 100, "target_kind": "total", "period_seconds": period}),
    );
    (token, group)
}

#[test]
fn written_samples_feed_target_tracking_and_the_rest_are_counted() {
    let server = Server::start();
    let (token, group) = queue_group(&server, 60);
    let at = server.now_secs() * 1000;
    let written = body(vec![
        series(
            &[
                ("__name__", "queue_depth"),
                ("flotilla_group", &group),
                ("job", "q"),
            ],
            500.0,
            at,
        ),
        series(
            &[("__name__", "queue_depth"), ("flotilla_group", &group)],
            f64::NAN,
            at,
        ),
        series(&[("__name__", "queue_depth")], 900.0, at),
        series(
            &[
                ("__name__", "queue_depth"),
                ("flotilla_group", "grp_not_mine"),
            ],
            900.0,
            at,
        ),
    ]);
    let (status, answer) = send(&server, &token, written, &[]);
    assert_eq!(status, 204, "{answer}");
    let counted = |outcome: &str| {
        server.gauge(&format!(
            r#"flotilla_remote_write_samples_total{{outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(counted("accepted"), 1);
    assert_eq!(counted("stale"), 1);
    assert_eq!(counted("no_group"), 1);
    assert_eq!(counted("not_writable"), 1);
    server.clock.advance_secs(60);
    server.tick();
    server.tick_until("the queue's capacity", 3, || {
        server.capacity(&token, &group) == 5
    });

    // A group's metrics token writes for its own group, whatever the labels say.
    let (status, created) = server.call(
        "POST",
        &format!("/v1/groups/{group}/metrics-token"),
        &token,
        None,
    );
    assert_eq!(status, 200, "{created}");
    let metrics_token = created["metrics_token"].as_str().unwrap().to_owned();
    let at = server.now_secs() * 1000;
    let written = body(vec![series(
        &[("__name__", "queue_depth"), ("flotilla_group", "grp_other")],
        100.0,
        at,
    )]);
    assert_eq!(send(&server, &metrics_token, written, &[]).0, 204);
    assert_eq!(counted("accepted"), 2);
}

#[test]
fn a_tenant_cannot_feed_a_group_another_tenant_watches() {
    let server = Server::start();
    let (token, group) = queue_group(&server, 60);
    let intruder = server.tenant("mallory");
    let at = server.now_secs() * 1000;
    let sample = |value| {
        body(vec![series(
            &[("__name__", "queue_depth"), ("flotilla_group", &group)],
            value,
            at,
        )])
    };
    assert_eq!(send(&server, &intruder, sample(900.0), &[]).0, 204);
    assert_eq!(send(&server, &token, sample(200.0), &[]).0, 204);
    let counted = |outcome: &str| {
        server.gauge(&format!(
            r#"flotilla_remote_write_samples_total{{outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(counted("not_writable"), 1);
    assert_eq!(counted("accepted"), 1);
    // The policy reads the period's max: 200 (2 servers at 100 each), not the intruder's 900.
    server.clock.advance_secs(60);
    server.tick();
    server.tick_until("the queue's capacity", 3, || {
        server.capacity(&token, &group) != 1
    });
    assert_eq!(server.capacity(&token, &group), 2);
}

#[test]
fn no_tenant_feeds_the_alarms_of_a_deleted_group_even_after_a_restart() {
    let server = Server::start();
    let (token, group) = queue_group(&server, 60);
    let (status, alarm) = server.call(
        "POST",
        "/v1/alarms",
        &token,
        Some(
            json!({"name": "deep", "group_id": group, "metric": "queue_depth",
            "statistic": "max", "period_seconds": 60, "evaluation_periods": 1,
            "comparison": "gt", "threshold": 100}),
        ),
    );
    assert_eq!(status, 201, "{alarm}");
    let (status, _) = server.call(
        "DELETE",
        &format!("/v1/groups/{group}?force=true"),
        &token,
        None,
    );
    assert_eq!(status, 204);
    let write = |server: &Server| {
        let at = server.now_secs() * 1000;
        let written = body(vec![series(
            &[("__name__", "queue_depth"), ("flotilla_group", &group)],
            500.0,
            at,
        )]);
        assert_eq!(send(server, &token, written, &[]).0, 204);
        let metrics = server.metrics();
        let outcomes: Vec<&str> = metrics
            .lines()
            .filter(|line| line.starts_with("flotilla_remote_write_samples_total{"))
            .collect();
        assert_eq!(
            outcomes,
            [r#"flotilla_remote_write_samples_total{outcome="not_writable"} 1"#]
        );
    };
    write(&server);
    // From the checkpoint the alarm comes back, and still no tenant writes its series.
    server.tick();
    let server = server.restart();
    write(&server);
}

#[test]
fn bad_write_requests_get_their_status_and_change_nothing() {
    let server = Server::start();
    let (token, group) = queue_group(&server, 60);
    let at = server.now_secs() * 1000;
    let good = body(vec![series(
        &[("__name__", "queue_depth"), ("flotilla_group", &group)],
        500.0,
        at,
    )]);
    let truncated = good[..good.len() - 3].to_vec();
    assert_error(
        &send(&server, &token, truncated, &[]),
        400,
        "invalid_write_request",
    );
    let wrong_type = snap::raw::Encoder::new()
        .compress_vec(&[0x08, 0x01])
        .unwrap();
    assert_error(
        &send(&server, &token, wrong_type, &[]),
        400,
        "invalid_write_request",
    );
    assert_error(
        &send(
            &server,
            &token,
            good.clone(),
            &[("content-encoding", "gzip")],
        ),
        415,
        "unsupported_media_type",
    );
    assert_error(
        &send(
            &server,
            &token,
            good.clone(),
            &[(
                "content-type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            )],
        ),
        415,
        "unsupported_media_type",
    );
    // A header claiming 100 MB decompressed: refused before decompressing.
    let claim = vec![0x80, 0xc2, 0xd7, 0x2f, 0x00];
    assert_error(&send(&server, &token, claim, &[]), 413, "too_large");
    assert_error(
        &send(&server, "not-a-token", good, &[]),
        401,
        "unauthorized",
    );
    // Metadata only, as Prometheus sends each minute: an empty write.
    let metadata = snap::raw::Encoder::new()
        .compress_vec(&[0x1a, 0x02, 0x08, 0x01])
        .unwrap();
    assert_eq!(send(&server, &token, metadata, &[]).0, 204);
    // None of the refused bodies wrote a sample.
    let accepted = server.metrics();
    assert!(!accepted.contains(r#"outcome="accepted""#), "{accepted}");
    server.clock.advance_secs(60);
    server.tick();
    assert_eq!(server.capacity(&token, &group), 1);
}

#[test]
fn a_real_prometheus_remote_writes_a_queue_that_the_group_follows() {
    if !external::available("prometheus") {
        return;
    }
    let server = Server::start_now();
    let (token, group) = queue_group(&server, 5);
    let exporter = external::exporter(format!(
        "# TYPE queue_depth gauge\nqueue_depth{{flotilla_group=\"{group}\"}} 500\n"
    ));
    let remote_write = format!(
        "remote_write:\n  - url: {url}\n    authorization:\n      credentials: {token}\n    \
         queue_config:\n      batch_send_deadline: 1s\n      max_samples_per_send: 500\n",
        url = server.url("/v1/write"),
    );
    let (mut prometheus, log, _dir) =
        external::prometheus(exporter, external::free_port(), &remote_write);
    // Prometheus scrapes and writes on its own schedule, in real time: follow it with the
    // service's clock, and tick, until the group follows the queue (500 / 100 = 5).
    external::wait_for(
        "the group to follow the queue",
        Duration::from_secs(90),
        || {
            prometheus.check_alive(&log);
            server.catch_up_with_real_time();
            server.tick();
            server.capacity(&token, &group) == 5
        },
    );
    let accepted = server.gauge(r#"flotilla_remote_write_samples_total{outcome="accepted"}"#);
    assert!(accepted >= 1, "{accepted}");
}
