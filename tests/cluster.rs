//! Three real `flotilla serve --cluster` processes on one real PostgreSQL (SPEC 9): signed
//! webhooks sent to all three from 8 threads while one node is killed with SIGKILL. Its groups
//! are taken over and converge again, every acknowledged execution is in the journal exactly
//! once, no nonce is accepted twice, no server is launched twice for one slot, and the chain
//! verifies.
//!
//! A node paused with SIGSTOP past its lease, a launch of its under way, is fenced: once resumed
//! its report of that launch is refused and never reaches the journal, and it goes on serving.
//!
//! Leases expire by the database's clock, in real time, so this test waits in real time (with
//! deadlines, polling the nodes' own answers); nothing in it sleeps for a fixed length.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::orchestrator::Orchestrator;
use flotilla_journal::{testing, Journal};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const BODY: &[u8] = br#"{"alarm":"cpu-high","value":0.93}"#;

/// A `flotilla serve --cluster` process, killed when dropped.
struct Node {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(url: &str, name: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["serve", "--cluster", "--node-id", name])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--converge-tick-ms", "200", "--webhook-rate-limit", "0"])
        .args(["--source-rate-limit", "0"])
        .env("FLOTILLA_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Node {
        child,
        base: format!("http://127.0.0.1:{port}"),
        dir,
    }
}

