//! The HTTP API end to end: authentication, tenant isolation, validation, the group lifecycle,
//! policies, cooldowns on the manual clock, activity and pagination.

mod common;

use common::{assert_error, Server};
use serde_json::json;

#[test]
fn requests_without_or_with_a_bad_token_are_401() {
    let server = Server::start();
    let no_token = common::read(server.request("GET", "/v1/groups", None).send().unwrap());
    assert_error(&no_token, 401, "unauthorized");
    assert_error(
        &server.call("GET", "/v1/groups", "nope", None),
        401,
        "unauthorized",
    );
    let basic = server
        .request("GET", "/v1/groups", None)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .unwrap();
    assert_error(&common::read(basic), 401, "unauthorized");
    // Only the operator creates tenants.
    let tenant = server.tenant("acme");
    let refused = server.call(
        "POST",
        "/v1/tenants",
        &tenant,
        Some(json!({"name": "evil"})),
    );
    assert_error(&refused, 403, "forbidden");
    // And the operator token is no tenant's.
    assert_error(
        &server.call("GET", "/v1/groups", &server.operator_token.clone(), None),
        401,
        "unauthorized",
    );
}

#[test]
fn the_operator_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let path = server.dir.path().join("data/operator.token");
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn another_tenants_objects_answer_404_on_every_endpoint() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let (a, g, p, w) = (&hook.token, &hook.group, &hook.policy, &hook.id);
    let (status, alarm) = server.call(
        "POST",
        "/v1/alarms",
        a,
        Some(
            json!({"name": "cpu", "group_id": g, "metric": "cpu", "statistic": "avg",
                    "period_seconds": 60, "evaluation_periods": 2, "comparison": "gt",
                    "threshold": 0.8, "alarm_actions": [p]}),
        ),
    );
    assert_eq!(status, 201, "{alarm}");
    let alarm = alarm["id"].as_str().unwrap();
    let b = server.tenant("other");
    let probes: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", format!("/v1/groups/{g}"), None),
        (
            "PATCH",
            format!("/v1/groups/{g}"),
            Some(json!({"max_size": 5})),
        ),
        ("DELETE", format!("/v1/groups/{g}"), None),
        ("POST", format!("/v1/groups/{g}/pause"), None),
        ("POST", format!("/v1/groups/{g}/resume"), None),
        ("GET", format!("/v1/groups/{g}/servers"), None),
        ("GET", format!("/v1/groups/{g}/activity"), None),
        (
            "POST",
            format!("/v1/groups/{g}/policies"),
            Some(json!({"name": "x", "adjustment_type": "change", "adjustment": 1})),
        ),
        ("GET", format!("/v1/groups/{g}/policies"), None),
        ("GET", format!("/v1/groups/{g}/policies/{p}"), None),
        (
            "PATCH",
            format!("/v1/groups/{g}/policies/{p}"),
            Some(json!({"adjustment": 5})),
        ),
        ("DELETE", format!("/v1/groups/{g}/policies/{p}"), None),
        ("POST", format!("/v1/groups/{g}/policies/{p}/execute"), None),
        (
            "POST",
            format!("/v1/groups/{g}/policies/{p}/webhooks"),
            Some(json!({"name": "x"})),
        ),
        ("GET", format!("/v1/groups/{g}/policies/{p}/webhooks"), None),
        (
            "GET",
            format!("/v1/groups/{g}/policies/{p}/webhooks/{w}"),
            None,
        ),
        (
            "POST",
            format!("/v1/groups/{g}/policies/{p}/webhooks/{w}/rotate"),
            None,
        ),
        (
            "DELETE",
            format!("/v1/groups/{g}/policies/{p}/webhooks/{w}"),
            None,
        ),
        ("GET", format!("/v1/alarms/{alarm}"), None),
        (
            "PATCH",
            format!("/v1/alarms/{alarm}"),
            Some(json!({"threshold": 0.5})),
        ),
        ("DELETE", format!("/v1/alarms/{alarm}"), None),
    ];
    for (method, path, body) in probes {
        let answer = server.call(method, &path, &b, body);
        assert_eq!(answer.0, 404, "{method} {path}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "not_found", "{method} {path}");
    }
    // Nor do B's lists show A's objects, nor can B aim an alarm at A's group.
    assert_eq!(
        server.call("GET", "/v1/groups", &b, None).1["items"],
        json!([])
    );
    assert_eq!(
        server.call("GET", "/v1/alarms", &b, None).1["items"],
        json!([])
    );
    let aimed = server.call(
        "POST",
        "/v1/alarms",
        &b,
        Some(json!({"name": "x", "group_id": g, "metric": "cpu", "statistic": "avg",
                    "period_seconds": 60, "evaluation_periods": 1, "comparison": "gt", "threshold": 1})),
    );
    // A body naming another tenant's group is answered as a missing one.
    assert_error(&aimed, 404, "not_found");
    // A's objects are untouched.
    assert_eq!(server.capacity(a, g), 0);
    assert_eq!(
        server
            .call("GET", &format!("/v1/alarms/{alarm}"), a, None)
            .0,
        200
    );
}

