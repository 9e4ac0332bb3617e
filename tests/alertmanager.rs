//! Alertmanager receivers (SPEC 5.3) over HTTP: each alert's episode executes its firing policy
//! once and its resolved policy once, whatever the repeats, across a restart; bad notifications
//! get their status; and a real Alertmanager (Debian's, started here on loopback) drives it.

mod common;

use std::time::Duration;

use common::external::{self, Running};
use common::{assert_error, Server};
use serde_json::{json, Value};

struct Setup {
    token: String,
    group: String,
    receiver: String,
    url: String,
    secret: String,
}

/// A group (1..10 at 2), +1 and -1 policies, and a receiver firing +1 and resolving -1.
fn setup(server: &Server) -> Setup {
    let token = server.tenant("acme");
    let group = server.group(&token, 1, 10, 2, 0);
    let up = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let down = server.policy(
        &token,
        &group,
        json!({"name": "down", "adjustment_type": "change", "adjustment": -1}),
    );
    let (status, receiver) = server.call(
        "POST",
        &format!("/v1/groups/{group}/receivers"),
        &token,
        Some(json!({"name": "am", "firing": up, "resolved": down})),
    );
    assert_eq!(status, 201, "{receiver}");
    Setup {
        token,
        group,
        receiver: receiver["id"].as_str().unwrap().to_owned(),
        url: receiver["url"].as_str().unwrap().to_owned(),
        secret: receiver["token"].as_str().unwrap().to_owned(),
    }
}

fn notification(status: &str, fingerprint: &str, starts_at: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"QueueHigh\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "flotilla", "groupLabels": {"alertname": "QueueHigh"},
        "commonLabels": {"alertname": "QueueHigh"}, "commonAnnotations": {},
        "externalURL": "http://am", "alerts": [{
            "status": status, "labels": {"alertname": "QueueHigh"}, "annotations": {},
            "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fingerprint,
        }],
    })
}

fn notify(server: &Server, s: &Setup, token: Option<&str>, body: Value) -> (u16, Value) {
    let path = format!("/v1/alertmanager/{}", s.receiver);
    let request = server.request("POST", &path, token).json(&body);
    common::read(request.send().unwrap())
}

#[test]
fn an_episode_fires_once_and_resolves_once_whatever_the_repeats_and_restarts() {
    let server = Server::start();
    let s = setup(&server);
    let firing = notification("firing", "1a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    let (status, handled) = notify(&server, &s, Some(&s.secret), firing.clone());
    assert_eq!(
        (status, handled["executed"].as_u64()),
        (200, Some(1)),
        "{handled}"
    );
    assert_eq!(server.capacity(&s.token, &s.group), 3);
    // repeat_interval resends, or the other member of an HA pair: nothing more.
    for _ in 0..3 {
        let (status, handled) = notify(&server, &s, Some(&s.secret), firing.clone());
        assert_eq!((status, handled["executed"].as_u64()), (200, Some(0)));
    }
    let server = server.restart();
    let (_, handled) = notify(&server, &s, Some(&s.secret), firing.clone());
    assert_eq!(handled["executed"], 0, "episodes are journaled");
    assert_eq!(server.capacity(&s.token, &s.group), 3);

    let resolved = notification("resolved", "1a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    let (_, handled) = notify(&server, &s, Some(&s.secret), resolved.clone());
    assert_eq!(handled["executed"], 1);
    let (_, handled) = notify(&server, &s, Some(&s.secret), resolved);
    assert_eq!(handled["executed"], 0);
    assert_eq!(server.capacity(&s.token, &s.group), 2);
    // A resolution never seen firing executes nothing; the same alert firing again later is a
    // new episode.
    let unseen = notification("resolved", "ffffffffffffffff", "2026-11-25T00:00:00Z");
    assert_eq!(
        notify(&server, &s, Some(&s.secret), unseen).1["executed"],
        0
    );
    let mut again = notification("firing", "1a2b3c4d5e6f7a8b", "2026-11-25T01:00:00Z");
    // An alertname is shown in the order it is read: a bidirectional override stands as U+FFFD.
    again["alerts"][0]["labels"]["alertname"] = json!("Queue\u{202E}High");
    assert_eq!(notify(&server, &s, Some(&s.secret), again).1["executed"], 1);

    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{}/activity", s.group),
        &s.token,
        None,
    );
    let cause = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "policy_executed")
        .map(|item| item["cause"].clone())
        .unwrap();
    assert_eq!(
        cause,
        json!({"type": "alertmanager", "receiver_id": s.receiver,
            "alertname": "Queue\u{FFFD}High", "fingerprint": "1a2b3c4d5e6f7a8b"})
    );
}

