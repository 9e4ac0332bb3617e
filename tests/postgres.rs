//! The service and the journal's tools on PostgreSQL (SPEC 9), against a real PostgreSQL: the
//! one `FLOTILLA_TEST_DATABASE_URL` names, or a throwaway cluster (see
//! `flotilla_journal::testing`). Without one these tests skip with a message; with
//! `FLOTILLA_REQUIRE_EXTERNAL=1` they fail.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::orchestrator::Orchestrator;
use common::Server;
use flotilla_journal::{testing, ExpectedVersion, Journal, NewEvent};
use serde_json::json;

const BODY: &[u8] = br#"{"alarm":"cpu-high","value":0.93}"#;

/// The real binary, with the database URL in its environment (never on its command line, where
/// any user of the host could read it).
fn flotilla(database_url: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    command.args(args).env("RUST_LOG", "warn");
    match database_url {
        Some(url) => command.env("FLOTILLA_DATABASE_URL", url),
        None => command.env_remove("FLOTILLA_DATABASE_URL"),
    };
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn the_service_on_postgres_keeps_every_acknowledged_change_across_a_restart() {
    let test = "the_service_on_postgres_keeps_every_acknowledged_change_across_a_restart";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let server = Server::start_with(|settings| {
        settings.database_url = Some(url.parse().unwrap());
    });
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let answer = server.send_hook(&hook, &hook.secret, "msg_1", now, BODY);
    assert_eq!((answer.0, &answer.1["outcome"]), (202, &json!("executed")));
    assert_eq!(server.capacity(&hook.token, &hook.group), 1);

    // The journal is the database's: the data directory holds the operator token, no sled.
    let data = server.dir.path().join("data");
    assert!(data.join("operator.token").is_file());
    assert!(
        !data.join("conf").exists(),
        "sled opened {}",
        data.display()
    );

    let server = server.restart_on_the_same_port();
    assert_eq!(server.capacity(&hook.token, &hook.group), 1);
    // A nonce is accepted once, across the restart too.
    let replayed = server.send_hook(&hook, &hook.secret, "msg_1", now, BODY);
    common::assert_error(&replayed, 409, "replayed");
    let answer = server.send_hook(&hook, &hook.secret, "msg_2", now, BODY);
    assert_eq!((answer.0, &answer.1["outcome"]), (202, &json!("executed")));
    assert_eq!(server.capacity(&hook.token, &hook.group), 2);

    // A second service on the same database is refused: until groups are owned by lease, two
    // would both act on every group.
    let other = tempfile::tempdir().unwrap();
    let second = flotilla(
        Some(&url),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            arg(other.path()),
        ],
    );
    assert_eq!(second.status.code(), Some(2), "{second:?}");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another flotilla serve"), "{said}");
    drop(server);

    // The audit tools read the same journal through --database-url (here its variable).
    let verified = flotilla(Some(&url), &["audit", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(
        stdout(&verified).starts_with("ok: "),
        "{}",
        stdout(&verified)
    );
    let log = flotilla(Some(&url), &["audit", "log", "--object", &hook.group]);
    assert!(log.status.success(), "{log:?}");
    let executions = stdout(&log)
        .lines()
        .filter(|line| line.contains("\"policy_executed\""))
        .count();
    assert_eq!(executions, 2, "{}", stdout(&log));
}

#[test]
fn a_sled_journal_moves_into_postgres_through_an_export_chain_and_all() {
    let test = "a_sled_journal_moves_into_postgres_through_an_export_chain_and_all";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::seed_journal(&data);
    let export = dir.path().join("journal.jsonl");
    let exported = flotilla(
        None,
        &[
            "journal",
            "export",
            "--data-dir",
            arg(&data),
            "--out",
            arg(&export),
        ],
    );
    assert!(exported.status.success(), "{exported:?}");

    let imported = flotilla(Some(&url), &["journal", "import", "--in", arg(&export)]);
    assert!(imported.status.success(), "{imported:?}");
    // A second import is refused: the database's journal is no longer empty.
    let again = flotilla(Some(&url), &["journal", "import", "--in", arg(&export)]);
    assert_eq!(again.status.code(), Some(2), "{again:?}");

    // The same chain, head hash and all, and the same export byte for byte.
    let on_sled = flotilla(None, &["audit", "verify", "--data-dir", arg(&data)]);
    let on_postgres = flotilla(Some(&url), &["audit", "verify"]);
    assert!(on_postgres.status.success(), "{on_postgres:?}");
    assert_eq!(stdout(&on_sled), stdout(&on_postgres));
    assert!(stdout(&on_postgres).starts_with("ok: 10 records"));
    let back = dir.path().join("back.jsonl");
    let exported_back = flotilla(Some(&url), &["journal", "export", "--out", arg(&back)]);
    assert!(exported_back.status.success(), "{exported_back:?}");
    assert_eq!(
        std::fs::read(&export).unwrap(),
        std::fs::read(&back).unwrap()
    );
    let replayed_sled = flotilla(None, &["replay", "--data-dir", arg(&data)]);
    let replayed_postgres = flotilla(Some(&url), &["replay"]);
    assert!(replayed_postgres.status.success(), "{replayed_postgres:?}");
    assert_eq!(stdout(&replayed_sled), stdout(&replayed_postgres));
}

#[test]
fn a_database_that_cannot_be_reached_is_a_clear_error_that_never_shows_the_password() {
    // Nothing listens on port 1; the password must not be echoed back.
    let url = "postgres://flotilla:hunter2-secret@127.0.0.1:1/flotilla";
    for args in [
        &["audit", "verify"][..],
        &["journal", "export", "--out", "-"],
    ] {
        let output = flotilla(Some(url), args);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("PostgreSQL"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    let garbage = flotilla(Some("postgres://[::1"), &["audit", "verify"]);
    assert_eq!(garbage.status.code(), Some(2), "{garbage:?}");
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("does not parse"));
}

/// A group's active and pending servers, as its view says.
fn servers_of(server: &Server, token: &str, group: &str) -> (u64, u64) {
    let (status, view) = server.call("GET", &format!("/v1/groups/{group}"), token, None);
    assert_eq!(status, 200, "{view}");
    (
        view["active"].as_u64().unwrap(),
        view["pending"].as_u64().unwrap(),
    )
}

#[test]
fn on_postgres_a_node_acts_only_for_the_groups_whose_shard_lease_it_holds() {
    let test = "on_postgres_a_node_acts_only_for_the_groups_whose_shard_lease_it_holds";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let server = Server::start_with(|settings| {
        settings.database_url = Some(url.parse().unwrap());
        settings.node_id = Some("node-a".into());
    });
    // Before its first lease tick a node on a shared database acts for nothing.
    assert_eq!(server.gauge("flotilla_shards_owned"), 0);
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 2, 0);
    server.tick_until("2 active", 10, || {
        servers_of(&server, &token, &group) == (2, 0)
    });
    assert_eq!(server.gauge("flotilla_shards_owned"), 64);
    assert_eq!(server.gauge("flotilla_groups_owned"), 1);
    assert!(server
        .metrics()
        .contains("flotilla_node_info{node=\"node-a\"} 1"));

    // Another node takes the group's shard over: its lease expires on the database's clock,
    // and node-x acquires it, with the next token.
    let name = flotilla::cluster::lease_name(flotilla::cluster::shard_of(&group));
    testing::execute(
        &url,
        &format!(
            "UPDATE flotilla_leases SET expires_at = clock_timestamp() - interval '1 second' \
             WHERE name = '{name}'"
        ),
    )
    .unwrap();
    let other = Journal::connect(&url, flotilla_journal::Config::default()).unwrap();
    let ttl = std::time::Duration::from_secs(600);
    let x = other.acquire_lease(&name, "node-x", ttl).unwrap().unwrap();
    assert_eq!(x.token, 2);

    // Any node answers the API; but node-a no longer converges the group.
    let path = format!("/v1/groups/{group}");
    let (status, body) = server.call("PATCH", &path, &token, Some(json!({"desired_capacity": 4})));
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        server.tick();
    }
    assert_eq!(servers_of(&server, &token, &group), (2, 0));
    // With node-x alive, node-a's share is half the shards: it has let go of the rest for
    // node-x to take.
    assert_eq!(server.gauge("flotilla_shards_owned"), 32);
    assert_eq!(server.gauge("flotilla_groups_owned"), 0);
    assert!(server.gauge("flotilla_lease_losses_total") >= 1);

    // node-x lets go: node-a takes the shard back, with the next token, and converges again.
    assert!(other.release_lease(&name, "node-x", x.token).unwrap());
    server.tick_until("4 active", 10, || {
        servers_of(&server, &token, &group) == (4, 0)
    });
    assert_eq!(server.gauge("flotilla_shards_owned"), 64);
    assert!(server.gauge("flotilla_lease_takeovers_total") >= 1);
    let leases = other.leases().unwrap();
    let ours = leases.iter().find(|lease| lease.name == name).unwrap();
    assert_eq!((ours.holder.as_str(), ours.token), ("node-a", 3));
}

#[test]
fn on_postgres_a_launch_carries_the_lease_and_fencing_token_it_is_made_under() {
    let test = "on_postgres_a_launch_carries_the_lease_and_fencing_token_it_is_made_under";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let orchestrator = Orchestrator::start();
    let server = Server::start_with(|settings| {
        settings.database_url = Some(url.parse().unwrap());
    });
    let token = server.tenant("acme");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, body) = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(
            json!({"name": "web", "min_size": 0, "max_size": 4, "desired_capacity": 1,
                    "launch": {"provider": "http", "url": orchestrator.url, "secret": secret}}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_str().unwrap().to_owned();
    server.tick_until("1 active", 10, || {
        servers_of(&server, &token, &group) == (1, 0)
    });
    let lease = flotilla::cluster::lease_name(flotilla::cluster::shard_of(&group));
    let creates: Vec<_> = orchestrator
        .creates()
        .into_iter()
        .map(|create| (create.lease, create.token))
        .collect();
    assert_eq!(creates, [(lease, "1".to_owned())]);
}

#[test]
fn on_postgres_an_actor_another_node_left_behind_rebuilds_before_it_decides() {
    let test = "on_postgres_an_actor_another_node_left_behind_rebuilds_before_it_decides";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let server = Server::start_with(|settings| {
        settings.database_url = Some(url.parse().unwrap());
    });
    let token = server.tenant("acme");
    let group = server.group(&token, 0, 10, 1, 0);
    let path = format!("/v1/groups/{group}");
    let (status, body) = server.call("PATCH", &path, &token, Some(json!({"desired_capacity": 2})));
    assert_eq!(status, 200, "{body}");
    server.tick_until("2 active", 10, || {
        servers_of(&server, &token, &group) == (2, 0)
    });

    // Another node moves the group's capacity on, from 2 to 3, behind this node's actor.
    let other = Journal::connect(&url, flotilla_journal::Config::default()).unwrap();
    let last = other
        .read_stream_back(&group, u64::MAX)
        .map(Result::unwrap)
        .find(|record| record.event_type == "capacity_changed")
        .unwrap();
    let version = other.stream_version(&group).unwrap();
    let mut payload: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(
        (payload["from"].clone(), payload["to"].clone()),
        (json!(1), json!(2))
    );
    payload["from"] = json!(2);
    payload["to"] = json!(3);
    let moved = NewEvent::raw(
        &last.event_type,
        last.schema,
        last.timestamp_ms,
        serde_json::to_vec(&payload).unwrap(),
    )
    .unwrap();
    other
        .append(&group, ExpectedVersion::Exact(version), vec![moved])
        .unwrap();

    // Once this node has read it (a tick), its actor decides from 3, not from 2: the converger
    // launches the third server, and a change through the API starts from 3.
    server.tick_until("3 active", 10, || {
        servers_of(&server, &token, &group) == (3, 0)
    });
    let (status, body) = server.call("PATCH", &path, &token, Some(json!({"desired_capacity": 4})));
    assert_eq!(status, 200, "{body}");
    let last = other
        .read_stream_back(&group, u64::MAX)
        .map(Result::unwrap)
        .find(|record| record.event_type == "capacity_changed")
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(
        (payload["from"].clone(), payload["to"].clone()),
        (json!(3), json!(4))
    );
    assert_eq!(server.capacity(&token, &group), 4);
}

#[test]
fn on_postgres_every_node_serves_with_the_clusters_operator_token() {
    let test = "on_postgres_every_node_serves_with_the_clusters_operator_token";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let first = Server::start_with(|settings| {
        settings.database_url = Some(url.parse().unwrap());
    });
    let token = first.operator_token.clone();
    assert!(token.starts_with("flo_op_"), "{token}");
    drop(first);
    // Another node, with a data directory of its own that already holds another token (it
    // served alone on sled before): it serves with the cluster's, and writes it there.
    let second = Server::start_with(|settings| {
        settings.database_url = Some(url.parse().unwrap());
        std::fs::create_dir_all(&settings.data_dir).unwrap();
        std::fs::write(settings.data_dir.join("operator.token"), "flo_op_old\n").unwrap();
    });
    assert_eq!(second.operator_token, token);
    let written = std::fs::read_to_string(second.dir.path().join("data/operator.token")).unwrap();
    assert_eq!(written.trim(), token);
    // The operator's token is accepted: a tenant is made with it.
    second.tenant("acme");
}

#[test]
fn on_postgres_a_node_knows_at_once_what_another_node_just_made() {
    let test = "on_postgres_a_node_knows_at_once_what_another_node_just_made";
    let Some(url) = testing::fresh_database(test) else {
        return;
    };
    let cluster = |settings: &mut flotilla::settings::Settings| {
        settings.database_url = Some(url.parse().unwrap());
        settings.cluster = true;
    };
    let first = Server::start_with(cluster);
    let second = Server::start_with(cluster);
    // Neither reads what the other appends on its own here (their ticks are manual, and none
    // is given): what the second knows of the first's objects, it learns on a miss.
    let hook = first.webhook_setup();
    let (status, body) = first.call(
        "POST",
        "/v1/groups",
        &hook.token,
        Some(json!({
        "name": "api", "min_size": 0, "max_size": 4, "desired_capacity": 0,
        "launch": {"provider": "simulated"}})),
    );
    assert_eq!(status, 201, "{body}");
    let metrics_token = body["metrics_token"].as_str().unwrap().to_owned();

    // The tenant's token, the group and the policy are known through the second at once.
    let (status, body) = second.call(
        "GET",
        &format!("/v1/groups/{}", hook.group),
        &hook.token,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let policy = format!("/v1/groups/{}/policies/{}", hook.group, hook.policy);
    let (status, body) = second.call("GET", &policy, &hook.token, None);
    assert_eq!(status, 200, "{body}");
    // So are the webhook and the other group's metrics token.
    let through_second = common::Hook {
        url: second.url(&format!("/v1/hooks/{}", hook.id)),
        ..hook.clone()
    };
    let now = second.now_secs();
    let answer = second.send_hook(&through_second, &hook.secret, "msg_1", now, BODY);
    assert_eq!(answer.0, 202, "{}", answer.1);
    assert_eq!(answer.1["outcome"], "executed", "{}", answer.1);
    let samples = json!({"samples": [{"metric": "cpu", "value": 0.5, "timestamp": now}]});
    let (status, body) = second.call("POST", "/v1/metrics", &metrics_token, Some(samples));
    assert!(status != 401, "{status} {body}");
    // What no node made is still unknown after the catch-up.
    let (status, body) = second.call("GET", "/v1/groups/grp_nosuch", &hook.token, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = second.call("GET", "/v1/groups", "flo_nosuch", None);
    assert_eq!(status, 401);
}