#[test]
fn a_body_that_is_not_the_type_asked_names_the_field_at_fault() {
    // A probe's `1e400` in a launch field was a 400 naming no field; so was any mistyped field.
    let server = Server::start();
    let token = server.tenant("acme");
    let post = |path: &str, body: &str| {
        let response = server
            .request("POST", path, Some(&token))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        common::read(response)
    };
    let message = |answer: &(u16, serde_json::Value)| {
        assert_error(answer, 400, "invalid_json");
        answer.1["error"]["message"].as_str().unwrap().to_owned()
    };
    let group = |fields: &str| {
        post(
            "/v1/groups",
            &format!(r#"{{"name":"w","min_size":0,"max_size":2,{fields}}}"#),
        )
    };
    let cases = [
        (
            group(r#""launch":{"provider":"simulated","start_seconds":1e400}"#),
            "launch.start_seconds: number out of range",
        ),
        (
            group(r#""cooldown_seconds":"60","launch":{"provider":"simulated"}"#),
            "cooldown_seconds: invalid type: string \"60\"",
        ),
        (
            group(r#""launch":{"provider":"simulated"},"metadata":{"team":{"x":1e999}}"#),
            "metadata.team.x: number out of range",
        ),
    ];
    for (answer, starts) in &cases {
        let message = message(answer);
        assert!(message.starts_with(starts), "{message:?} for {starts:?}");
    }
    let id = server.group(&token, 0, 10, 1, 0);
    let steps = post(
        &format!("/v1/groups/{id}/policies"),
        r#"{"name":"s","policy_type":"step","adjustment_type":"change",
            "steps":[{"lower":0,"upper":null,"adjustment":1},{"lower":"x","adjustment":1}]}"#,
    );
    let steps = message(&steps);
    assert!(
        steps.starts_with("steps[1].lower: invalid type"),
        "{steps:?}"
    );
    // What is wrong with the whole body names no field; nothing may follow the value.
    let missing = message(&post(
        "/v1/groups",
        r#"{"name":"w","min_size":0,"max_size":2}"#,
    ));
    assert!(missing.starts_with("missing field `launch`"), "{missing:?}");
    let trailing = group(r#""launch":{"provider":"simulated"}} x"#);
    assert!(message(&trailing).starts_with("trailing characters"));
    let comma = message(&group(r#""launch":{"provider":"simulated",}"#));
    assert!(comma.starts_with("launch: trailing comma"), "{comma:?}");
    // A caller's long key is shown cut short.
    let long = "k".repeat(100_000);
    let metadata = format!(r#""launch":{{"provider":"simulated"}},"metadata":{{"{long}":1e400}}"#);
    let long = message(&group(&metadata));
    assert!(long.starts_with(&format!(
        "metadata.{}…: number out of range",
        "k".repeat(247)
    )));
    // A long value quoted by serde is cut short too.
    let value = "v".repeat(100_000);
    let quoted = message(&group(&format!(
        r#""launch":{{"provider":"simulated"}},"cooldown_seconds":"{value}""#
    )));
    assert!(
        quoted.starts_with("cooldown_seconds: invalid type"),
        "{quoted:.80}"
    );
    assert!(
        quoted.len() <= 1024 + '…'.len_utf8(),
        "{} bytes",
        quoted.len()
    );
    // An array is not an object, though serde would read one into a struct's fields.
    let array = post(
        "/v1/groups",
        r#"["web", 0, 1, 0, 300, {"provider": "simulated"}, {}]"#,
    );
    assert_eq!(
        message(&array),
        "the body must be a JSON object, not an array"
    );
    let pause = post(&format!("/v1/groups/{id}/pause"), " [true]");
    assert_eq!(
        message(&pause),
        "the body must be a JSON object, not an array"
    );
    // None of them made a group.
    let (_, list) = server.call("GET", "/v1/groups", &token, None);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn a_name_with_bidirectional_controls_is_refused_as_it_would_show_reordered() {
    // A probe named a group "web\u{202E}gpj.exe": the console showed "webexe.jpg".
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let bad = "web\u{202E}gpj.exe";
    let refused = |answer: (u16, serde_json::Value)| {
        assert_error(&answer, 400, "invalid_input");
        let message = answer.1["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("name") && message.contains("U+202E"),
            "{message}"
        );
    };
    let launch = json!({"provider": "simulated"});
    let creates = [
        (
            "/v1/groups".to_owned(),
            json!({"name": bad, "min_size": 0, "max_size": 1, "launch": launch}),
        ),
        (
            format!("/v1/groups/{group}/policies"),
            json!({"name": bad, "adjustment_type": "change", "adjustment": 1}),
        ),
        (
            format!("/v1/groups/{group}/policies/{policy}/webhooks"),
            json!({"name": bad}),
        ),
        (
            "/v1/alarms".to_owned(),
            json!({"name": bad, "group_id": group, "metric": "cpu", "statistic": "avg",
                   "period_seconds": 60, "evaluation_periods": 1, "comparison": "gt",
                   "threshold": 1.0, "alarm_actions": [policy]}),
        ),
    ];
    for (path, body) in creates {
        refused(server.call("POST", &path, &token, Some(body)));
    }
    let rename = json!({"name": "up\u{2066}"});
    let path = format!("/v1/groups/{group}/policies/{policy}");
    refused(server.call("PATCH", &path, &token, Some(rename)));
    refused(server.call(
        "PATCH",
        &format!("/v1/groups/{group}"),
        &token,
        Some(json!({"name": bad})),
    ));
    // Right-to-left text is a name.
    let (status, body) = server.call(
        "PATCH",
        &format!("/v1/groups/{group}"),
        &token,
        Some(json!({"name": "שרתים"})),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_input_is_400_with_a_code_never_a_500() {
    let server = Server::start();
    let token = server.tenant("acme");
    let post = |body: &str| {
        let response = server
            .request("POST", "/v1/groups", Some(&token))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        common::read(response)
    };
    let launch = r#""launch":{"provider":"simulated"}"#;
    assert_error(&post("{not json"), 400, "invalid_json");
    assert_error(
        &post(&format!(
            r#"{{"name":"w","min_size":"1","max_size":2,{launch}}}"#
        )),
        400,
        "invalid_json",
    );
    assert_error(
        &post(&format!(
            r#"{{"name":"w","min_size":-1,"max_size":2,{launch}}}"#
        )),
        400,
        "invalid_json",
    );
    assert_error(
        &post(&format!(
            r#"{{"name":"w","min_size":1,"max_size":99999999999,{launch}}}"#
        )),
        400,
        "invalid_json",
    );
    assert_error(
        &post(&format!(
            r#"{{"name":"w","min_size":1,"max_size":2,"colour":"red",{launch}}}"#
        )),
        400,
        "invalid_json",
    );
    assert_error(
        &post(&format!(
            r#"{{"name":"w","min_size":3,"max_size":2,{launch}}}"#
        )),
        400,
        "invalid_input",
    );
    assert_error(
        &post(&format!(
            r#"{{"name":"w","min_size":1,"max_size":2,"desired_capacity":5,{launch}}}"#
        )),
        400,
        "invalid_input",
    );
    assert_error(
        &post(r#"{"name":"w","min_size":1,"max_size":2,"launch":{"provider":"mainframe"}}"#),
        400,
        "invalid_input",
    );
    assert_error(
        &post(&format!(
            r#"{{"name":"","min_size":1,"max_size":2,{launch}}}"#
        )),
        400,
        "invalid_input",
    );
    assert_error(
        &post(r#"{"name":"w","min_size":1,"max_size":2}"#),
        400,
        "invalid_json",
    );

    // JSON has one number type: an integer field takes 3.0 as 3 (as the OpenAPI document's
    // `integer` does), and refuses 3.5.
    let whole = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(
            json!({"name": "w", "min_size": 1.0, "max_size": 3.0, "desired_capacity": 2.0,
                    "launch": {"provider": "simulated", "seed": 7.0}}),
        ),
    );
    assert_eq!(whole.0, 201, "{}", whole.1);
    assert_eq!(
        (
            whole.1["min_size"].as_u64(),
            whole.1["desired_capacity"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let fraction = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(json!({"name": "w", "min_size": 0, "max_size": 3.5, "launch": {"provider": "simulated"}})),
    );
    assert_error(&fraction, 400, "invalid_json");

    let group = server.group(&token, 0, 10, 1, 0);
    let bad_policy = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies"),
        &token,
        Some(json!({"name": "p", "adjustment_type": "change", "adjustment": 1, "min_adjustment_step": 2})),
    );
    assert_error(&bad_policy, 400, "invalid_input");
    // The most negative i64, whose absolute value overflows, on create and on PATCH.
    for kind in ["change", "percent", "exact"] {
        let body = json!({"name": "p", "adjustment_type": kind, "adjustment": i64::MIN});
        let path = format!("/v1/groups/{group}/policies");
        assert_error(
            &server.call("POST", &path, &token, Some(body)),
            400,
            "invalid_input",
        );
    }
    let fine = server.policy(
        &token,
        &group,
        json!({"name": "p", "adjustment_type": "percent", "adjustment": 10}),
    );
    let patch = json!({"adjustment": i64::MIN});
    let path = format!("/v1/groups/{group}/policies/{fine}");
    assert_error(
        &server.call("PATCH", &path, &token, Some(patch)),
        400,
        "invalid_input",
    );
    let unknown_type = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies"),
        &token,
        Some(json!({"name": "p", "adjustment_type": "double", "adjustment": 1})),
    );
    assert_error(&unknown_type, 400, "invalid_json");
    assert_error(
        &server.call("GET", "/v1/groups?limit=0", &token, None),
        400,
        "invalid_limit",
    );
    assert_error(
        &server.call("GET", "/v1/groups?limit=1001", &token, None),
        400,
        "invalid_limit",
    );
    assert_error(
        &server.call("GET", "/v1/groups?limit=abc", &token, None),
        400,
        "invalid_query",
    );
    assert_error(
        &server.call("GET", "/v1/nowhere", &token, None),
        404,
        "not_found",
    );
    assert_error(
        &server.call("GET", "/v1/groups/grp_missing", &token, None),
        404,
        "not_found",
    );
    assert_error(
        &server.call(
            "GET",
            &format!("/v1/groups/{group}/activity?cursor=x"),
            &token,
            None,
        ),
        400,
        "invalid_cursor",
    );
}

#[test]
fn a_group_lives_through_create_change_pause_resume_and_delete() {
    let server = Server::start();
    let token = server.tenant("acme");
    let (status, created) = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(json!({"name": "web", "min_size": 2, "max_size": 10, "launch": {"provider": "simulated"},
                    "metadata": {"team": "edge"}})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["desired_capacity"], 2, "defaults to min_size");
    assert_eq!(created["cooldown_seconds"], 300, "defaults to 300");
    assert!(created["metrics_token"].as_str().unwrap().len() > 20);
    let id = created["id"].as_str().unwrap();
    let (_, shown) = server.call("GET", &format!("/v1/groups/{id}"), &token, None);
    assert!(
        shown.get("metrics_token").is_none(),
        "shown once, at creation"
    );
    assert_eq!(shown["metadata"]["team"], "edge");
    // Alone with its journal, the node owns every group, under a lease of token 1 (SPEC 9).
    let port = server.url("").rsplit(':').next().unwrap().to_owned();
    assert!(
        shown["owner"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port}")),
        "{shown}"
    );
    assert_eq!(shown["fencing_token"], 1);

    // Raising min above the capacity moves it into range without a policy execution.
    let (status, patched) = server.call(
        "PATCH",
        &format!("/v1/groups/{id}"),
        &token,
        Some(json!({"min_size": 4})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["desired_capacity"], 4);
    let (_, activity) = server.call("GET", &format!("/v1/groups/{id}/activity"), &token, None);
    assert_eq!(activity["items"][0]["type"], "capacity_changed");
    assert_eq!(activity["items"][0]["cause"]["type"], "bounds");
    assert!(activity["items"][0]["seq"].as_u64().unwrap() > 1);

    let policy = server.policy(
        &token,
        id,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 2}),
    );
    let execute = format!("/v1/groups/{id}/policies/{policy}/execute");
    assert_eq!(
        server
            .call("POST", &format!("/v1/groups/{id}/pause"), &token, None)
            .1["paused"],
        true
    );
    let (status, outcome) = server.call("POST", &execute, &token, None);
    assert_eq!((status, outcome["outcome"].as_str()), (202, Some("paused")));
    assert_eq!(
        server
            .call("POST", &format!("/v1/groups/{id}/resume"), &token, None)
            .1["paused"],
        false
    );
    let (status, outcome) = server.call("POST", &execute, &token, None);
    assert_eq!(status, 202);
    assert_eq!(
        (
            outcome["outcome"].as_str(),
            outcome["from"].as_u64(),
            outcome["to"].as_u64()
        ),
        (Some("executed"), Some(4), Some(6))
    );

    assert_eq!(
        server
            .call("DELETE", &format!("/v1/groups/{id}"), &token, None)
            .0,
        204
    );
    assert_error(
        &server.call("GET", &format!("/v1/groups/{id}"), &token, None),
        404,
        "not_found",
    );
    assert_error(
        &server.call("POST", &execute, &token, None),
        404,
        "not_found",
    );
}

#[test]
fn the_group_cooldown_holds_until_exactly_its_end_on_the_services_clock() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 60);
    let up = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let fast = server.policy(&token, &group, json!({"name": "fast", "adjustment_type": "exact", "adjustment": 5, "cooldown_seconds": 10}));
    let run = |policy: &str| {
        server
            .call(
                "POST",
                &format!("/v1/groups/{group}/policies/{policy}/execute"),
                &token,
                None,
            )
            .1
    };
    assert_eq!(run(&up)["to"], 2);
    server.clock.advance_secs(30);
    let refused = run(&fast);
    assert_eq!(
        (
            refused["outcome"].as_str(),
            refused["retry_after_seconds"].as_u64()
        ),
        (Some("cooldown"), Some(30))
    );
    server.clock.advance_secs(30);
    let done = run(&fast);
    assert_eq!(
        (done["outcome"].as_str(), done["to"].as_u64()),
        (Some("executed"), Some(5))
    );
    // The fast policy's own 10 s cooldown now applies to the whole group.
    server.clock.advance_secs(9);
    assert_eq!(run(&up)["outcome"], "cooldown");
    server.clock.advance_secs(1);
    assert_eq!(run(&up)["to"], 6);
    // At a bound nothing changes and no cooldown starts.
    let top = server.policy(
        &token,
        &group,
        json!({"name": "top", "adjustment_type": "exact", "adjustment": 10, "cooldown_seconds": 0}),
    );
    server.clock.advance_secs(60);
    assert_eq!(run(&top)["to"], 10);
    assert_eq!(run(&top)["outcome"], "no_change");
    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{group}/activity?limit=3"),
        &token,
        None,
    );
    let outcomes: Vec<&str> = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["no_change", "executed", "executed"]);
    let next = activity["next_cursor"].as_str().unwrap();
    let (_, older) = server.call(
        "GET",
        &format!("/v1/groups/{group}/activity?limit=3&cursor={next}"),
        &token,
        None,
    );
    let outcomes: Vec<&str> = older["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["cooldown", "executed", "cooldown"]);
}

#[test]
fn lists_page_with_a_cursor() {
    let server = Server::start();
    let token = server.tenant("acme");
    let mut ids: Vec<String> = (0..5).map(|_| server.group(&token, 0, 1, 0, 0)).collect();
    ids.sort();
    let (_, first) = server.call("GET", "/v1/groups?limit=2", &token, None);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = server.call(
        "GET",
        &format!("/v1/groups?limit=2&cursor={cursor}"),
        &token,
        None,
    );
    let cursor = second["next_cursor"].as_str().unwrap().to_owned();
    let (_, third) = server.call(
        "GET",
        &format!("/v1/groups?limit=2&cursor={cursor}"),
        &token,
        None,
    );
    assert!(third["next_cursor"].is_null());
    let seen: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|page| page["items"].as_array().unwrap().clone())
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ids);
}

#[test]
fn objects_survive_a_restart_and_the_service_reports_ready_after_replay() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let run = format!("/v1/groups/{}/policies/{}/execute", hook.group, hook.policy);
    server.call("POST", &run, &hook.token, None);
    let hooks = format!(
        "/v1/groups/{}/policies/{}/webhooks",
        hook.group, hook.policy
    );
    let (_, revoked) = server.call("POST", &hooks, &hook.token, Some(json!({"name": "old"})));
    let revoked = revoked["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .call("DELETE", &format!("{hooks}/{revoked}"), &hook.token, None)
            .0,
        204
    );
    let server = server.restart();
    assert_error(
        &server.call("GET", &format!("{hooks}/{revoked}"), &hook.token, None),
        404,
        "not_found",
    );
    assert_eq!(server.capacity(&hook.token, &hook.group), 1);
    let (status, listed) = server.call(
        "GET",
        &format!(
            "/v1/groups/{}/policies/{}/webhooks",
            hook.group, hook.policy
        ),
        &hook.token,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(listed["items"][0]["id"], hook.id.as_str());
    assert!(listed["items"][0].get("secret").is_none());
    assert_eq!(server.call("GET", "/readyz", &hook.token, None).0, 200);
    assert_eq!(server.call("GET", "/healthz", &hook.token, None).0, 200);

    // The second start began from the checkpoint the first one saved: what changed since is
    // replayed on top of it, deletions included.
    let second = server.group(&hook.token, 0, 3, 1, 0);
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/v1/groups/{}?force=true", hook.group),
                &hook.token,
                None
            )
            .0,
        204
    );
    let server = server.restart();
    assert_error(
        &server.call(
            "GET",
            &format!("/v1/groups/{}", hook.group),
            &hook.token,
            None,
        ),
        404,
        "not_found",
    );
    assert_eq!(server.capacity(&hook.token, &second), 1);
    let (_, listed) = server.call("GET", "/v1/groups", &hook.token, None);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let another = server.tenant("other");
    assert_eq!(server.call("GET", "/v1/groups", &another, None).0, 200);
}

/// The journal's head, read through `GET /v1/journal` (its trailer line).
fn journal_head(server: &Server) -> u64 {
    let export = server.journal_export();
    let trailer: serde_json::Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
    trailer["head"]["seq"].as_u64().unwrap()
}

#[test]
fn the_checkpoint_follows_the_journal_while_serving_so_a_start_replays_nothing_before_it() {
    // Only the checkpointer ticks: the converger's launches would move the head under the test.
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 5, 1, 0);
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 2}),
    );
    let deleted = server.group(&token, 0, 3, 0, 0);
    assert_eq!(
        server
            .call("DELETE", &format!("/v1/groups/{deleted}"), &token, None)
            .0,
        204
    );
    let (status, _) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{policy}/execute"),
        &token,
        None,
    );
    assert_eq!(status, 202);
    // One tick of the checkpointer takes the checkpoint to the head.
    let head = journal_head(&server);
    assert!(server.gauge("flotilla_checkpoint_seq") < head);
    server.ticks.tick_only("checkpoint");
    assert_eq!(server.gauge("flotilla_checkpoint_seq"), head);

    let server = server.restart();
    // Everything up to the head came from the checkpoint, and it is all there.
    assert_eq!(server.gauge("flotilla_start_replayed_records"), 0);
    assert_eq!(server.gauge("flotilla_checkpoint_seq"), head);
    assert_eq!(server.capacity(&token, &group), 3);
    assert_error(
        &server.call("GET", &format!("/v1/groups/{deleted}"), &token, None),
        404,
        "not_found",
    );
    let (status, listed) = server.call("GET", "/v1/groups", &token, None);
    assert_eq!(status, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[test]
fn objects_over_their_size_limits_are_413_naming_the_field_never_a_journal_500() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 3, 0, 0);
    let big = "x".repeat(1_500_000);

    let patch = json!({"metadata": {"notes": big}});
    let answer = server.call("PATCH", &format!("/v1/groups/{group}"), &token, Some(patch));
    assert_error(&answer, 413, "too_large");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("metadata is"), "{message}");

    let create = json!({"name": "w", "min_size": 0, "max_size": 2,
                        "launch": {"provider": "simulated", "blob": big}});
    let answer = server.call("POST", "/v1/groups", &token, Some(create));
    assert_error(&answer, 413, "too_large");
    assert!(answer.1["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("launch is"));

    // A body over 2 MiB is refused before it is read whole.
    let huge = json!({"metadata": {"notes": "x".repeat(3 << 20)}});
    let answer = server.call("PATCH", &format!("/v1/groups/{group}"), &token, Some(huge));
    assert_error(&answer, 413, "too_large");

    // Just under the limit is accepted, and journaled.
    let fits = json!({"metadata": {"notes": "x".repeat(60_000)}});
    let (status, body) = server.call("PATCH", &format!("/v1/groups/{group}"), &token, Some(fits));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["notes"].as_str().unwrap().len(), 60_000);
}

