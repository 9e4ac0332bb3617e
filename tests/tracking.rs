//! Target tracking over HTTP (SPEC 2.1): samples pushed to the real server, the service's manual
//! clock moved a period at a time, and the group following its target, with every decision in
//! its activity.

mod common;

use common::{assert_error, Server};
use serde_json::{json, Value};

struct Tracked {
    token: String,
    metrics_token: String,
    group: String,
    policy: String,
}

/// A group (`min`..10 at `desired`) and a target-tracking policy with `policy`'s fields.
fn setup(server: &Server, min: u32, desired: u32, policy: Value) -> Tracked {
    let token = server.tenant("acme");
    let (status, group) = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(json!({"name": "workers", "min_size": min, "max_size": 10,
            "desired_capacity": desired, "launch": {"provider": "simulated"}})),
    );
    assert_eq!(status, 201, "{group}");
    let mut body = json!({"name": "follow", "policy_type": "target_tracking"});
    for (k, v) in policy.as_object().unwrap() {
        body[k] = v.clone();
    }
    let group_id = group["id"].as_str().unwrap().to_owned();
    let policy = server.policy(&token, &group_id, body);
    Tracked {
        token,
        metrics_token: group["metrics_token"].as_str().unwrap().to_owned(),
        group: group_id,
        policy,
    }
}

/// Posts `value` of `metric` now (when it is Some), then moves the clock a minute on and ticks.
fn minute(server: &Server, t: &Tracked, metric: &str, value: Option<f64>) {
    if let Some(value) = value {
        let sample = json!({"metric": metric, "value": value,
            "timestamp": server.now_secs() as f64, "server": "srv-1"});
        let (status, body) = server.call(
            "POST",
            "/v1/metrics",
            &t.metrics_token,
            Some(json!({"samples": [sample]})),
        );
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["accepted"], 1, "{body}");
    }
    server.clock.advance_secs(60);
    server.tick();
}

/// The group's target-tracking decisions, newest first.
fn decisions(server: &Server, t: &Tracked) -> Vec<Value> {
    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{}/activity?limit=1000", t.group),
        &t.token,
        None,
    );
    activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["cause"]["type"] == "target_tracking")
        .cloned()
        .collect()
}

