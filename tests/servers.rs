//! Convergence through real providers (SPEC 6): `process` groups of real `sleep` processes,
//! an `http` orchestrator on loopback that verifies Flotilla's signatures, and a `simulated`
//! group of 1,000 servers. The converger ticks when a test says so; backoffs and start latencies
//! run on the service's manual clock.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_error, Server};
use serde_json::{json, Value};

fn server() -> Server {
    Server::start_with(|s| s.allow_process_provider = true)
}

/// Ticks until `check` holds. Between ticks it gives the operating system a moment (a real
/// process starting or dying, the loopback orchestrator answering), which no tick can hasten; at
/// most 30 s of that.
fn converge_until(server: &Server, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        server.tick();
        if !check() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `n` ticks of every loop, the clock standing still.
fn ticks(server: &Server, n: usize) {
    for _ in 0..n {
        server.tick();
    }
}

fn create(server: &Server, token: &str, desired: u32, launch: Value) -> String {
    let (status, body) = server.call(
        "POST",
        "/v1/groups",
        token,
        Some(
            json!({"name": "web", "min_size": 0, "max_size": 1000, "desired_capacity": desired,
                    "cooldown_seconds": 0, "launch": launch}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn servers(server: &Server, token: &str, group: &str) -> Vec<Value> {
    let (status, body) = server.call(
        "GET",
        &format!("/v1/groups/{group}/servers?limit=1000"),
        token,
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

fn active(server: &Server, token: &str, group: &str) -> Vec<Value> {
    servers(server, token, group)
        .into_iter()
        .filter(|s| s["state"] == "active")
        .collect()
}

fn set_desired(server: &Server, token: &str, group: &str, to: i64) {
    let policy = server.policy(
        token,
        group,
        json!({"name": format!("to-{to}"), "adjustment_type": "exact", "adjustment": to}),
    );
    let (status, body) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{policy}/execute"),
        token,
        None,
    );
    assert_eq!(status, 202, "{body}");
}

/// The group's activity items (up to 1,000) of type `kind`.
fn activity_of(server: &Server, token: &str, group: &str, kind: &str) -> Vec<Value> {
    let path = format!("/v1/groups/{group}/activity?limit=1000");
    let (status, activity) = server.call("GET", &path, token, None);
    assert_eq!(status, 200, "{activity}");
    let items = activity["items"].as_array().unwrap().iter();
    items.filter(|i| i["type"] == kind).cloned().collect()
}

fn pid_of(server: &Value) -> u32 {
    server["provider"]["pid"].as_u64().unwrap() as u32
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

/// The pids of running processes with `FLOTILLA_GROUP_ID=<group>` in their environment.
fn processes_of(group: &str) -> Vec<u32> {
    let needle = format!("FLOTILLA_GROUP_ID={group}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            alive(*pid)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn sleep_launch() -> Value {
    json!({"provider": "process", "command": ["sleep", "1000"], "env": {"ROLE": "web"}, "grace_seconds": 5})
}

#[test]
fn a_process_group_reaches_capacity_replaces_a_killed_process_and_scales_to_zero_cleanly() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(&server, &token, 3, sleep_launch());
    converge_until(&server, "3 active", || {
        active(&server, &token, &group).len() == 3
    });
    let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
    assert_eq!(
        (view["active"].as_u64(), view["pending"].as_u64()),
        (Some(3), Some(0))
    );
    let first = active(&server, &token, &group);
    for s in &first {
        assert!(alive(pid_of(s)), "{s}");
        assert!(s["provider"]["start_time"].as_u64().is_some(), "{s}");
    }
    assert_eq!(processes_of(&group).len(), 3);
    let env = std::fs::read(format!("/proc/{}/environ", pid_of(&first[0]))).unwrap();
    let env = String::from_utf8_lossy(&env);
    for var in [
        "FLOTILLA_SERVER_ID=",
        "FLOTILLA_METRICS_URL=http://",
        "FLOTILLA_METRICS_TOKEN=flo_mt_",
        "ROLE=web",
    ] {
        assert!(env.contains(var), "{var} missing");
    }
    // The per-server metrics token is accepted by POST /v1/metrics for its group.
    let metrics_token = env
        .split('\0')
        .find_map(|v| v.strip_prefix("FLOTILLA_METRICS_TOKEN="))
        .unwrap()
        .to_owned();
    let (status, body) = server.call(
        "POST",
        "/v1/metrics",
        &metrics_token,
        Some(json!({"samples": [{"metric": "cpu", "value": 0.5, "timestamp": server.now_secs() as f64}]})),
    );
    assert_eq!(status, 202, "{body}");

    // A killed process is a failed server, replaced after its backoff (1 s of the clock).
    let victim = first[0].clone();
    kill(pid_of(&victim));
    converge_until(&server, "the failure recorded", || {
        servers(&server, &token, &group)
            .iter()
            .any(|s| s["id"] == victim["id"] && s["state"] == "failed")
    });
    server.clock.advance_secs(1);
    converge_until(&server, "3 active again", || {
        let now = active(&server, &token, &group);
        now.len() == 3 && now.iter().all(|s| pid_of(s) != pid_of(&victim))
    });
    assert_eq!(processes_of(&group).len(), 3);

    // Scaling to zero leaves no process behind.
    let pids: Vec<u32> = active(&server, &token, &group).iter().map(pid_of).collect();
    set_desired(&server, &token, &group, 0);
    converge_until(&server, "no servers", || {
        servers(&server, &token, &group).is_empty()
    });
    converge_until(&server, "no processes", || pids.iter().all(|p| !alive(*p)));
    assert!(processes_of(&group).is_empty());

    // The activity shows each step.
    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{group}/activity?limit=1000"),
        &token,
        None,
    );
    let types: Vec<&str> = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["type"].as_str())
        .collect();
    for kind in [
        "server_launch_requested",
        "server_launched",
        "server_active",
        "server_failed",
        "server_delete_requested",
        "server_deleted",
    ] {
        assert!(types.contains(&kind), "{kind} missing from {types:?}");
    }
}

#[test]
fn a_restart_of_flotilla_adopts_its_running_processes_without_duplicating_them() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(&server, &token, 2, sleep_launch());
    converge_until(&server, "2 active", || {
        active(&server, &token, &group).len() == 2
    });
    let before: Vec<u32> = active(&server, &token, &group).iter().map(pid_of).collect();
    let server = server.restart();
    // Many passes of the converger after the restart.
    ticks(&server, 20);
    let after: Vec<u32> = active(&server, &token, &group).iter().map(pid_of).collect();
    assert_eq!(after, before);
    let mut running = processes_of(&group);
    running.sort();
    let mut expected = before.clone();
    expected.sort();
    assert_eq!(running, expected, "no duplicate, no orphan");
    // An adopted server's own metrics token still works after the restart.
    let env = std::fs::read(format!("/proc/{}/environ", before[0])).unwrap();
    let env = String::from_utf8_lossy(&env);
    let metrics_token = env
        .split('\0')
        .find_map(|v| v.strip_prefix("FLOTILLA_METRICS_TOKEN="))
        .unwrap()
        .to_owned();
    let samples = json!({"samples": [{"metric": "cpu", "value": 0.5, "timestamp": server.now_secs() as f64}]});
    let (status, body) = server.call("POST", "/v1/metrics", &metrics_token, Some(samples));
    assert_eq!(status, 202, "{body}");
    // Forced deletion removes them.
    let (status, body) = server.call(
        "DELETE",
        &format!("/v1/groups/{group}?force=true"),
        &token,
        None,
    );
    assert_eq!(status, 204, "{body}");
    converge_until(&server, "no processes", || processes_of(&group).is_empty());
}

#[test]
fn a_command_that_cannot_start_is_retried_with_backoff_and_its_failures_reported() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(
        &server,
        &token,
        1,
        json!({"provider": "process", "command": ["/nonexistent"]}),
    );
    let failures = |server: &Server| -> u64 {
        servers(server, &token, &group)
            .first()
            .and_then(|s| s["failures"].as_u64())
            .unwrap_or(0)
    };
    converge_until(&server, "a first failure", || failures(&server) == 1);
    let only = servers(&server, &token, &group)[0].clone();
    assert_eq!(only["state"], "failed");
    assert!(
        only["last_failure"]
            .as_str()
            .unwrap()
            .contains("/nonexistent"),
        "{only}"
    );
    // Without a clock advance nothing is retried, however many ticks pass.
    ticks(&server, 20);
    assert_eq!(failures(&server), 1);
    // Backoffs 1, 2, 4, 8 s: over 15 s of the clock there are 4 more attempts, not hundreds.
    for _ in 0..15 {
        server.clock.advance_secs(1);
        server.tick();
    }
    converge_until(&server, "5 failures", || failures(&server) == 5);
    ticks(&server, 10);
    assert_eq!(failures(&server), 5);
    let failed = activity_of(&server, &token, &group, "server_failed");
    assert_eq!(failed.len(), 5);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot start"),
        "{}",
        failed[0]
    );
}

#[test]
fn a_group_with_servers_is_deleted_only_with_force() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(&server, &token, 2, json!({"provider": "simulated"}));
    converge_until(&server, "2 active", || {
        active(&server, &token, &group).len() == 2
    });
    let answer = server.call("DELETE", &format!("/v1/groups/{group}"), &token, None);
    assert_error(&answer, 409, "conflict");
    let (status, _) = server.call(
        "DELETE",
        &format!("/v1/groups/{group}?force=true"),
        &token,
        None,
    );
    assert_eq!(status, 204);
    let (status, _) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
    assert_eq!(status, 404);
}

/// A server that ignores SIGTERM for `grace_seconds`, and leaves a mark in `marks` when it is
/// asked to stop.
/// Kills a group's processes when dropped, whether the test passed or not: servers outlive
/// the service, as real ones would, and a stubborn one forks `sleep` 20 times a second.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in processes_of(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

fn stubborn_launch(marks: &std::path::Path, grace_seconds: u64) -> Value {
    json!({"provider": "process",
           "command": ["sh", "-c", "trap 'touch \"$MARKS/$FLOTILLA_SERVER_ID\"' TERM; while :; do sleep 0.05; done"],
           "env": {"MARKS": marks.to_str().unwrap()}, "grace_seconds": grace_seconds})
}

/// Waits for the operating system (signals reaching real processes) until `check` holds, at
/// most 10 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn servers_slow_to_stop_are_deleted_at_once_and_never_delay_launches() {
    let server = server();
    let token = server.tenant("acme");
    let marks = tempfile::tempdir().unwrap();
    let group = create(&server, &token, 3, stubborn_launch(marks.path(), 30));
    let _reaper = KillOnDrop(group.clone());
    converge_until(&server, "3 active", || {
        active(&server, &token, &group).len() == 3
    });
    let old = active(&server, &token, &group);

    // One pass asks all three to stop, and ends without waiting for them.
    set_desired(&server, &token, &group, 0);
    server.tick();
    wait_for("every server asked to stop", || {
        old.iter()
            .all(|s| marks.path().join(s["id"].as_str().unwrap()).exists())
    });

    // While they ignore SIGTERM, the group launches again.
    set_desired(&server, &token, &group, 2);
    converge_until(&server, "2 new servers active", || {
        active(&server, &token, &group).len() == 2
    });
    let now = servers(&server, &token, &group);
    for s in &old {
        let listed = now.iter().find(|n| n["id"] == s["id"]).unwrap();
        assert_eq!(listed["state"], "deleting", "{listed}");
    }

    // Each deletion is recorded once its server is gone.
    for s in &old {
        kill(pid_of(s));
    }
    converge_until(&server, "the old servers deleted", || {
        servers(&server, &token, &group).len() == 2
    });
}