/// Asks `check` again and again until it holds, or panics naming `what` once `limit` has
/// passed: the nodes are real processes, on the database's real clock.
fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        // Between two asks, the core is the nodes' (two cores for three nodes and PostgreSQL).
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn gauge(client: &Client, node: &Node, name: &str) -> Option<u64> {
    let text = client
        .get(format!("{}/metrics", node.base))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

fn call(client: &Client, base: &str, method: &str, path: &str, token: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn ready(client: &Client, node: &Node) {
    within("ready", Duration::from_secs(30), || {
        client
            .get(format!("{}/readyz", node.base))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
}

fn signal(node: &Node, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn token_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("operator.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn three_nodes_share_a_database_and_take_over_a_killed_nodes_groups_within_10_s() {
    let Some(url) = testing::fresh_database("three_nodes_share_a_database") else {
        return;
    };
    let mut nodes: Vec<Option<Node>> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|name| Some(start(&url, name)))
        .collect();
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let live = |nodes: &[Option<Node>]| -> Vec<PathBuf> {
        nodes
            .iter()
            .flatten()
            .map(|n| n.dir.path().to_owned())
            .collect()
    };
    for node in nodes.iter().flatten() {
        within("ready", Duration::from_secs(30), || {
            client
                .get(format!("{}/readyz", node.base))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
    }
    // One operator token for the cluster.
    let tokens: BTreeSet<String> = live(&nodes).iter().map(|d| token_of(d)).collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let operator = tokens.into_iter().next().unwrap();
    // The shards are shared out, every one held.
    within(
        "all 64 shards held, by all three",
        Duration::from_secs(30),
        || {
            let owned: Vec<u64> = nodes
                .iter()
                .flatten()
                .map(|n| gauge(&client, n, "flotilla_shards_owned").unwrap_or(0))
                .collect();
            owned.iter().sum::<u64>() == 64 && owned.iter().all(|o| *o > 0)
        },
    );

    let first = nodes[0].as_ref().unwrap().base.clone();
    let tenant = call(
        &client,
        &first,
        "POST",
        "/v1/tenants",
        &operator,
        json!({"name": "acme"}),
    );
    let token = tenant["token"].as_str().unwrap().to_owned();
    let mut hooks = Vec::new();
    let mut groups = Vec::new();
    for _ in 0..6 {
        let group = call(
            &client,
            &first,
            "POST",
            "/v1/groups",
            &token,
            json!({"name": "web", "min_size": 0, "max_size": 1000, "desired_capacity": 1,
                   "cooldown_seconds": 0, "launch": {"provider": "simulated"}}),
        );
        let gid = group["id"].as_str().unwrap().to_owned();
        let policy = call(
            &client,
            &first,
            "POST",
            &format!("/v1/groups/{gid}/policies"),
            &token,
            json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
        );
        let pid = policy["id"].as_str().unwrap();
        let hook = call(
            &client,
            &first,
            "POST",
            &format!("/v1/groups/{gid}/policies/{pid}/webhooks"),
            &token,
            json!({"name": "h"}),
        );
        let path = hook["url"]
            .as_str()
            .unwrap()
            .split_once("/v1/")
            .unwrap()
            .1
            .to_owned();
        let key = flotilla::signature::key_of(hook["secret"].as_str().unwrap()).unwrap();
        hooks.push((format!("/v1/{path}"), key));
        groups.push(gid);
    }

    // Every node knows them (its read models follow what the others append).
    for node in nodes.iter().flatten() {
        within(
            "every node knows the groups",
            Duration::from_secs(10),
            || {
                groups.iter().all(|g| {
                    client
                        .get(format!("{}/v1/groups/{g}", node.base))
                        .bearer_auth(&token)
                        .send()
                        .is_ok_and(|r| r.status().is_success())
                })
            },
        );
    }

    // 8 threads send signed calls round-robin to the three nodes; node-3 is killed midway.
    let bases: Vec<String> = nodes.iter().flatten().map(|n| n.base.clone()).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let hooks = Arc::new(hooks);
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let (bases, hooks, acknowledged, sent) = (
                bases.clone(),
                hooks.clone(),
                acknowledged.clone(),
                sent.clone(),
            );
            std::thread::spawn(move || {
                let client = Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                for i in 0..40 {
                    let (path, key) = &hooks[(t + i) % hooks.len()];
                    let base = &bases[(t + i) % bases.len()];
                    let nonce = format!("msg_{t}_{i}");
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs() as i64;
                    let signature = flotilla::signature::sign(key, &nonce, now, BODY);
                    let answer = client
                        .post(format!("{base}{path}"))
                        .header("webhook-id", &nonce)
                        .header("webhook-timestamp", now.to_string())
                        .header("webhook-signature", signature)
                        .header("content-type", "application/json")
                        .body(BODY.to_vec())
                        .send();
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Ok(answer) = answer {
                        let status = answer.status();
                        if status.is_success() {
                            acknowledged.lock().unwrap().push(nonce);
                        } else {
                            // Not acknowledged (other nodes kept moving the group's stream,
                            // say): a 503 the caller tries again after, never a fault, and
                            // the checks below must hold anyway.
                            let retry = answer.headers().contains_key("retry-after");
                            let text = answer.text().unwrap_or_default();
                            eprintln!("{base} {status} {text}");
                            assert!(status == 503 && retry, "{base} {status} {text}");
                        }
                    }
                }
            })
        })
        .collect();
    within("a third of the calls sent", Duration::from_secs(60), || {
        sent.load(Ordering::Relaxed) >= 100
    });
    let killed = Instant::now();
    drop(nodes[2].take());
    for sender in senders {
        sender.join().unwrap();
    }

    // The survivors take node-3's shards over within 10 s of its death.
    let left = Duration::from_secs(10).saturating_sub(killed.elapsed());
    within("node-3's shards taken over within 10 s", left, || {
        nodes
            .iter()
            .flatten()
            .map(|n| gauge(&client, n, "flotilla_shards_owned").unwrap_or(0))
            .sum::<u64>()
            == 64
    });
    eprintln!(
        "node-3's shards taken over {:?} after its death",
        killed.elapsed()
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("{} of 320 calls acknowledged", acknowledged.len());
    // Most calls to the two survivors went through.
    assert!(acknowledged.len() >= 320 / 2, "{}", acknowledged.len());

    // Every group converges to its capacity again, through the survivors.
    let survivor = nodes[0].as_ref().unwrap().base.clone();
    within("every group converged", Duration::from_secs(30), || {
        groups.iter().all(|g| {
            let view = client
                .get(format!("{survivor}/v1/groups/{g}"))
                .bearer_auth(&token)
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok());
            view.is_some_and(|v| v["active"] == v["desired_capacity"] && v["pending"] == 0)
        })
    });

    // /metrics names the shards each survivor holds, with their tokens: 64 in all, none twice.
    let mut held = BTreeSet::new();
    for node in nodes.iter().flatten() {
        let text = client
            .get(format!("{}/metrics", node.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("flotilla_shard_fencing_token{shard=\"") else {
                continue;
            };
            let (shard, token) = rest.split_once("\"} ").unwrap();
            assert!(token.trim().parse::<u64>().unwrap() >= 1, "{line}");
            assert!(
                held.insert(shard.parse::<u32>().unwrap()),
                "shard {shard} held twice"
            );
        }
    }
    assert_eq!(held.len(), 64, "{held:?}");

    // Each group shows its owner, a survivor, and the fencing token of its shard's lease,
    // the same through either survivor (once both have read the leases since the takeover).
    for g in &groups {
        within(
            "a group's owner, the same through both",
            Duration::from_secs(10),
            || {
                let shown: Vec<(Value, Value)> = nodes
                    .iter()
                    .flatten()
                    .map(|node| {
                        let view = call(
                            &client,
                            &node.base,
                            "GET",
                            &format!("/v1/groups/{g}"),
                            &token,
                            Value::Null,
                        );
                        (view["owner"].clone(), view["fencing_token"].clone())
                    })
                    .collect();
                let (owner, fencing_token) = &shown[0];
                (owner == "node-1" || owner == "node-2")
                    && fencing_token.as_u64().is_some_and(|t| t >= 1)
                    && shown.iter().all(|s| s == &shown[0])
            },
        );
    }

    // The journal: each acknowledged nonce accepted exactly once, none twice, no slot launched
    // twice, the chain whole.
    let journal = Journal::connect(&url, flotilla_journal::Config::default()).unwrap();
    let mut nonces: BTreeMap<String, usize> = BTreeMap::new();
    let mut launched: BTreeMap<String, usize> = BTreeMap::new();
    for record in journal.read_all(1) {
        let record = record.unwrap();
        let payload: Value = serde_json::from_slice(&record.payload).unwrap();
        match record.event_type.as_str() {
            "nonce_accepted" => {
                *nonces
                    .entry(payload["nonce"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            "server_launched" => {
                let slot = payload["server_id"].as_str().unwrap().to_owned();
                *launched.entry(slot).or_default() += 1;
            }
            _ => {}
        }
    }
    for nonce in &acknowledged {
        assert_eq!(nonces.get(nonce), Some(&1), "{nonce}");
    }
    assert!(nonces.values().all(|n| *n == 1), "a nonce accepted twice");
    assert!(
        launched.values().all(|n| *n == 1),
        "a slot launched twice: {launched:?}"
    );
    journal.verify().unwrap();
    let verified = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["audit", "verify"])
        .env("FLOTILLA_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");
    drop(nodes);
}

#[test]
fn a_node_paused_past_its_lease_is_fenced_and_nothing_it_does_on_resuming_reaches_the_journal() {
    let Some(url) = testing::fresh_database("a_node_paused_past_its_lease") else {
        return;
    };
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The orchestrator holds its answer to the first create: node-1's launch is under way.
    let orchestrator = Orchestrator::holding(1);
    let first = start(&url, "node-1");
    ready(&client, &first);
    within("node-1 holds every shard", Duration::from_secs(30), || {
        gauge(&client, &first, "flotilla_shards_owned") == Some(64)
    });
    let operator = token_of(first.dir.path());
    let tenant = call(
        &client,
        &first.base,
        "POST",
        "/v1/tenants",
        &operator,
        json!({"name": "acme"}),
    );
    let token = tenant["token"].as_str().unwrap().to_owned();
    let group = call(
        &client,
        &first.base,
        "POST",
        "/v1/groups",
        &token,
        json!({"name": "web", "min_size": 0, "max_size": 4, "desired_capacity": 1,
               "launch": {"provider": "http", "url": orchestrator.url, "timeout_ms": 60_000,
                          "retries": 0, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
    );
    let group = group["id"].as_str().unwrap().to_owned();
    within("node-1 asks for a server", Duration::from_secs(10), || {
        orchestrator.creates().len() == 1
    });
    let asked = orchestrator.creates().remove(0);
    let lease = flotilla::cluster::lease_name(flotilla::cluster::shard_of(&group));
    assert_eq!((asked.lease.as_str(), asked.token.as_str()), (&*lease, "1"));

    // Paused past its lease: node-2 takes every shard over once the leases expire.
    signal(&first, "-STOP");
    let second = start(&url, "node-2");
    ready(&client, &second);
    within(
        "node-2 takes node-1's shards over",
        Duration::from_secs(30),
        || gauge(&client, &second, "flotilla_shards_owned") == Some(64),
    );
    // It resolves node-1's launch as a restart would, and launches the slot again under a
    // newer token.
    let group_at = |node: &Node| {
        client
            .get(format!("{}/v1/groups/{group}", node.base))
            .bearer_auth(&token)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json::<Value>().ok())
    };
    within(
        "node-2 launches the server",
        Duration::from_secs(30),
        || group_at(&second).is_some_and(|g| g["active"] == 1 && g["pending"] == 0),
    );
    let creates = orchestrator.creates();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert_eq!(creates[1].server_id, asked.server_id, "the same slot");
    assert_eq!(creates[1].lease, lease);
    let newer: u64 = creates[1].token.parse().unwrap();
    assert!(newer > 1, "{creates:?}");

    // Resumed, node-1 gets its launch's answer, and its report of it is refused.
    orchestrator.release();
    signal(&first, "-CONT");
    within("node-1's report refused", Duration::from_secs(30), || {
        gauge(&client, &first, "flotilla_owner_work_refused_total").is_some_and(|n| n >= 1)
    });
    // It goes on serving API calls, with what node-2 recorded.
    within(
        "node-1 serves the group as node-2 left it",
        Duration::from_secs(10),
        || group_at(&first).is_some_and(|g| g["active"] == 1 && g["desired_capacity"] == 1),
    );
    // Nothing node-1 did after resuming reached the journal: its server's handle is nowhere,
    // the slot was launched once, by node-2, and the chain is whole.
    let journal = Journal::connect(&url, flotilla_journal::Config::default()).unwrap();
    let mut launched = Vec::new();
    for record in journal.read_all(1) {
        let record = record.unwrap();
        let payload = String::from_utf8(record.payload.clone()).unwrap();
        assert!(!payload.contains(&asked.handle), "{payload}");
        if record.event_type == "server_launched" {
            launched.push(payload);
        }
    }
    assert_eq!(launched.len(), 1, "{launched:?}");
    assert!(launched[0].contains(&creates[1].handle), "{launched:?}");
    journal.verify().unwrap();
}