#[test]
fn every_list_refuses_a_cursor_that_did_not_come_from_next_cursor() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 3, 0, 0);
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let lists = [
        "/v1/groups".to_owned(),
        "/v1/alarms".to_owned(),
        format!("/v1/groups/{group}/policies"),
        format!("/v1/groups/{group}/policies/{policy}/webhooks"),
        format!("/v1/groups/{group}/servers"),
        format!("/v1/groups/{group}/activity"),
    ];
    // Empty, of no kind, with a control character, of another kind, or (activity) no version.
    for list in &lists {
        for cursor in ["", "zzz", "grp_x%0A", "alm_1", "0"] {
            let answer = server.call("GET", &format!("{list}?cursor={cursor}"), &token, None);
            if list == "/v1/alarms" && cursor == "alm_1" {
                assert_eq!(answer.0, 200, "{list} {cursor}: {}", answer.1);
                continue;
            }
            assert_error(&answer, 400, "invalid_cursor");
        }
    }
}

#[test]
fn a_tenants_token_where_the_operators_is_needed_is_403() {
    let server = Server::start();
    let token = server.tenant("acme");
    let answer = server.call(
        "POST",
        "/v1/tenants",
        &token,
        Some(json!({"name": "other"})),
    );
    assert_error(&answer, 403, "forbidden");
    let dump = server
        .request("GET", "/v1/journal", Some(&token))
        .send()
        .unwrap();
    assert_eq!(dump.status(), 403);
    // An unknown token is still 401.
    let answer = server.call(
        "POST",
        "/v1/tenants",
        "nope",
        Some(json!({"name": "other"})),
    );
    assert_error(&answer, 401, "unauthorized");
}