#[test]
fn a_notification_up_to_2_mib_is_read_whole_and_a_larger_one_is_a_json_413() {
    let server = Server::start();
    let s = setup(&server);
    // Alertmanager does not send a 4xx again: a large notification refused is lost. Larger
    // than actix's 256 KiB default for a raw body, well under SPEC 3's 2 MiB.
    let mut large = notification("firing", "1a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    large["alerts"][0]["annotations"]["runbook"] = json!("x".repeat(600_000));
    let (status, handled) = notify(&server, &s, Some(&s.secret), large);
    assert_eq!(
        (status, handled["executed"].as_u64()),
        (200, Some(1)),
        "{handled}"
    );
    let mut huge = notification("firing", "2a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    huge["alerts"][0]["annotations"]["runbook"] = json!("x".repeat(3 << 20));
    assert_error(
        &notify(&server, &s, Some(&s.secret), huge),
        413,
        "too_large",
    );
    assert_eq!(server.capacity(&s.token, &s.group), 3);
    // The same holds for the routes whose JSON body is optional.
    let padded = format!(
        "{{\"scale_in\": true, \"scale_out\": false}}{}",
        " ".repeat(400_000)
    );
    let pause = |body: String| {
        let path = format!("/v1/groups/{}/pause", s.group);
        let request = server.request("POST", &path, Some(&s.token));
        let request = request
            .header("content-type", "application/json")
            .body(body);
        common::read(request.send().unwrap())
    };
    let (status, paused) = pause(padded);
    assert_eq!(status, 200, "{paused}");
    assert_error(&pause(" ".repeat(3 << 20)), 413, "too_large");
}

#[test]
fn a_full_receiver_forgets_a_resolved_episode_before_one_still_firing() {
    let server = Server::start();
    let s = setup(&server);
    let long = notification("firing", "0000000000000001", "2026-11-25T00:00:00Z");
    assert_eq!(
        notify(&server, &s, Some(&s.secret), long.clone()).1["executed"],
        1
    );
    // As many other alerts as a receiver remembers, all firing, in one notification.
    let mut many = notification("firing", "x", "2026-11-25T00:00:00Z");
    let alert = many["alerts"][0].clone();
    let max = flotilla_actors::domain::receiver::MAX_EPISODES;
    many["alerts"] = (1..max)
        .map(|i| {
            let mut alert = alert.clone();
            alert["fingerprint"] = json!(format!("{i:016x}f"));
            alert
        })
        .collect();
    let (status, handled) = notify(&server, &s, Some(&s.secret), many);
    assert_eq!(
        (status, handled["executed"].as_u64()),
        (200, Some(max as u64 - 1)),
        "{handled}"
    );
    // One of them resolves; a new alert then takes its place, not the long-running one's,
    // whose repeat still executes nothing (it used to be forgotten first, and executed again).
    let mut resolved = notification("resolved", "x", "2026-11-25T00:00:00Z");
    resolved["alerts"][0]["fingerprint"] = json!(format!("{:016x}f", 7));
    assert_eq!(
        notify(&server, &s, Some(&s.secret), resolved).1["executed"],
        1
    );
    let new = notification("firing", "00000000000000ff", "2026-11-25T00:00:00Z");
    assert_eq!(notify(&server, &s, Some(&s.secret), new).1["executed"], 1);
    assert_eq!(
        notify(&server, &s, Some(&s.secret), long.clone()).1["executed"],
        0
    );
    // With none resolved, the oldest goes: a receiver whose alerts never resolve keeps taking
    // new ones.
    let newer = notification("firing", "00000000000000fe", "2026-11-25T00:00:00Z");
    assert_eq!(notify(&server, &s, Some(&s.secret), newer).1["executed"], 1);
    assert_eq!(notify(&server, &s, Some(&s.secret), long).1["executed"], 1);
}

#[test]
fn a_policy_a_receiver_names_is_not_deleted_until_the_receiver_is() {
    let server = Server::start();
    let s = setup(&server);
    let (_, receiver) = server.call(
        "GET",
        &format!("/v1/groups/{}/receivers/{}", s.group, s.receiver),
        &s.token,
        None,
    );
    // The firing policy, and the resolved one: 409 naming the receiver, force or not (a
    // deleted policy used to leave the receiver executing nothing at every notification).
    for field in ["firing", "resolved"] {
        let policy = receiver[field].as_str().unwrap();
        let path = format!("/v1/groups/{}/policies/{policy}", s.group);
        for query in ["", "?force=true"] {
            let answer = server.call("DELETE", &format!("{path}{query}"), &s.token, None);
            assert_error(&answer, 409, "conflict");
            let message = answer.1["error"]["message"].as_str().unwrap();
            assert!(message.contains(&s.receiver), "{message}");
        }
    }
    let firing = notification("firing", "1a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    assert_eq!(
        notify(&server, &s, Some(&s.secret), firing).1["executed"],
        1
    );
    // Once the receiver is deleted, so may its policies be.
    let path = format!("/v1/groups/{}/receivers/{}", s.group, s.receiver);
    assert_eq!(server.call("DELETE", &path, &s.token, None).0, 204);
    let policy = receiver["firing"].as_str().unwrap();
    let path = format!("/v1/groups/{}/policies/{policy}", s.group);
    assert_eq!(server.call("DELETE", &path, &s.token, None).0, 204);
}

#[test]
fn bad_notifications_get_their_status_and_execute_nothing() {
    let server = Server::start();
    let s = setup(&server);
    let firing = notification("firing", "1a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    assert_error(
        &notify(&server, &s, None, firing.clone()),
        401,
        "unauthorized",
    );
    assert_error(
        &notify(&server, &s, Some("flo_am_wrong"), firing.clone()),
        401,
        "unauthorized",
    );
    // Another tenant's receiver token is not this receiver's.
    let other = setup(&server);
    assert_error(
        &notify(&server, &s, Some(&other.secret), firing.clone()),
        401,
        "unauthorized",
    );
    // The tenant's own token neither.
    assert_error(
        &notify(&server, &s, Some(&s.token), firing.clone()),
        401,
        "unauthorized",
    );
    let mut v3 = firing.clone();
    v3["version"] = json!("3");
    assert_error(
        &notify(&server, &s, Some(&s.secret), v3),
        400,
        "unsupported_version",
    );
    // A fingerprint is a key kept in the journal and shown: visible ASCII only.
    let mut reordering = firing.clone();
    reordering["alerts"][0]["fingerprint"] = json!("f\u{202E}1");
    assert_error(
        &notify(&server, &s, Some(&s.secret), reordering),
        400,
        "invalid_alert",
    );
    let mut bad_time = firing.clone();
    bad_time["alerts"][0]["startsAt"] = json!("yesterday");
    assert_error(
        &notify(&server, &s, Some(&s.secret), bad_time),
        400,
        "invalid_alert",
    );
    let garbage = server
        .request(
            "POST",
            &format!("/v1/alertmanager/{}", s.receiver),
            Some(&s.secret),
        )
        .header("content-type", "application/json")
        .body("{\"version\": ")
        .send()
        .unwrap();
    assert_error(&common::read(garbage), 400, "invalid_json");
    assert_eq!(
        server.capacity(&s.token, &s.group),
        2,
        "nothing half-applied"
    );
    // Unknown, then deleted: 404. Posts to ids no one created start no actor.
    let resident = server.gauge("flotilla_actors_resident");
    for n in 0..20 {
        let unknown = server
            .request(
                "POST",
                &format!("/v1/alertmanager/rcv_nope{n}"),
                Some(&s.secret),
            )
            .json(&firing)
            .send()
            .unwrap();
        assert_error(&common::read(unknown), 404, "not_found");
    }
    assert_eq!(server.gauge("flotilla_actors_resident"), resident);
    let (status, _) = server.call(
        "DELETE",
        &format!("/v1/groups/{}/receivers/{}", s.group, s.receiver),
        &s.token,
        None,
    );
    assert_eq!(status, 204);
    assert_error(
        &notify(&server, &s, Some(&s.secret), firing),
        404,
        "not_found",
    );
    // A receiver of a deleted group is gone with it.
    let gone = setup(&server);
    let (status, _) = server.call(
        "DELETE",
        &format!("/v1/groups/{}?force=true", gone.group),
        &gone.token,
        None,
    );
    assert_eq!(status, 204);
    let firing = notification("firing", "1a2b3c4d5e6f7a8b", "2026-11-25T00:00:00Z");
    assert_error(
        &notify(&server, &gone, Some(&gone.secret), firing),
        404,
        "not_found",
    );
    // A receiver's policies must be the group's: another group's is a 404.
    let group = server.group(&s.token, 0, 5, 0, 0);
    let (_, policies) = server.call(
        "GET",
        &format!("/v1/groups/{}/policies", s.group),
        &s.token,
        None,
    );
    let theirs = policies["items"][0]["id"].as_str().unwrap();
    let answer = server.call(
        "POST",
        &format!("/v1/groups/{group}/receivers"),
        &s.token,
        Some(json!({"name": "x", "firing": theirs})),
    );
    assert_error(&answer, 404, "not_found");
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[test]
fn a_real_alertmanager_fires_once_and_resolves_once_despite_its_repeats() {
    if !external::available("prometheus-alertmanager") {
        return;
    }
    let server = Server::start();
    let s = setup(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: flotilla\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 2s\n\
             receivers:\n  - name: flotilla\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n        \
             http_config:\n          authorization:\n            credentials: {secret}\n",
            url = s.url,
            secret = s.secret,
        ),
    )
    .unwrap();
    let port = external::free_port();
    let log = dir.path().join("alertmanager.log");
    let mut alertmanager = Running::start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
        &log,
    );
    let am = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    external::wait_for("Alertmanager to be ready", Duration::from_secs(30), || {
        alertmanager.check_alive(&log);
        client
            .get(format!("{am}/-/ready"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    let starts_at = rfc3339_now();
    let alert = |ends: Option<String>| {
        let mut alert = json!({"labels": {"alertname": "QueueHigh", "group": "workers"},
            "startsAt": starts_at});
        if let Some(ends) = ends {
            alert["endsAt"] = json!(ends);
        }
        let posted = client
            .post(format!("{am}/api/v2/alerts"))
            .json(&json!([alert]))
            .send()
            .unwrap();
        assert!(posted.status().is_success(), "{posted:?}");
    };
    alert(None);
    external::wait_for("the firing policy", Duration::from_secs(30), || {
        alertmanager.check_alive(&log);
        server.capacity(&s.token, &s.group) == 3
    });
    // Alertmanager repeats the unchanged group every 2 s; wait for two repeats. A request is
    // counted once its handler has answered, after the capacity changed, so the counter may
    // not be there yet when the capacity already is.
    let route = r#"flotilla_http_requests_total{method="POST",route="/v1/alertmanager/{rid}",status="200"}"#;
    external::wait_for("repeats", Duration::from_secs(30), || {
        server.metrics().contains(route) && server.gauge(route) >= 3
    });
    assert_eq!(
        server.capacity(&s.token, &s.group),
        3,
        "repeats execute nothing"
    );

    // A restart in between: the repeats that reach the new process execute nothing either.
    let server = server.restart_on_the_same_port();
    external::wait_for("repeats after the restart", Duration::from_secs(30), || {
        server.metrics().contains(route) && server.gauge(route) >= 2
    });
    assert_eq!(server.capacity(&s.token, &s.group), 3);

    alert(Some(rfc3339_now()));
    external::wait_for("the resolved policy", Duration::from_secs(30), || {
        alertmanager.check_alive(&log);
        server.capacity(&s.token, &s.group) == 2
    });
}