#[test]
fn a_forced_group_deletion_stops_servers_slow_to_stop_together() {
    let server = server();
    let token = server.tenant("acme");
    let marks = tempfile::tempdir().unwrap();
    let group = create(&server, &token, 4, stubborn_launch(marks.path(), 1));
    let _reaper = KillOnDrop(group.clone());
    converge_until(&server, "4 active", || {
        active(&server, &token, &group).len() == 4
    });
    let pids: Vec<u32> = active(&server, &token, &group).iter().map(pid_of).collect();
    let (status, body) = server.call(
        "DELETE",
        &format!("/v1/groups/{group}?force=true"),
        &token,
        None,
    );
    assert_eq!(status, 204, "{body}");
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "a server outlived its group"
    );
    assert_eq!(std::fs::read_dir(marks.path()).unwrap().count(), 4);
}

#[test]
fn a_forced_group_deletion_answers_409_rather_than_wait_out_a_long_grace() {
    let server = server();
    let token = server.tenant("acme");
    let marks = tempfile::tempdir().unwrap();
    let group = create(&server, &token, 1, stubborn_launch(marks.path(), 600));
    let _reaper = KillOnDrop(group.clone());
    converge_until(&server, "1 active", || {
        active(&server, &token, &group).len() == 1
    });
    let pid = pid_of(&active(&server, &token, &group)[0]);
    let up = json!({"name": "up", "adjustment_type": "change", "adjustment": 1});
    let policy = server.policy(&token, &group, up);
    let hook = server.webhook(&token, &group, &policy);
    let alarm = json!({"name": "cpu-high", "group_id": group, "metric": "cpu",
        "statistic": "avg", "period_seconds": 60, "evaluation_periods": 1,
        "comparison": "gt", "threshold": 0.8, "alarm_actions": [policy]});
    let (status, alarm) = server.call("POST", "/v1/alarms", &token, Some(alarm));
    assert_eq!(status, 201, "{alarm}");
    let path = format!("/v1/groups/{group}?force=true");
    let busy = server.call("DELETE", &path, &token, None);
    assert_error(&busy, 409, "conflict");
    // The group says it drains, and what it is deleting.
    let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
    assert_eq!(
        (&view["draining"], &view["deleting"], &view["active"]),
        (&json!(true), &json!(1), &json!(0)),
        "{view}"
    );
    // So does the console, on the group's row and on its page.
    let stopping = "Being deleted: 1 server still stopping";
    let list = server.console_page(&token, "/");
    assert!(list.contains(stopping), "{list}");
    let page = server.console_page(&token, &format!("/console/groups/{group}"));
    assert!(page.contains(stopping), "{page}");
    assert!(page.contains(r#"<dd id="deleting">1</dd>"#), "{page}");
    // It offers no change that would take effect nowhere, and the API refuses one.
    assert!(!page.contains(r#"id="set-desired""#), "{page}");
    let patch = json!({"desired_capacity": 2});
    let refused = server.call("PATCH", &format!("/v1/groups/{group}"), &token, Some(patch));
    assert_error(&refused, 409, "conflict");
    // Nor do its policies execute, by webhook or on demand; nothing of either is recorded.
    let now = server.now_secs();
    let hooked = server.send_hook(&hook, &hook.secret, "n-1", now, b"{}");
    assert_error(&hooked, 409, "conflict");
    // Its nonce was not recorded: the same call is refused for the group again, not replayed.
    let again = server.send_hook(&hook, &hook.secret, "n-1", now, b"{}");
    assert_error(&again, 409, "conflict");
    let execute = format!("/v1/groups/{group}/policies/{policy}/execute");
    let executed = server.call("POST", &execute, &token, None);
    assert_error(&executed, 409, "conflict");
    // An alarm that goes into ALARM takes its action once, recorded as taken, executing
    // nothing.
    let alarm = format!("/v1/alarms/{}", alarm["id"].as_str().unwrap());
    for _ in 0..3 {
        let t = server.now_secs();
        let sample = json!({"samples": [{"metric": "cpu", "value": 0.95, "timestamp": t,
                                         "group_id": group}]});
        let (status, body) = server.call("POST", "/v1/metrics", &token, Some(sample));
        assert_eq!(status, 202, "{body}");
        server.clock.advance_secs(60);
        server.tick();
    }
    let (_, state) = server.call("GET", &alarm, &token, None);
    assert_eq!(state["state"], "alarm", "{state}");
    let journal = server.journal_export();
    let taken = journal.lines().filter(|l| l.contains("\"action_taken\""));
    assert_eq!(taken.count(), 1, "{journal}");
    assert!(
        !journal.contains("policy_executed"),
        "an execution was recorded"
    );
    // Once its server is gone, the same call deletes the group.
    kill(pid);
    converge_until(&server, "the server deleted", || {
        servers(&server, &token, &group).is_empty()
    });
    let (status, body) = server.call("DELETE", &path, &token, None);
    assert_eq!(status, 204, "{body}");
}

#[test]
fn a_simulated_group_of_1000_servers_converges_after_its_start_latency() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(
        &server,
        &token,
        1000,
        json!({"provider": "simulated", "start_seconds": 30}),
    );
    converge_until(&server, "1000 pending", || {
        let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
        view["pending"] == 1000
    });
    ticks(&server, 3);
    let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
    assert_eq!(view["active"], 0, "not before start_seconds of the clock");
    server.clock.advance_secs(30);
    converge_until(&server, "1000 active", || {
        let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
        view["active"] == 1000
    });
    // Scale-in removes pending before active, then the oldest first: here all are active.
    set_desired(&server, &token, &group, 10);
    converge_until(&server, "10 left", || {
        servers(&server, &token, &group).len() == 10
    });
}

#[test]
fn a_pass_launches_at_most_1000_servers_of_a_group() {
    let server = server();
    let token = server.tenant("acme");
    let (status, body) = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(
            json!({"name": "big", "min_size": 0, "max_size": 2500, "desired_capacity": 2500,
            "launch": {"provider": "simulated", "start_seconds": 60}}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_str().unwrap().to_owned();
    let pending = || {
        let (_, view) = server.call("GET", &format!("/v1/groups/{group}"), &token, None);
        view["pending"].as_u64().unwrap()
    };
    for expected in [1000, 2000, 2500, 2500] {
        server.tick();
        assert_eq!(pending(), expected);
    }
}

#[test]
fn a_simulated_failure_rate_fails_some_launches_and_they_are_replaced() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(
        &server,
        &token,
        50,
        json!({"provider": "simulated", "failure_rate": 0.3, "seed": 7}),
    );
    converge_until(&server, "some failed", || {
        servers(&server, &token, &group)
            .iter()
            .any(|s| s["state"] == "failed")
    });
    for _ in 0..40 {
        server.clock.advance_secs(10);
        server.tick();
    }
    converge_until(&server, "50 active", || {
        active(&server, &token, &group).len() == 50
    });
}

/// A tiny orchestrator: verifies each request's Standard Webhooks signature, answers creates
/// with an id (or, from `fail_from`, a 500 / a stall), deletes with 204, statuses with running.
struct Orchestrator {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    bad_signatures: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Error,
    Stall,
    /// A create answered with a handle over what the journal takes.
    Huge,
    /// A create answered with a handle 101 levels deep, within what serde_json reads.
    Deep,
    /// Status requests wait for the mode to change before they are answered.
    HoldStatus,
    /// Creates wait for the mode to change before they are answered.
    HoldCreate,
    /// Status requests are answered 503.
    StatusError,
    /// Status requests are answered 400.
    StatusRefused,
    /// Creates are refused with 422.
    Reject,
    /// Creates are answered 429: too many.
    Busy,
    /// Every server has exited, and deletes are answered 503.
    ExitedUndeletable,
    /// The newest server's status is answered 503; the others have exited.
    SickNewest,
    /// Creates are answered at once, their body one byte every 50 ms.
    Trickle,
    /// Deletes are refused with 403.
    Undeletable,
    /// Every server's status is `pending`: neither running nor exited (an image that never
    /// pulls).
    Starting,
    /// As `Starting`, and deletes are refused with 403.
    StartingUndeletable,
}

fn orchestrator(secret: &str, mode: Arc<Mutex<Mode>>) -> Orchestrator {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/servers", listener.local_addr().unwrap());
    let requests: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let bad_signatures = Arc::new(AtomicUsize::new(0));
    let key = flotilla::signature::key_of(secret).unwrap();
    let (seen, bad) = (requests.clone(), bad_signatures.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (key, seen, bad, mode) = (key.clone(), seen.clone(), bad.clone(), mode.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = std::collections::HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap();
                    headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
                }
                let length: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let expected = flotilla::signature::sign(
                    &key,
                    &headers["webhook-id"],
                    headers["webhook-timestamp"].parse().unwrap(),
                    &body,
                );
                if headers["webhook-signature"] != expected {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                let request: Value = serde_json::from_slice(&body).unwrap();
                let mut kept = request.clone();
                kept["_webhook_id"] = json!(headers["webhook-id"]);
                let newest = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .find(|r| r["action"] == "create")
                    .map(|r| format!("vm-{}", r["server_id"].as_str().unwrap()));
                seen.lock().unwrap().push(kept);
                let now = *mode.lock().unwrap();
                let (status, answer) = match (request["action"].as_str().unwrap(), now) {
                    ("create", Mode::Error) => (
                        "500 Internal Server Error",
                        json!({"error": "quota exceeded"}),
                    ),
                    ("create", Mode::Busy) => {
                        ("429 Too Many Requests", json!({"error": "slow down"}))
                    }
                    ("create", Mode::Reject) => (
                        "422 Unprocessable Entity",
                        json!({"error": "no such flavor"}),
                    ),
                    ("create", Mode::Huge) => (
                        "201 Created",
                        json!({"id": format!("vm-{}", request["server_id"].as_str().unwrap()),
                               "pad": "x".repeat(100_000)}),
                    ),
                    ("create", Mode::Deep) => {
                        let deep: Value = serde_json::from_str(&format!(
                            "{}{}",
                            "[".repeat(100),
                            "]".repeat(100)
                        ))
                        .unwrap();
                        let id = format!("vm-{}", request["server_id"].as_str().unwrap());
                        ("201 Created", json!({"id": id, "deep": deep}))
                    }
                    ("create", Mode::HoldCreate) => {
                        // Until the test lets go: an orchestrator slow to make a server.
                        while *mode.lock().unwrap() == Mode::HoldCreate {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        let id = format!("vm-{}", request["server_id"].as_str().unwrap());
                        ("201 Created", json!({"id": id}))
                    }
                    ("create", Mode::Stall) => {
                        std::thread::sleep(Duration::from_secs(2));
                        ("200 OK", json!({"id": "late"}))
                    }
                    ("create", _) => (
                        "201 Created",
                        json!({"id": format!("vm-{}", request["server_id"].as_str().unwrap())}),
                    ),
                    ("delete", Mode::ExitedUndeletable) => {
                        ("503 Service Unavailable", json!({"error": "busy"}))
                    }
                    ("delete", Mode::Undeletable | Mode::StartingUndeletable) => {
                        ("403 Forbidden", json!({"error": "not yours to delete"}))
                    }
                    ("delete", _) => ("200 OK", json!({})),
                    ("status", Mode::StatusError) => {
                        ("503 Service Unavailable", json!({"error": "busy"}))
                    }
                    ("status", Mode::ExitedUndeletable) => ("200 OK", json!({"status": "exited"})),
                    ("status", Mode::SickNewest) => {
                        if request["handle"]["id"].as_str() == newest.as_deref() {
                            ("503 Service Unavailable", json!({"error": "busy"}))
                        } else {
                            ("200 OK", json!({"status": "exited"}))
                        }
                    }
                    ("status", Mode::Starting | Mode::StartingUndeletable) => {
                        ("200 OK", json!({"status": "pending"}))
                    }
                    ("status", Mode::StatusRefused) => {
                        ("400 Bad Request", json!({"error": "no such handle"}))
                    }
                    ("status", Mode::HoldStatus) => {
                        // Until the test lets go: a real orchestrator slow to answer.
                        while *mode.lock().unwrap() == Mode::HoldStatus {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        ("200 OK", json!({"status": "running"}))
                    }
                    _ => ("200 OK", json!({"status": "running"})),
                };
                let answer = answer.to_string();
                if now == Mode::Trickle && request["action"] == "create" {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        answer.len()
                    );
                    for byte in answer.as_bytes() {
                        // The fake orchestrator's own pace, not a wait of the test's.
                        std::thread::sleep(Duration::from_millis(50));
                        if stream
                            .write_all(&[*byte])
                            .and_then(|()| stream.flush())
                            .is_err()
                        {
                            return;
                        }
                    }
                    return;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    Orchestrator {
        url,
        requests,
        bad_signatures,
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A tenant's token on `server`, an orchestrator starting in `mode`, and a launch
/// configuration on it with `fields` besides its URL and secret.
fn on_orchestrator(
    mode: Mode,
    server: Server,
    fields: Value,
) -> (Arc<Mutex<Mode>>, Orchestrator, Server, String, Value) {
    let mode = Arc::new(Mutex::new(mode));
    let orchestrator = orchestrator(SECRET, mode.clone());
    let token = server.tenant("acme");
    let mut launch = json!({"provider": "http", "url": orchestrator.url, "secret": SECRET});
    if let (Some(launch), Value::Object(fields)) = (launch.as_object_mut(), fields) {
        launch.extend(fields);
    }
    (mode, orchestrator, server, token, launch)
}

#[test]
fn a_delete_the_orchestrator_refuses_is_recorded_with_its_reason_and_tried_again_after_a_backoff() {
    // A probe's stuck deletion said nothing of why, and was asked again at every pass.
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(Mode::Ok, server(), json!({"retries": 0}));
    let group = create(&server, &token, 1, launch);
    converge_until(&server, "1 active", || {
        active(&server, &token, &group).len() == 1
    });
    *mode.lock().unwrap() = Mode::Undeletable;
    set_desired(&server, &token, &group, 0);
    let refused = || servers(&server, &token, &group)[0]["last_failure"].clone();
    converge_until(&server, "a refused delete", || !refused().is_null());
    let deleting = &servers(&server, &token, &group)[0];
    assert_eq!(deleting["state"], "deleting", "{deleting}");
    assert_eq!(
        deleting["last_failure"],
        "delete failed: orchestrator answered 403"
    );
    let failed_deletes = || activity_of(&server, &token, &group, "server_delete_failed").len();
    assert_eq!(failed_deletes(), 1);
    // A forced deletion that cannot finish says why.
    let path = format!("/v1/groups/{group}?force=true");
    let busy = server.call("DELETE", &path, &token, None);
    assert_error(&busy, 409, "conflict");
    let message = busy.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("orchestrator answered 403"), "{message}");
    // Not asked again until its backoff (1 s of the clock, then 2 s) has run out. (A forced
    // deletion waits for the deletions its passes start: what the ticks started has ended.)
    ticks(&server, 3);
    assert_error(&server.call("DELETE", &path, &token, None), 409, "conflict");
    assert_eq!(count(&orchestrator, "delete"), 1);
    server.clock.advance_secs(1);
    converge_until(&server, "a second delete", || {
        count(&orchestrator, "delete") == 2
    });
    // Its failure recorded (at 1 s of the clock) before the clock moves on.
    converge_until(&server, "the second failure", || failed_deletes() == 2);
    *mode.lock().unwrap() = Mode::Ok;
    ticks(&server, 3);
    assert_error(&server.call("DELETE", &path, &token, None), 409, "conflict");
    assert_eq!(count(&orchestrator, "delete"), 2);
    server.clock.advance_secs(2);
    converge_until(&server, "the server deleted", || {
        servers(&server, &token, &group).is_empty()
    });
}

#[test]
fn a_server_that_never_starts_fails_after_its_start_timeout_and_its_slot_launches_again() {
    // A probe's orchestrator answered "pending" for ever: the server stayed pending, asked
    // about at every pass, its slot never replaced.
    let fields = json!({"retries": 0, "start_timeout_seconds": 60});
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(Mode::Starting, server(), fields);
    let group = create(&server, &token, 1, launch);
    converge_until(&server, "a launch", || count(&orchestrator, "create") == 1);
    handle_recorded(&server, &token, &group);
    let only = || servers(&server, &token, &group)[0].clone();
    server.clock.advance_secs(59);
    let asked = count(&orchestrator, "status");
    ticks(&server, 3);
    assert_eq!(only()["state"], "pending", "{}", only());
    assert_eq!(
        count(&orchestrator, "status"),
        asked + 3,
        "asked at every pass"
    );
    // Past its timeout while the orchestrator cannot be reached, nothing is decided of it.
    *mode.lock().unwrap() = Mode::StatusError;
    server.clock.advance_secs(1);
    ticks(&server, 3);
    assert_eq!(only()["state"], "pending", "{}", only());
    // Asked once more, and still not running, it fails.
    *mode.lock().unwrap() = Mode::Starting;
    converge_until(&server, "its failure", || only()["state"] == "failed");
    assert_eq!(
        only()["last_failure"],
        "not running 60 s after the provider made it (launch.start_timeout_seconds)"
    );
    let asked = count(&orchestrator, "status");
    ticks(&server, 3);
    assert_eq!(
        count(&orchestrator, "status"),
        asked,
        "a failed server is not asked about"
    );
    // Once its backoff ran out, its remains are deleted and its slot launched again.
    *mode.lock().unwrap() = Mode::Ok;
    server.clock.advance_secs(1);
    converge_until(&server, "active again", || only()["state"] == "active");
    assert_eq!(count(&orchestrator, "delete"), 1);
    assert_eq!(count(&orchestrator, "create"), 2);
    let failed = activity_of(&server, &token, &group, "server_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["server_id"], only()["id"], "{failed:?}");

    // One that runs by the time it is asked past its timeout is active, not failed.
    *mode.lock().unwrap() = Mode::Starting;
    let late = create(
        &server,
        &token,
        1,
        on_orchestrator_launch(&orchestrator, 60),
    );
    handle_recorded(&server, &token, &late);
    server.clock.advance_secs(61);
    *mode.lock().unwrap() = Mode::Ok;
    converge_until(&server, "late but active", || {
        active(&server, &token, &late).len() == 1
    });
    assert!(activity_of(&server, &token, &late, "server_failed").is_empty());
}

/// Converges until the group's first server has the orchestrator's handle.
fn handle_recorded(server: &Server, token: &str, group: &str) {
    converge_until(server, "its handle recorded", || {
        let servers = servers(server, token, group);
        servers
            .first()
            .is_some_and(|s| s["provider"]["id"].is_string())
    });
}

/// A launch on `orchestrator` with a start timeout of `seconds`.
fn on_orchestrator_launch(orchestrator: &Orchestrator, seconds: u64) -> Value {
    json!({"provider": "http", "url": orchestrator.url, "secret": SECRET, "retries": 0,
           "start_timeout_seconds": seconds})
}

#[test]
fn a_failed_servers_remains_the_orchestrator_will_not_delete_are_recorded_and_back_off() {
    // A probe's orchestrator refused to delete a timed-out server's remains: the deletion was
    // asked again at every pass, logged and recorded nowhere.
    let fields = json!({"retries": 0, "start_timeout_seconds": 60});
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(Mode::StartingUndeletable, server(), fields);
    let group = create(&server, &token, 1, launch);
    handle_recorded(&server, &token, &group);
    let only = || servers(&server, &token, &group)[0].clone();
    server.clock.advance_secs(60);
    converge_until(&server, "its failure", || only()["state"] == "failed");
    // Its relaunch is due 1 s later; its remains' deletion is refused, and recorded.
    server.clock.advance_secs(1);
    let refused = || activity_of(&server, &token, &group, "server_delete_failed").len();
    converge_until(&server, "a refused deletion", || refused() == 1);
    assert_eq!(only()["state"], "failed", "{}", only());
    assert_eq!(
        only()["last_failure"],
        "delete failed: orchestrator answered 403"
    );
    // Not asked again at every pass, but after the backoff (1 s, then 2 s).
    ticks(&server, 3);
    assert_eq!(count(&orchestrator, "delete"), 1);
    server.clock.advance_secs(1);
    converge_until(&server, "a second refusal", || refused() == 2);
    ticks(&server, 3);
    assert_eq!(count(&orchestrator, "delete"), 2);
    // Deleted at last, the slot launches again with nothing left behind.
    *mode.lock().unwrap() = Mode::Ok;
    server.clock.advance_secs(2);
    converge_until(&server, "active again", || only()["state"] == "active");
    assert_eq!(count(&orchestrator, "delete"), 3);
    assert_eq!(count(&orchestrator, "create"), 2);
    assert_eq!(refused(), 2);
}

#[test]
fn a_server_whose_create_took_longer_than_its_start_timeout_is_timed_from_its_making() {
    // A probe's orchestrator took 3 s to answer each create, with a start timeout of 2 s: each
    // server failed before it was asked about once, and its slot launched again for ever.
    let fields = json!({"retries": 0, "timeout_ms": 60_000, "start_timeout_seconds": 60});
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(Mode::HoldCreate, server(), fields);
    let group = create(&server, &token, 1, launch);
    let ticking = std::thread::spawn({
        let ticks = server.ticks.clone();
        move || ticks.tick()
    });
    wait_for("the create", || count(&orchestrator, "create") == 1);
    // Made 120 s of the clock after its launch was asked.
    server.clock.advance_secs(120);
    *mode.lock().unwrap() = Mode::Ok;
    ticking.join().unwrap();
    converge_until(&server, "1 active", || {
        active(&server, &token, &group).len() == 1
    });
    assert!(activity_of(&server, &token, &group, "server_failed").is_empty());
    assert_eq!(count(&orchestrator, "create"), 1);
}

#[test]
fn an_answer_that_trickles_in_times_out_as_one_that_never_comes() {
    // A probe's orchestrator sent its answer a byte at a time: with timeout_ms 2000, the
    // launch waited 102 s, holding a provider thread.
    let (_mode, _orchestrator, server, token, launch) = on_orchestrator(
        Mode::Trickle,
        server(),
        json!({"timeout_ms": 300, "retries": 0}),
    );
    let group = create(&server, &token, 1, launch);
    converge_until(&server, "a failed launch", || {
        servers(&server, &token, &group)
            .iter()
            .any(|s| s["state"] != "pending")
    });
    let failed = &servers(&server, &token, &group)[0];
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["last_failure"].as_str().unwrap();
    assert!(reason.contains("timed out after 300 ms"), "{reason}");
}

#[test]
fn a_server_whose_handle_the_journal_would_refuse_is_deleted_not_left_running() {
    // A probe's orchestrator answered creates with 3 MB: each append of the launch failed, the
    // actor restarted, and every server the orchestrator had made was left, recorded nowhere.
    unkept_handle(Mode::Huge, "bytes of JSON");
}

#[test]
fn a_server_whose_handle_the_journal_could_not_read_back_is_deleted_not_recorded() {
    // Another probe's orchestrator answered 127 levels deep: read within serde_json's limit of
    // 128, the handle was recorded a level or two deeper, and the group's stream no longer
    // replayed (every call on it 503, `flotilla replay` refused the whole journal).
    // Refused well short of that: at 101 here (the delete that follows is read by this fake
    // orchestrator within the same limit).
    unkept_handle(Mode::Deep, "101 levels deep, over 32");
}

/// A create answered in `mode` with a handle the journal cannot keep: the launch fails with a
/// reason that says `why`, the server made is deleted, and an answer kept then launches it.
fn unkept_handle(mode: Mode, why: &str) {
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(mode, server(), json!({"timeout_ms": 2000, "retries": 0}));
    let group = create(&server, &token, 1, launch);
    converge_until(&server, "a failed launch", || {
        servers(&server, &token, &group)
            .iter()
            .any(|s| s["state"] == "failed")
    });
    let failed = servers(&server, &token, &group);
    let reason = failed[0]["last_failure"].as_str().unwrap();
    assert!(
        reason.contains(why) && reason.contains("its server was deleted"),
        "{reason}"
    );
    let requests = orchestrator.requests.lock().unwrap().clone();
    let created: Vec<&Value> = requests
        .iter()
        .filter(|r| r["action"] == "create")
        .collect();
    let deleted: Vec<&Value> = requests
        .iter()
        .filter(|r| r["action"] == "delete")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(deleted.len(), 1, "{requests:?}");
    let made = format!("vm-{}", created[0]["server_id"].as_str().unwrap());
    assert_eq!(deleted[0]["handle"]["id"], made.as_str());
    // An answer of the right size then launches it.
    *mode.lock().unwrap() = Mode::Ok;
    server.clock.advance_secs(2);
    converge_until(&server, "1 active", || {
        active(&server, &token, &group).len() == 1
    });
}

#[test]
fn the_http_provider_sends_signed_requests_and_surfaces_errors_and_timeouts_as_failed_launches() {
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(Mode::Ok, server(), json!({"timeout_ms": 300, "retries": 2}));
    let group = create(&server, &token, 2, launch);
    converge_until(&server, "2 active", || {
        active(&server, &token, &group).len() == 2
    });
    let handles: Vec<Value> = active(&server, &token, &group)
        .iter()
        .map(|s| s["provider"].clone())
        .collect();
    assert!(
        handles
            .iter()
            .all(|h| h["id"].as_str().unwrap().starts_with("vm-srv_")),
        "{handles:?}"
    );
    {
        let requests = orchestrator.requests.lock().unwrap();
        let create = requests.iter().find(|r| r["action"] == "create").unwrap();
        assert_eq!(create["group_id"], group.as_str());
        assert!(create["env"]["FLOTILLA_METRICS_TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("flo_mt_"));
    }

    // An orchestrator error: retried (1 + 2 attempts), then a failed launch with its reason.
    *mode.lock().unwrap() = Mode::Error;
    set_desired(&server, &token, &group, 3);
    converge_until(&server, "a failed launch", || {
        servers(&server, &token, &group)
            .iter()
            .any(|s| s["state"] == "failed")
    });
    let failed = servers(&server, &token, &group)
        .into_iter()
        .find(|s| s["state"] == "failed")
        .unwrap();
    let reason = failed["last_failure"].as_str().unwrap();
    // The status, never the answer's body (an orchestrator may echo the request's secrets).
    assert!(
        reason.contains("500") && !reason.contains("quota exceeded"),
        "{reason}"
    );
    let creates = orchestrator
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "create")
        .count();
    assert_eq!(creates, 2 + 3);
    // A request's attempts are one message to the orchestrator: one webhook-id.
    let ids: std::collections::BTreeSet<String> = orchestrator
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "create")
        .map(|r| r["_webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2 + 1, "{ids:?}");

    // A stalled orchestrator: each attempt times out; the failure says so.
    *mode.lock().unwrap() = Mode::Stall;
    server.clock.advance_secs(1);
    converge_until(&server, "a timeout", || {
        servers(&server, &token, &group).iter().any(|s| {
            s["last_failure"]
                .as_str()
                .is_some_and(|r| r.contains("timed out"))
        })
    });

    // Recovery, then scale-in deletes through the orchestrator.
    *mode.lock().unwrap() = Mode::Ok;
    server.clock.advance_secs(2);
    converge_until(&server, "3 active", || {
        active(&server, &token, &group).len() == 3
    });
    set_desired(&server, &token, &group, 0);
    converge_until(&server, "none", || {
        servers(&server, &token, &group).is_empty()
    });
    let deletes = orchestrator
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "delete")
        .count();
    assert!(deletes >= 3, "{deletes}");
    assert_eq!(orchestrator.bad_signatures.load(Ordering::SeqCst), 0);
}

#[test]
fn a_group_with_nothing_to_converge_is_skipped_until_it_changes() {
    let server = server();
    let token = server.tenant("acme");
    let group = create(&server, &token, 0, json!({"provider": "simulated"}));
    // No servers and a target of 0: after one pass the ticks skip it.
    converge_until(&server, "the group to be idle", || {
        server.gauge("flotilla_converger_idle_groups") == 1
    });
    // A change (a policy execution) brings it back, and it converges.
    set_desired(&server, &token, &group, 3);
    converge_until(&server, "3 active servers", || {
        active(&server, &token, &group).len() == 3
    });
    assert_eq!(server.gauge("flotilla_converger_idle_groups"), 0);
    // Scaled back to 0 and its servers gone, it is skipped again.
    set_desired(&server, &token, &group, 0);
    converge_until(&server, "no servers, and idle again", || {
        servers(&server, &token, &group).is_empty()
            && server.gauge("flotilla_converger_idle_groups") == 1
    });
}

#[test]
fn each_launch_and_deletion_names_the_capacity_change_it_answers() {
    let server = server();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let (status, run) = server.send_hook(&hook, &hook.secret, "grow", now, b"{}");
    assert_eq!(status, 202, "{run}");
    converge_until(&server, "1 active", || {
        active(&server, &hook.token, &hook.group).len() == 1
    });
    let path = format!("/v1/groups/{}", hook.group);
    let (status, _) = server.call(
        "PATCH",
        &path,
        &hook.token,
        Some(json!({"desired_capacity": 0})),
    );
    assert_eq!(status, 200);
    converge_until(&server, "none", || {
        servers(&server, &hook.token, &hook.group).is_empty()
    });

    let (_, activity) = server.call("GET", &format!("{path}/activity"), &hook.token, None);
    let items = activity["items"].as_array().unwrap();
    let of = |kind: &str| {
        items
            .iter()
            .find(|item| item["type"] == kind)
            .unwrap()
            .clone()
    };
    let launch = of("server_launch_requested");
    assert_eq!(launch["because"]["cause"]["type"], "webhook", "{launch}");
    assert_eq!(launch["because"]["cause"]["webhook_id"], hook.id.as_str());
    assert_eq!(
        (
            launch["because"]["from"].as_u64(),
            launch["because"]["to"].as_u64()
        ),
        (Some(0), Some(1))
    );
    let deletion = of("server_delete_requested");
    assert_eq!(deletion["because"]["cause"]["type"], "direct", "{deletion}");
    assert_eq!(deletion["because"]["to"], 0);
}

#[test]
fn a_tenant_whose_orchestrator_never_answers_delays_no_other_tenants_launches() {
    // A probe's 530 groups pointed at an orchestrator that never answered held every thread
    // provider calls ran on: another tenant's group then never launched.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}/servers", hung.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for stream in hung.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    let server = Server::start_with(|s| {
        s.provider_threads = 4;
        s.provider_threads_per_tenant = 2;
    });
    let stuck = server.tenant("stuck");
    let hanging = json!({"provider": "http", "url": hung_url, "secret": SECRET,
                         "timeout_ms": 60_000, "retries": 0});
    let stuck_groups: Vec<String> = (0..4)
        .map(|_| create(&server, &stuck, 1, hanging.clone()))
        .collect();
    let fine = server.tenant("fine");
    let orchestrator = orchestrator(SECRET, Arc::new(Mutex::new(Mode::Ok)));
    let launch = json!({"provider": "http", "url": orchestrator.url, "secret": SECRET});
    let group = create(&server, &fine, 1, launch);

    // One tick, off this thread: it lasts until every pass ends, and the stuck tenant's end
    // only once their connections close.
    let ticking = std::thread::spawn({
        let ticks = server.ticks.clone();
        move || ticks.tick()
    });
    wait_for("the other tenant's create", || {
        orchestrator
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "create" && r["group_id"] == group.as_str())
    });
    wait_for("the stuck tenant's share of threads", || {
        held.lock().unwrap().len() == 2
    });
    // Its share and no more: the other two launches wait for a thread of its own.
    assert_eq!(held.lock().unwrap().len(), 2);

    // The hung orchestrator lets go: each stuck launch fails, and the tick ends.
    wait_for("every stuck launch to fail", || {
        held.lock().unwrap().clear();
        stuck_groups.iter().all(|g| {
            servers(&server, &stuck, g)
                .iter()
                .any(|s| s["state"] == "failed")
        })
    });
    ticking.join().unwrap();
    let launched = servers(&server, &fine, &group);
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0]["state"], "pending", "{launched:?}");
    assert_eq!(
        launched[0]["provider"]["id"],
        format!("vm-{}", launched[0]["id"].as_str().unwrap())
    );
}

fn count(orchestrator: &Orchestrator, action: &str) -> usize {
    orchestrator
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .count()
}

#[test]
fn an_orchestrator_slow_to_answer_statuses_delays_no_launch() {
    // A pass asked about its servers one after another, then launched: an orchestrator taking
    // seconds per status held a scale-out for minutes.
    let (mode, orchestrator, server, token, launch) = on_orchestrator(
        Mode::Ok,
        server(),
        json!({"timeout_ms": 60_000, "retries": 0, "status_interval_seconds": 0}),
    );
    let group = create(&server, &token, 3, launch);
    converge_until(&server, "3 active", || {
        active(&server, &token, &group).len() == 3
    });

    *mode.lock().unwrap() = Mode::HoldStatus;
    let asked = count(&orchestrator, "status");
    set_desired(&server, &token, &group, 4);
    let ticking = std::thread::spawn({
        let ticks = server.ticks.clone();
        move || ticks.tick()
    });
    // The three checks are asked at once, not one after another, and the launch goes ahead
    // while they wait.
    wait_for("three status requests at once", || {
        count(&orchestrator, "status") == asked + 3
    });
    wait_for("the fourth create", || count(&orchestrator, "create") == 4);
    *mode.lock().unwrap() = Mode::Ok;
    ticking.join().unwrap();
    assert_eq!(servers(&server, &token, &group).len(), 4);
}

/// The handles of the servers asked about since `since` requests.
fn asked_since(orchestrator: &Orchestrator, since: usize) -> std::collections::BTreeSet<String> {
    orchestrator.requests.lock().unwrap()[since..]
        .iter()
        .filter(|r| r["action"] == "status")
        .map(|r| r["handle"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_orchestrator_is_asked_about_each_active_server_once_a_status_interval_at_a_steady_pace() {
    let fields = json!({"status_interval_seconds": 60});
    let (_mode, orchestrator, server, token, launch) = on_orchestrator(Mode::Ok, server(), fields);
    let group = create(&server, &token, 10, launch);
    converge_until(&server, "10 active", || {
        active(&server, &token, &group).len() == 10
    });
    let handles: std::collections::BTreeSet<String> = active(&server, &token, &group)
        .iter()
        .map(|s| s["provider"]["id"].as_str().unwrap().to_owned())
        .collect();
    let pass = || {
        let since = orchestrator.requests.lock().unwrap().len();
        server.tick();
        asked_since(&orchestrator, since)
    };
    // Past any round begun while the servers were pending: the next pass begins one. Its ten
    // servers are paced over the 60 s, one every 6 s of the clock, each once; passes between
    // ask about none.
    server.clock.advance_secs(60);
    let mut asked = std::collections::BTreeSet::new();
    for n in 0..10 {
        if n > 0 {
            server.clock.advance_secs(6);
        }
        let this = pass();
        assert_eq!(this.len(), 1, "at {} s: {this:?}", n * 6);
        assert!(asked.is_disjoint(&this), "asked again: {this:?}");
        asked.extend(this);
        assert_eq!(pass(), Default::default());
    }
    assert_eq!(asked, handles);
    // The round ended; the next begins 60 s after it began.
    server.clock.advance_secs(5);
    assert_eq!(pass(), Default::default());
    server.clock.advance_secs(1);
    assert_eq!(pass().len(), 1);
    // A pass that comes 40 s late asks about one more, not the six the time would give: the
    // round goes on at its pace, in no burst.
    server.clock.advance_secs(40);
    assert_eq!(pass().len(), 1);
    server.clock.advance_secs(6);
    assert_eq!(pass().len(), 1);
}

#[test]
fn a_pass_stops_asking_an_orchestrator_that_is_down_and_the_next_goes_on_from_there() {
    // A round of the sweep at every pass, so that only its halts show.
    let fields = json!({"retries": 0, "status_interval_seconds": 0});
    let (mode, orchestrator, server, token, launch) = on_orchestrator(Mode::Ok, server(), fields);
    // More servers than a pass's sweep checks, so that where it goes on from shows.
    let group = create(&server, &token, 300, launch);
    converge_until(&server, "300 active", || {
        active(&server, &token, &group).len() == 300
    });

    // Down (5xx): each pass asks once per call at once, not once per server, and the next
    // pass asks about other servers, not the same ones again.
    *mode.lock().unwrap() = Mode::StatusError;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let since = orchestrator.requests.lock().unwrap().len();
        server.tick();
        let asked = asked_since(&orchestrator, since);
        assert!(
            (1..=flotilla::converger::CALLS_AT_ONCE).contains(&asked.len()),
            "{} servers asked in one pass",
            asked.len()
        );
        assert!(seen.is_disjoint(&asked), "asked again: {asked:?}");
        seen.extend(asked);
    }
    // A refusal (4xx) is about its server only: a pass asks about a whole sweep's share. (The
    // round began with the error passes, the 300 having become active in one pass: at most 24
    // of them were asked, so at least 256 are left to it.)
    *mode.lock().unwrap() = Mode::StatusRefused;
    let since = orchestrator.requests.lock().unwrap().len();
    server.tick();
    let asked = asked_since(&orchestrator, since);
    assert_eq!(asked.len(), flotilla::converger::ACTIVE_CHECKS_PER_PASS);
    assert!(seen.is_disjoint(&asked));
    // None was taken for failed.
    *mode.lock().unwrap() = Mode::Ok;
    server.tick();
    assert_eq!(active(&server, &token, &group).len(), 300);
}

#[test]
fn a_pass_stops_launching_through_an_orchestrator_that_is_down_but_not_one_that_refuses() {
    let (mode, orchestrator, server, token, launch) =
        on_orchestrator(Mode::Error, server(), json!({"retries": 0}));
    let group = create(&server, &token, 20, launch);
    server.tick();
    // Down (5xx): a few launches tried at once, the rest failed untried, all to be retried.
    let tried = count(&orchestrator, "create");
    assert!(
        (1..=flotilla::converger::CALLS_AT_ONCE).contains(&tried),
        "{tried} creates"
    );
    let failed = servers(&server, &token, &group);
    assert_eq!(failed.len(), 20);
    assert!(failed.iter().all(|s| s["state"] == "failed"), "{failed:?}");
    let untried = failed
        .iter()
        .filter(|s| s["last_failure"] == flotilla::converger::NOT_TRIED)
        .count();
    assert_eq!(untried, 20 - tried);

    // A refusal (4xx) is this request's: every launch is tried.
    *mode.lock().unwrap() = Mode::Reject;
    server.clock.advance_secs(2);
    server.tick();
    assert_eq!(count(&orchestrator, "create"), tried + 20);

    // Asked to slow down (429): as down, a few tried and the rest not.
    *mode.lock().unwrap() = Mode::Busy;
    server.clock.advance_secs(5);
    let before = count(&orchestrator, "create");
    server.tick();
    let busy = count(&orchestrator, "create") - before;
    assert!(
        (1..=flotilla::converger::CALLS_AT_ONCE).contains(&busy),
        "{busy} creates"
    );

    // Up again: every slot launches.
    *mode.lock().unwrap() = Mode::Ok;
    server.clock.advance_secs(5);
    converge_until(&server, "20 active", || {
        active(&server, &token, &group).len() == 20
    });
}

#[test]
fn a_failed_servers_remains_are_deleted_before_its_slot_is_launched_again() {
    // A probe's orchestrator refused the delete of an exited server once: the slot was
    // launched again over its handle, and the old server was never deleted.
    let fields = json!({"retries": 0, "status_interval_seconds": 0});
    let (mode, orchestrator, server, token, launch) = on_orchestrator(Mode::Ok, server(), fields);
    let group = create(&server, &token, 1, launch);
    converge_until(&server, "1 active", || {
        active(&server, &token, &group).len() == 1
    });
    let first = active(&server, &token, &group)[0]["provider"]["id"].clone();

    *mode.lock().unwrap() = Mode::ExitedUndeletable;
    server.tick();
    assert_eq!(servers(&server, &token, &group)[0]["state"], "failed");
    // Its remains cannot be deleted: it is not launched again, and keeps its handle.
    for _ in 0..3 {
        server.clock.advance_secs(70);
        server.tick();
    }
    assert_eq!(count(&orchestrator, "create"), 1);
    assert!(count(&orchestrator, "delete") >= 3);
    let failed = servers(&server, &token, &group);
    assert_eq!(failed[0]["provider"]["id"], first, "{failed:?}");

    // Once they are, it is.
    *mode.lock().unwrap() = Mode::Ok;
    server.clock.advance_secs(70);
    converge_until(&server, "1 active again", || {
        active(&server, &token, &group).len() == 1
    });
    let requests = orchestrator.requests.lock().unwrap().clone();
    let deleted = requests
        .iter()
        .rposition(|r| r["action"] == "delete" && r["handle"]["id"] == first)
        .unwrap();
    let relaunched = requests
        .iter()
        .rposition(|r| r["action"] == "create")
        .unwrap();
    assert!(deleted < relaunched);
    assert_eq!(count(&orchestrator, "create"), 2);
}

#[test]
fn one_server_the_orchestrator_cannot_answer_about_stops_no_others_checks() {
    // A probe's pending server answered 503 at every status: asked first, it halted every
    // pass, and three servers that had exited stayed active for good.
    // One call at a time, so the pass asks in order.
    let (mode, _orchestrator, server, token, launch) = on_orchestrator(
        Mode::Ok,
        Server::start_with(|s| s.provider_threads_per_tenant = 1),
        json!({"retries": 0, "status_interval_seconds": 0}),
    );
    let group = create(&server, &token, 3, launch);
    converge_until(&server, "3 active", || {
        active(&server, &token, &group).len() == 3
    });
    set_desired(&server, &token, &group, 4);
    server.tick();
    assert_eq!(servers(&server, &token, &group).len(), 4);

    *mode.lock().unwrap() = Mode::SickNewest;
    ticks(&server, 3);
    let failed = servers(&server, &token, &group)
        .iter()
        .filter(|s| s["state"] == "failed")
        .count();
    assert_eq!(failed, 3, "{:?}", servers(&server, &token, &group));
}