#[test]
fn a_full_series_store_is_429_with_retry_after_not_503() {
    let server = Server::start_with(|s| s.max_series = 1);
    let token = server.tenant("acme");
    let groups: Vec<String> = (0..2).map(|_| server.group(&token, 0, 3, 0, 0)).collect();
    for group in &groups {
        let alarm = json!({"name": "cpu", "group_id": group, "metric": "cpu", "statistic": "avg",
                           "period_seconds": 60, "evaluation_periods": 1, "comparison": "gt",
                           "threshold": 0.5});
        let (status, body) = server.call("POST", "/v1/alarms", &token, Some(alarm));
        assert_eq!(status, 201, "{body}");
    }
    // Counts the first group's samples.
    let (_, alarm) = server.call(
        "POST",
        "/v1/alarms",
        &token,
        Some(
            json!({"name": "load", "group_id": groups[0], "metric": "cpu",
                    "statistic": "count", "period_seconds": 60, "evaluation_periods": 1,
                    "comparison": "gt", "threshold": 1.5}),
        ),
    );
    let now = server.now_secs() as f64;
    let post = |group: &str| {
        let sample = json!({"metric": "cpu", "value": 0.7, "timestamp": now, "group_id": group});
        server
            .request("POST", "/v1/metrics", Some(&token))
            .json(&json!({"samples": [sample]}))
            .send()
            .unwrap()
    };
    assert_eq!(post(&groups[0]).status(), 202);
    let full = post(&groups[1]);
    assert_eq!(full.status(), 429);
    assert_eq!(full.headers()["retry-after"], "60");
    assert_error(&common::read(full), 429, "series_limit");

    // A batch refused 429 stores none of its samples: sent three times, the first group's
    // sample (whose series holds already) counts once. It used to be stored before the second
    // group's was refused, so each retry added it again.
    let both: Vec<serde_json::Value> = groups
        .iter()
        .map(|group| json!({"metric": "cpu", "value": 0.7, "timestamp": now, "group_id": group}))
        .collect();
    for _ in 0..3 {
        let answer = server.call(
            "POST",
            "/v1/metrics",
            &token,
            Some(json!({"samples": both})),
        );
        assert_error(&answer, 429, "series_limit");
    }
    let path = format!("/v1/alarms/{}", alarm["id"].as_str().unwrap());
    // Past the period's end and the evaluation delay (2 s).
    server.clock.advance_secs(62);
    server.tick_until("the count alarm to be evaluated", 3, || {
        server.call("GET", &path, &token, None).1["state"] != "insufficient_data"
    });
    let (_, evaluated) = server.call("GET", &path, &token, None);
    assert_eq!(evaluated["state"], "ok", "{evaluated}");
}

