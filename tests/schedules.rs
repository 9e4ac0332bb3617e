//! Scheduled actions over HTTP (SPEC 2.2), on the real server with the manual clock: an `at`
//! reached by moving the clock, a recurrence whose occurrences missed while the service was down
//! run once, pause, and the fields a bad schedule is refused for.

mod common;

use common::{assert_error, Server};
use serde_json::{json, Value};

/// An RFC 3339 instant `secs` from the server's now.
fn in_secs(server: &Server, secs: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs((server.now_secs() + secs) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn schedule(server: &Server, token: &str, group: &str, body: Value) -> (u16, Value) {
    server.call(
        "POST",
        &format!("/v1/groups/{group}/schedules"),
        token,
        Some(body),
    )
}

/// The group's scheduled runs, newest first.
fn runs(server: &Server, token: &str, group: &str) -> Vec<Value> {
    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{group}/activity?limit=1000"),
        token,
        None,
    );
    activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "schedule_ran")
        .cloned()
        .collect()
}

fn group_view(server: &Server, token: &str, group: &str) -> Value {
    server
        .call("GET", &format!("/v1/groups/{group}"), token, None)
        .1
}

#[test]
fn an_at_schedule_sets_bounds_and_capacity_when_the_clock_reaches_it_and_once() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 1, 10, 1, 300);
    let at = in_secs(&server, 120);
    let (status, created) = schedule(
        &server,
        &token,
        &group,
        json!({"name": "morning", "at": at, "min_size": 2, "desired_capacity": 5}),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["next_run"],
        json!(at.replace('Z', ".000Z")),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_owned();

    server.clock.advance_secs(119);
    server.tick();
    assert_eq!(server.capacity(&token, &group), 1, "not before its time");
    server.clock.advance_secs(1);
    server.tick();
    server.tick();
    let shown = group_view(&server, &token, &group);
    assert_eq!(
        (
            shown["min_size"].as_u64(),
            shown["desired_capacity"].as_u64()
        ),
        (Some(2), Some(5)),
        "{shown}"
    );
    let ran = runs(&server, &token, &group);
    assert_eq!(ran.len(), 1, "exactly once: {ran:?}");
    assert_eq!(ran[0]["schedule_id"], id.as_str());
    assert_eq!(
        (
            ran[0]["outcome"].as_str(),
            ran[0]["from"].as_u64(),
            ran[0]["to"].as_u64()
        ),
        (Some("executed"), Some(1), Some(5))
    );
    // The group's cooldown of 300 s was neither honoured nor started: a policy runs at once.
    let policy = server.policy(
        &token,
        &group,
        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
    );
    let (status, executed) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{policy}/execute"),
        &token,
        None,
    );
    assert_eq!(
        (status, executed["outcome"].as_str()),
        (202, Some("executed")),
        "{executed}"
    );

    let (_, shown) = server.call(
        "GET",
        &format!("/v1/groups/{group}/schedules/{id}"),
        &token,
        None,
    );
    assert_eq!(shown["next_run"], Value::Null);
    assert_eq!(shown["last_run"], json!(at.replace('Z', ".000Z")));
    let (_, list) = server.call(
        "GET",
        &format!("/v1/groups/{group}/schedules"),
        &token,
        None,
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[test]
fn the_latest_occurrence_missed_while_down_runs_once_when_back() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let (status, created) = schedule(
        &server,
        &token,
        &group,
        json!({"name": "every ten minutes", "recurrence": "*/10 * * * *",
            "time_zone": "Europe/Paris", "desired_capacity": 4}),
    );
    assert_eq!(status, 201, "{created}");
    assert!(created["next_run"].is_string(), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // Down for 35 minutes: three occurrences pass with no tick.
    let server = server.restart();
    server.clock.advance_secs(35 * 60);
    server.tick();
    server.tick();
    assert_eq!(server.capacity(&token, &group), 4);
    assert_eq!(runs(&server, &token, &group).len(), 1, "only the latest");
    // The operator moves it; the next occurrence sets it again.
    let (status, _) = server.call(
        "PATCH",
        &format!("/v1/groups/{group}"),
        &token,
        Some(json!({"desired_capacity": 2})),
    );
    assert_eq!(status, 200);
    server.clock.advance_secs(10 * 60);
    server.tick();
    assert_eq!(server.capacity(&token, &group), 4);
    assert_eq!(runs(&server, &token, &group).len(), 2);
    // Deleted, it runs no more.
    let (status, _) = server.call(
        "DELETE",
        &format!("/v1/groups/{group}/schedules/{id}"),
        &token,
        None,
    );
    assert_eq!(status, 204);
    server.clock.advance_secs(10 * 60);
    server.tick();
    assert_eq!(runs(&server, &token, &group).len(), 2);
    let answer = server.call(
        "GET",
        &format!("/v1/groups/{group}/schedules/{id}"),
        &token,
        None,
    );
    assert_error(&answer, 404, "not_found");
}

#[test]
fn a_changed_schedule_comes_back_changed_after_a_restart() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    // START_SECS is midnight: hourly on the hour, then moved to half past.
    let (status, created) = schedule(
        &server,
        &token,
        &group,
        json!({"name": "hourly", "recurrence": "0 * * * *", "desired_capacity": 3}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    server.clock.advance_secs(3600);
    server.tick();
    assert_eq!(runs(&server, &token, &group).len(), 1);
    let (status, patched) = server.call(
        "PATCH",
        &format!("/v1/groups/{group}/schedules/{id}"),
        &token,
        Some(json!({"recurrence": "30 * * * *", "desired_capacity": 4})),
    );
    assert_eq!(status, 200, "{patched}");
    server.tick();
    let server = server.restart();
    server.clock.advance_secs(30 * 60);
    server.tick();
    assert_eq!(
        server.capacity(&token, &group),
        4,
        "the new rule, after the restart"
    );
    assert_eq!(runs(&server, &token, &group).len(), 2);
    // On the hour nothing runs any more.
    server.clock.advance_secs(30 * 60);
    server.tick();
    assert_eq!(runs(&server, &token, &group).len(), 2);
}

#[test]
fn a_paused_group_records_the_occurrence_as_paused() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let (status, _) = schedule(
        &server,
        &token,
        &group,
        json!({"name": "up", "at": in_secs(&server, 60), "desired_capacity": 6, "max_size": 8}),
    );
    assert_eq!(status, 201);
    let (status, _) = server.call("POST", &format!("/v1/groups/{group}/pause"), &token, None);
    assert_eq!(status, 200);
    server.clock.advance_secs(60);
    server.tick();
    let ran = runs(&server, &token, &group);
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0]["outcome"], "paused");
    let shown = group_view(&server, &token, &group);
    assert_eq!(
        (
            shown["desired_capacity"].as_u64(),
            shown["max_size"].as_u64()
        ),
        (Some(1), Some(10))
    );
}