#[test]
fn cpu_averaging_twice_the_target_doubles_the_group_and_the_activity_says_why() {
    let server = Server::start();
    let t = setup(
        &server,
        1,
        2,
        json!({"metric": "cpu", "target": 0.5, "period_seconds": 60}),
    );
    let (status, policy) = server.call(
        "GET",
        &format!("/v1/groups/{}/policies/{}", t.group, t.policy),
        &t.token,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(policy["policy_type"], "target_tracking");
    assert_eq!(policy["target_kind"], "average");
    assert_eq!(policy["scale_in_stabilization_seconds"], 300);
    assert!(policy.get("adjustment").is_none(), "{policy}");

    minute(&server, &t, "cpu", Some(0.9));
    server.tick_until("the scale-out", 3, || {
        server.capacity(&t.token, &t.group) == 4
    });
    let decided = &decisions(&server, &t)[0];
    assert_eq!(decided["outcome"], "executed", "{decided}");
    assert_eq!(
        (decided["from"].as_u64(), decided["to"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(decided["policy_id"], t.policy.as_str());
    let part = &decided["tracking"][0];
    assert_eq!(part["datapoint"], 0.9, "{decided}");
    assert_eq!(
        part["recommendation"],
        json!({"because": "formula", "capacity": 4})
    );
    assert_eq!(part["proposal"], 4);
}

#[test]
fn a_queue_empties_the_group_to_zero_and_work_brings_it_back() {
    let server = Server::start();
    let t = setup(
        &server,
        0,
        1,
        json!({"metric": "queue_depth", "statistic": "max", "target": 100, "target_kind": "total",
            "scale_in_stabilization_seconds": 0}),
    );
    minute(&server, &t, "queue_depth", Some(0.0));
    server.tick_until("the scale to zero", 3, || {
        server.capacity(&t.token, &t.group) == 0
    });
    // At zero with nothing queued: not activated, and nothing more is recorded.
    let before = decisions(&server, &t).len();
    minute(&server, &t, "queue_depth", Some(0.0));
    minute(&server, &t, "queue_depth", Some(0.0));
    let after = decisions(&server, &t);
    assert_eq!(
        after[0]["tracking"][0]["recommendation"]["because"],
        "not_activated"
    );
    assert_eq!(
        after.len(),
        before + 1,
        "one record for the change of recommendation"
    );

    minute(&server, &t, "queue_depth", Some(250.0));
    server.tick_until("the scale from zero", 3, || {
        server.capacity(&t.token, &t.group) == 3
    });
}

#[test]
fn scale_in_waits_out_the_stabilization_window_and_idle_periods_record_nothing() {
    let server = Server::start();
    let t = setup(
        &server,
        1,
        4,
        json!({"metric": "cpu", "target": 0.5, "scale_in_stabilization_seconds": 180}),
    );
    // 0.5 on 4: within the tolerance, the recommendation is 4.
    minute(&server, &t, "cpu", Some(0.5));
    // 0.2 on 4: the recommendation is 2, but 4 is in the window for 3 minutes.
    minute(&server, &t, "cpu", Some(0.2));
    let held = &decisions(&server, &t)[0];
    assert_eq!(held["outcome"], "no_change", "{held}");
    assert_eq!(held["tracking"][0]["recommendation"]["capacity"], 2);
    assert_eq!(held["tracking"][0]["proposal"], 4);
    let recorded = decisions(&server, &t).len();
    minute(&server, &t, "cpu", Some(0.2));
    minute(&server, &t, "cpu", Some(0.2));
    assert_eq!(
        server.capacity(&t.token, &t.group),
        4,
        "held within the window"
    );
    assert_eq!(
        decisions(&server, &t).len(),
        recorded,
        "unchanged periods record nothing"
    );
    minute(&server, &t, "cpu", Some(0.2));
    server.tick_until("the scale-in", 3, || {
        server.capacity(&t.token, &t.group) == 2
    });
    assert_eq!(decisions(&server, &t)[0]["outcome"], "executed");
}

#[test]
fn missing_periods_hold_then_fall_back() {
    let server = Server::start();
    let t = setup(
        &server,
        1,
        3,
        json!({"metric": "cpu", "target": 0.5, "missing_data": "fallback",
            "fallback_capacity": 5, "fallback_after_periods": 3}),
    );
    minute(&server, &t, "cpu", Some(0.5));
    minute(&server, &t, "cpu", None);
    minute(&server, &t, "cpu", None);
    assert_eq!(
        server.capacity(&t.token, &t.group),
        3,
        "held, never read as 0"
    );
    let hold = &decisions(&server, &t)[0];
    assert_eq!(
        hold["tracking"][0]["recommendation"]["because"], "hold",
        "{hold}"
    );
    assert_eq!(hold["tracking"][0]["missing"], 1);
    minute(&server, &t, "cpu", None);
    server.tick_until("the fallback", 3, || {
        server.capacity(&t.token, &t.group) == 5
    });
    let fallback = &decisions(&server, &t)[0];
    assert_eq!(fallback["tracking"][0]["missing"], 3, "{fallback}");
}

#[test]
fn a_shadow_policy_leaves_capacity_alone_and_shows_what_it_would_have_done() {
    let server = Server::start();
    let t = setup(
        &server,
        1,
        2,
        json!({"metric": "cpu", "target": 0.5, "mode": "shadow"}),
    );
    minute(&server, &t, "cpu", Some(0.9));
    server.tick();
    assert_eq!(server.capacity(&t.token, &t.group), 2);
    let (_, shadow) = server.call(
        "GET",
        &format!("/v1/groups/{}/activity?outcome=shadow", t.group),
        &t.token,
        None,
    );
    let item = &shadow["items"][0];
    assert_eq!(
        (item["from"].as_u64(), item["to"].as_u64()),
        (Some(2), Some(4)),
        "{shadow}"
    );
    assert_eq!(item["would"]["outcome"], "executed");
}

#[test]
fn pausing_scale_in_keeps_target_tracking_scaling_out() {
    let server = Server::start();
    let t = setup(
        &server,
        1,
        2,
        json!({"metric": "cpu", "target": 0.5, "scale_in_stabilization_seconds": 0}),
    );
    let (status, _) = server.call(
        "POST",
        &format!("/v1/groups/{}/pause", t.group),
        &t.token,
        Some(json!({"scale_in": true})),
    );
    assert_eq!(status, 200);
    minute(&server, &t, "cpu", Some(0.1));
    assert_eq!(server.capacity(&t.token, &t.group), 2);
    assert_eq!(decisions(&server, &t)[0]["outcome"], "paused");
    minute(&server, &t, "cpu", Some(0.9));
    server.tick_until("the scale-out", 3, || {
        server.capacity(&t.token, &t.group) == 4
    });
}

#[test]
fn a_group_at_rest_is_decided_again_once_its_stream_moves() {
    let server = Server::start();
    let t = setup(&server, 1, 2, json!({"metric": "cpu", "target": 0.5}));
    let (status, _) = server.call(
        "POST",
        &format!("/v1/groups/{}/pause", t.group),
        &t.token,
        Some(json!({"scale_out": true})),
    );
    assert_eq!(status, 200);
    // Paused at 2 while recommending 4: at rest after the first period, which alone is recorded.
    for _ in 0..4 {
        minute(&server, &t, "cpu", Some(0.9));
    }
    assert_eq!(server.capacity(&t.token, &t.group), 2);
    let recorded = decisions(&server, &t);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["outcome"], "paused");
    // The resume is on the group's stream: the next period is decided again, and scales out.
    let (status, _) = server.call(
        "POST",
        &format!("/v1/groups/{}/resume", t.group),
        &t.token,
        None,
    );
    assert_eq!(status, 200);
    minute(&server, &t, "cpu", Some(0.9));
    server.tick_until("the scale-out after the resume", 3, || {
        server.capacity(&t.token, &t.group) == 4
    });
}

#[test]
fn nothing_that_executes_on_demand_may_name_a_policy_that_could_never_execute() {
    let server = Server::start();
    let t = setup(&server, 1, 2, json!({"metric": "queue", "target": 100}));
    let step = server.policy(
        &t.token,
        &t.group,
        json!({"name": "steps", "policy_type": "step", "adjustment_type": "change",
               "steps": [{"lower": 0, "upper": null, "adjustment": 1}]}),
    );
    let simple = server.policy(
        &t.token,
        &t.group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let alarm = |actions: Value| {
        json!({"name": "cpu-high", "group_id": t.group, "metric": "cpu", "statistic": "avg",
               "period_seconds": 60, "evaluation_periods": 1, "comparison": "gt",
               "threshold": 0.8, "alarm_actions": actions})
    };
    let receiver = |firing: &str, resolved: &str| json!({"name": "am", "firing": firing, "resolved": resolved});
    let hooks = |policy: &str| format!("/v1/groups/{}/policies/{policy}/webhooks", t.group);
    let receivers = format!("/v1/groups/{}/receivers", t.group);
    // Target tracking executes at each closed period: no webhook, alarm action or receiver
    // (each used to be accepted, then to answer 409, or do nothing, at every call).
    let refused = [
        ("POST", hooks(&t.policy), json!({"name": "w"})),
        ("POST", "/v1/alarms".to_owned(), alarm(json!([t.policy]))),
        ("POST", receivers.clone(), receiver(&t.policy, &simple)),
        ("POST", receivers.clone(), receiver(&simple, &t.policy)),
        // A step policy chooses its step by the breach, which an alert does not carry.
        ("POST", receivers.clone(), receiver(&step, &simple)),
    ];
    for (method, path, body) in refused {
        let answer = server.call(method, &path, &t.token, Some(body.clone()));
        assert_error(&answer, 409, "conflict");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("step") || message.contains("target-tracking"),
            "{message}"
        );
    }
    // Nor by a change of an alarm's actions.
    let (status, made) = server.call("POST", "/v1/alarms", &t.token, Some(alarm(json!([step]))));
    assert_eq!(
        status, 201,
        "a webhook or an alarm gives a step policy its breach: {made}"
    );
    let patch = json!({"ok_actions": [t.policy]});
    let path = format!("/v1/alarms/{}", made["id"].as_str().unwrap());
    assert_error(
        &server.call("PATCH", &path, &t.token, Some(patch)),
        409,
        "conflict",
    );
    let (status, _) = server.call("POST", &hooks(&step), &t.token, Some(json!({"name": "w"})));
    assert_eq!(status, 201);
    let (status, _) = server.call(
        "POST",
        &receivers,
        &t.token,
        Some(receiver(&simple, &simple)),
    );
    assert_eq!(status, 201);
    assert_eq!(server.capacity(&t.token, &t.group), 2);
}

#[test]
fn tracking_survives_a_restart_from_the_checkpoint() {
    let server = Server::start();
    let t = setup(&server, 1, 2, json!({"metric": "cpu", "target": 0.5}));
    minute(&server, &t, "cpu", Some(0.9));
    server.tick_until("the scale-out", 3, || {
        server.capacity(&t.token, &t.group) == 4
    });
    let server = server.restart();
    minute(&server, &t, "cpu", Some(0.5));
    minute(&server, &t, "cpu", Some(1.0));
    server.tick_until("the scale-out after the restart", 3, || {
        server.capacity(&t.token, &t.group) == 8
    });
}

#[test]
fn bad_target_tracking_policies_name_their_field() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let path = format!("/v1/groups/{group}/policies");
    let tt = |extra: Value| {
        let mut body = json!({"name": "tt", "policy_type": "target_tracking", "metric": "cpu",
            "target": 0.5});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (tt(json!({"target": 0})), "target"),
        (tt(json!({"target": -1})), "target"),
        (
            tt(json!({"activation_threshold": 5})),
            "activation_threshold",
        ),
        (tt(json!({"adjustment": 1})), "adjustment"),
        (tt(json!({"adjustment_type": "change"})), "adjustment_type"),
        (tt(json!({"cooldown_seconds": 60})), "cooldown_seconds"),
        (
            tt(json!({"scale_in_stabilization_seconds": 3601})),
            "scale_in_stabilization_seconds",
        ),
        (tt(json!({"tolerance": 1.5})), "tolerance"),
        (tt(json!({"metric": "   "})), "metric"),
        (
            json!({"name": "tt", "policy_type": "target_tracking", "target": 1}),
            "metric",
        ),
        (
            json!({"name": "tt", "policy_type": "target_tracking", "metric": "cpu"}),
            "target",
        ),
        (
            json!({"name": "s", "adjustment_type": "change", "adjustment": 1, "target": 1}),
            "target",
        ),
    ];
    for (body, field) in cases {
        let answer = server.call("POST", &path, &token, Some(body.clone()));
        assert_error(&answer, 400, "invalid_input");
        let message = answer.1["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(&format!("invalid {field}:")),
            "{body}: {message}"
        );
    }
    // A total may have an activation threshold; then it cannot be executed on demand.
    let policy = server.policy(
        &token,
        &group,
        tt(json!({"target_kind": "total", "activation_threshold": 5})),
    );
    let answer = server.call("POST", &format!("{path}/{policy}/execute"), &token, None);
    assert_error(&answer, 409, "conflict");
    // PATCH changes a setting, and refuses one of another type.
    let (status, patched) = server.call(
        "PATCH",
        &format!("{path}/{policy}"),
        &token,
        Some(json!({"target": 20, "disable_scale_in": true})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            patched["target"].as_f64(),
            patched["disable_scale_in"].as_bool()
        ),
        (Some(20.0), Some(true))
    );
    for (patch, field) in [
        (json!({"target": 0}), "target"),
        (json!({"adjustment_type": "percent"}), "adjustment_type"),
        (json!({"adjustment": 0}), "adjustment"),
        (json!({"steps": [{"lower": 0, "adjustment": 1}]}), "steps"),
    ] {
        let answer = server.call("PATCH", &format!("{path}/{policy}"), &token, Some(patch));
        assert_error(&answer, 400, "invalid_input");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("invalid {field}:")),
            "{message}"
        );
    }
}