#[test]
fn desired_capacity_is_set_directly_within_the_bounds_with_no_cooldown() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 5, 1, 600);
    let path = format!("/v1/groups/{group}");
    let (status, body) = server.call("PATCH", &path, &token, Some(json!({"desired_capacity": 4})));
    assert_eq!(
        (status, body["desired_capacity"].as_u64()),
        (200, Some(4)),
        "{body}"
    );
    let out = server.call("PATCH", &path, &token, Some(json!({"desired_capacity": 6})));
    assert_error(&out, 400, "invalid_input");
    // Within new bounds given in the same PATCH.
    let both = json!({"max_size": 8, "desired_capacity": 7});
    let (status, body) = server.call("PATCH", &path, &token, Some(both));
    assert_eq!(
        (status, body["desired_capacity"].as_u64()),
        (200, Some(7)),
        "{body}"
    );

    let (_, activity) = server.call("GET", &format!("{path}/activity"), &token, None);
    let changes: Vec<&serde_json::Value> = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "capacity_changed")
        .collect();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["cause"]["type"], "direct");
    assert_eq!(
        (changes[0]["from"].as_u64(), changes[0]["to"].as_u64()),
        (Some(4), Some(7))
    );
    // No cooldown was started: a policy executes at once.
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "down", "adjustment_type": "change", "adjustment": -1}),
    );
    let (status, run) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{policy}/execute"),
        &token,
        None,
    );
    assert_eq!(
        (status, &run["outcome"]),
        (202, &json!("executed")),
        "{run}"
    );
}