#[test]
fn bad_schedules_name_their_field() {
    let server = Server::start();
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let cases = [
        (
            json!({"name": "s", "recurrence": "0 0 9 * * *", "desired_capacity": 1}),
            "recurrence",
        ),
        (
            json!({"name": "s", "recurrence": "0 9 * * *", "time_zone": "Mars/Olympus", "desired_capacity": 1}),
            "time_zone",
        ),
        (
            json!({"name": "s", "recurrence": "0 9 * * *"}),
            "desired_capacity",
        ),
        (
            json!({"name": "s", "at": in_secs(&server, -60), "desired_capacity": 1}),
            "at",
        ),
        (
            json!({"name": "s", "at": "tomorrow", "desired_capacity": 1}),
            "at",
        ),
        (json!({"name": "s", "desired_capacity": 1}), "recurrence"),
        (
            json!({"name": "s", "at": in_secs(&server, 60), "min_size": 5, "max_size": 2}),
            "min_size",
        ),
        // Times no view could write in RFC 3339 (an earlier build took them, then failed every
        // list of the group's schedules, and its console page).
        (
            json!({"name": "s", "recurrence": "0 0 * * *", "start_time": "1969-12-31T23:59:59Z", "min_size": 1}),
            "start_time",
        ),
        (
            json!({"name": "s", "at": "9999-12-31T23:59:59-23:59", "desired_capacity": 1}),
            "at",
        ),
        (
            json!({"name": "s", "recurrence": "0 0 * * *", "end_time": "9999-12-31T23:59:59-01:00", "min_size": 1}),
            "end_time",
        ),
    ];
    for (body, field) in cases {
        let answer = schedule(&server, &token, &group, body.clone());
        assert_error(&answer, 400, "invalid_input");
        let message = answer.1["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(&format!("invalid {field}:")),
            "{body}: {message}"
        );
    }
    // Another tenant's group, or a schedule under another group: 404.
    let other = server.tenant("other");
    let answer = schedule(
        &server,
        &other,
        &group,
        json!({"name": "s", "recurrence": "0 9 * * *", "desired_capacity": 1}),
    );
    assert_error(&answer, 404, "not_found");
}