#[test]
fn a_rotated_tenant_or_metrics_token_replaces_the_old_one_at_once_across_a_restart() {
    let server = Server::start();
    let (status, tenant) = server.call(
        "POST",
        "/v1/tenants",
        &server.operator_token,
        Some(json!({"name": "acme"})),
    );
    assert_eq!(status, 201);
    let (id, old) = (
        tenant["id"].as_str().unwrap(),
        tenant["token"].as_str().unwrap(),
    );
    let group = server.group(old, 0, 3, 0, 0);

    let rotate = format!("/v1/tenants/{id}/token");
    assert_error(&server.call("POST", &rotate, old, None), 403, "forbidden");
    let (status, rotated) = server.call("POST", &rotate, &server.operator_token, None);
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_error(
        &server.call("GET", "/v1/groups", old, None),
        401,
        "unauthorized",
    );
    assert_eq!(server.call("GET", "/v1/groups", &new, None).0, 200);
    let missing = format!("/v1/tenants/ten_{}/token", "0".repeat(32));
    let answer = server.call("POST", &missing, &server.operator_token, None);
    assert_error(&answer, 404, "not_found");

    let sample = |server: &Server, token: &str| {
        let sample = json!({"metric": "cpu", "value": 0.5, "timestamp": server.now_secs() as f64});
        server
            .request("POST", "/v1/metrics", Some(token))
            .json(&json!({"samples": [sample]}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let (status, created) = server.call("GET", &format!("/v1/groups/{group}"), &new, None);
    assert_eq!(status, 200, "{created}");
    let path = format!("/v1/groups/{group}/metrics-token");
    let (status, first) = server.call("POST", &path, &new, None);
    assert_eq!(status, 200, "{first}");
    let first = first["metrics_token"].as_str().unwrap().to_owned();
    assert_eq!(sample(&server, &first), 202);
    let (_, second) = server.call("POST", &path, &new, None);
    let second = second["metrics_token"].as_str().unwrap().to_owned();
    assert_eq!(
        sample(&server, &first),
        401,
        "the old metrics token stops at once"
    );
    assert_eq!(sample(&server, &second), 202);

    let (old, id) = (old.to_owned(), id.to_owned());
    let _ = id;
    let server = server.restart();
    assert_error(
        &server.call("GET", "/v1/groups", &old, None),
        401,
        "unauthorized",
    );
    assert_eq!(server.call("GET", "/v1/groups", &new, None).0, 200);
    assert_eq!(sample(&server, &first), 401);
    assert_eq!(sample(&server, &second), 202);
}

#[test]
fn launch_configurations_follow_their_providers_schema() {
    let server = Server::start();
    let token = server.tenant("acme");
    let create = |launch: serde_json::Value| {
        let body = json!({"name": "w", "min_size": 0, "max_size": 2, "launch": launch});
        server.call("POST", "/v1/groups", &token, Some(body))
    };
    let refused = [
        (
            json!({"provider": "simulated", "start_seconds": 1e300}),
            "launch.start_seconds",
        ),
        (
            json!({"provider": "simulated", "failure_rate": 2}),
            "launch.failure_rate",
        ),
        (json!({"provider": "simulated", "colour": "red"}), "launch"),
        (
            json!({"provider": "http", "url": "not a url", "secret": "whsec_AAAA"}),
            "launch.url",
        ),
        (
            json!({"provider": "http", "url": "file:///etc/passwd", "secret": "whsec_AAAA"}),
            "launch.url",
        ),
        (
            json!({"provider": "http", "url": "https://o.example"}),
            "launch.secret",
        ),
    ];
    for (launch, field) in refused {
        let answer = create(launch.clone());
        assert_error(&answer, 400, "invalid_input");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("invalid {field}:")),
            "{launch}: {message}"
        );
    }
    let fine = json!({"provider": "http", "url": "https://o.example", "secret": "whsec_AAAA"});
    assert_eq!(create(fine).0, 201);

    // With the operator's secret, an http configuration may go without its own.
    let server = Server::start_with(|s| s.provider_http_secret = Some("whsec_AAAA".into()));
    let token = server.tenant("acme");
    let body = json!({"name": "w", "min_size": 0, "max_size": 2,
                      "launch": {"provider": "http", "url": "https://o.example"}});
    assert_eq!(server.call("POST", "/v1/groups", &token, Some(body)).0, 201);
}

#[test]
fn a_shadow_policy_leaves_capacity_alone_and_shows_what_it_would_have_done() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 1, 10, 2, 60);
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "try", "mode": "shadow", "adjustment_type": "change", "adjustment": 3}),
    );
    let (_, shown) = server.call(
        "GET",
        &format!("/v1/groups/{group}/policies/{policy}"),
        &token,
        None,
    );
    assert_eq!(
        (shown["mode"].clone(), shown["policy_type"].clone()),
        (json!("shadow"), json!("simple"))
    );
    let execute = format!("/v1/groups/{group}/policies/{policy}/execute");
    let (status, outcome) = server.call("POST", &execute, &token, None);
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(
        (
            outcome["outcome"].clone(),
            outcome["from"].clone(),
            outcome["to"].clone(),
            outcome["would"].clone()
        ),
        (json!("shadow"), json!(2), json!(5), json!("executed")),
        "{outcome}"
    );
    assert_eq!(server.capacity(&token, &group), 2);

    // A live execution, then the filter finds the shadow one alone.
    let live = server.policy(
        &token,
        &group,
        json!({"name": "live", "adjustment_type": "change", "adjustment": 1}),
    );
    let (status, _) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{live}/execute"),
        &token,
        None,
    );
    assert_eq!(status, 202);
    let (_, shadows) = server.call(
        "GET",
        &format!("/v1/groups/{group}/activity?outcome=shadow"),
        &token,
        None,
    );
    let items = shadows["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{shadows}");
    assert_eq!(items[0]["policy_id"], policy.as_str());
    assert_eq!(items[0]["would"]["outcome"], "executed");
    let bad = server.call(
        "GET",
        &format!("/v1/groups/{group}/activity?outcome=maybe"),
        &token,
        None,
    );
    assert_error(&bad, 400, "invalid_query");

    // PATCH makes it live: it now waits out the live policy's cooldown, then moves capacity.
    let (status, patched) = server.call(
        "PATCH",
        &format!("/v1/groups/{group}/policies/{policy}"),
        &token,
        Some(json!({"mode": "live"})),
    );
    assert_eq!((status, patched["mode"].clone()), (200, json!("live")));
    let (_, outcome) = server.call("POST", &execute, &token, None);
    assert_eq!(outcome["outcome"], "cooldown", "{outcome}");
    server.clock.advance_secs(60);
    let (_, outcome) = server.call("POST", &execute, &token, None);
    assert_eq!(outcome["outcome"], "executed", "{outcome}");
    assert_eq!(server.capacity(&token, &group), 6);
}

#[test]
fn a_step_policy_executes_the_step_its_breach_falls_in_by_execute_or_webhook() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 20, 10, 300);
    let (status, policy) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies"),
        &token,
        Some(
            json!({"name": "out", "policy_type": "step", "adjustment_type": "percent",
                    "steps": [{"lower": 0, "upper": 10, "adjustment": 0},
                              {"lower": 10, "upper": 20, "adjustment": 10},
                              {"lower": 20, "adjustment": 30}],
                    "warmup_seconds": 0}),
        ),
    );
    assert_eq!(status, 201, "{policy}");
    assert_eq!(policy["policy_type"], "step");
    assert_eq!(policy["steps"].as_array().unwrap().len(), 3);
    let id = policy["id"].as_str().unwrap();
    let execute = format!("/v1/groups/{group}/policies/{id}/execute");
    let needs = server.call("POST", &execute, &token, None);
    assert_error(&needs, 400, "metric_value_required");
    let (status, outcome) = server.call(
        "POST",
        &execute,
        &token,
        Some(json!({"metric_value": 60, "breach_threshold": 50})),
    );
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(
        (outcome["from"].clone(), outcome["to"].clone()),
        (json!(10), json!(11))
    );
    // No cooldown: a webhook call at once, whose body names the breach, takes the next step.
    let (status, hook) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{id}/webhooks"),
        &token,
        Some(json!({"name": "cpu-steps"})),
    );
    assert_eq!(status, 201, "{hook}");
    let hook = common::Hook {
        token: token.clone(),
        group: group.clone(),
        policy: id.to_owned(),
        id: hook["id"].as_str().unwrap().to_owned(),
        url: hook["url"].as_str().unwrap().to_owned(),
        secret: hook["secret"].as_str().unwrap().to_owned(),
    };
    let body = json!({"metric_value": 70.0, "breach_threshold": 50.0}).to_string();
    let now = server.now_secs();
    let (status, outcome) = server.send_hook(&hook, &hook.secret, "msg_step", now, body.as_bytes());
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(server.capacity(&token, &group), 14);

    // A policy's type decides its fields.
    for (body, field) in [
        (
            json!({"name": "s", "policy_type": "step", "adjustment_type": "change", "adjustment": 1,
                "steps": [{"lower": 0, "adjustment": 1}]}),
            "adjustment",
        ),
        (
            json!({"name": "s", "policy_type": "step", "adjustment_type": "change",
                "steps": [{"lower": 0, "upper": 5, "adjustment": 1}, {"lower": 6, "adjustment": 2}]}),
            "steps",
        ),
        (
            json!({"name": "s", "adjustment_type": "change"}),
            "adjustment",
        ),
    ] {
        let refused = server.call(
            "POST",
            &format!("/v1/groups/{group}/policies"),
            &token,
            Some(body),
        );
        assert_error(&refused, 400, "invalid_input");
        assert!(
            refused.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{}",
            refused.1
        );
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let server = Server::start();
    let token = server.tenant("acme");
    // RFC 9110 11.1: `bearer` names the same scheme (it used to be a 401).
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let answer = server
            .client
            .get(server.url("/v1/groups"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200, "{scheme}");
    }
}

#[test]
fn a_metrics_body_over_2_mib_is_413_as_spec_3_says_by_default() {
    let server = Server::start();
    let token = server.tenant("acme");
    // It was 4 MiB by default (the operator may still raise it: --metrics-body-limit).
    let padded = format!("{{\"samples\": []}}{}", " ".repeat(3 << 20));
    let answer = server
        .request("POST", "/v1/metrics", Some(&token))
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .unwrap();
    assert_error(&common::read(answer), 413, "too_large");
}

#[test]
fn a_body_declared_other_than_json_is_refused_with_415_and_none_at_all_is_fine() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 2, 0);
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let send = |path: &str, content_type: Option<&str>, body: &str| {
        let mut request = server
            .request("POST", path, Some(&token))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        common::read(request.send().unwrap())
    };
    let pause = format!("/v1/groups/{group}/pause");
    let execute = format!("/v1/groups/{group}/policies/{policy}/execute");
    let body = r#"{"scale_in": true}"#;
    for path in [&pause, &execute] {
        assert_error(
            &send(path, Some("text/plain"), body),
            415,
            "unsupported_media_type",
        );
    }
    // Nothing changed.
    let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
    assert_eq!(
        (view["desired_capacity"].as_u64(), &view["paused"]),
        (Some(2), &json!(false))
    );
    // Declared JSON (or a +json type), or not declared, it is read; an empty body needs no type.
    let (status, view) = send(&pause, Some("application/json; charset=utf-8"), body);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["pause"]["scale_in"], true, "{view}");
    let (status, view) = send(&pause, Some("application/merge-patch+json"), body);
    assert_eq!(status, 200, "{view}");
    // A space before the parameters (RFC 9110 allows it), any case, an empty header.
    for declared in ["application/json ; charset=utf-8", "Application/JSON", ""] {
        assert_eq!(send(&pause, Some(declared), body).0, 200, "{declared:?}");
    }
    for declared in ["text/json", "image/json", "json", "application/+json"] {
        assert_error(
            &send(&pause, Some(declared), body),
            415,
            "unsupported_media_type",
        );
    }
    assert_eq!(send(&pause, None, body).0, 200);
    let (status, view) = send(&pause, Some("text/plain"), "");
    assert_eq!((status, &view["paused"]), (200, &json!(true)), "{view}");
    // So for a route whose body is required.
    let group = r#"{"name":"w","min_size":0,"max_size":1,"launch":{"provider":"simulated"}}"#;
    assert_error(
        &send("/v1/groups", Some("text/plain"), group),
        415,
        "unsupported_media_type",
    );
    assert_eq!(send("/v1/groups", None, group).0, 201);
}
