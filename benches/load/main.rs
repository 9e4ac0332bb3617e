//! The load harness: the real service on loopback with a temporary data directory, driven over
//! HTTP, each figure beside a baseline measured in the same run.
//!
//! - webhooks: signed calls with distinct nonces across many groups at a chosen concurrency;
//!   throughput and p50/p99/p999 latency, beside a bare actix-web handler receiving the same
//!   requests;
//! - ingestion: metric samples in batches of 1,000, beside a bare POST of the same bytes;
//! - remote write: Prometheus remote write 1.0 bodies of 500 samples (Prometheus's default
//!   `max_samples_per_send`), one series each over the fleet's groups, with the tenant's token,
//!   beside a bare handler that only decompresses and decodes the same bodies;
//! - recovery: time from the `flotilla` binary's spawn to ready with a journal of N events,
//!   replaying it all, and again, after a SIGTERM, from the checkpoint that first start saved;
//! - bad-signature flood: a signed caller's latency, paced under the per-webhook limit, alone and
//!   while four connections from another address send bad signatures to the same webhook as
//!   fast as they can, with the default rate limits (`LOAD_FLOOD=0` skips it);
//! - group size: webhook calls on groups of 0, 1,000 and 5,000 active simulated servers (16
//!   groups each, the policy at its bound, so that every call is a durable `no_change`), each
//!   size on its own service, driven in alternating slices: the cost of a command must not grow
//!   with the group;
//! - churn: the same with every call changing capacity (two policies, +10 and -10, called in
//!   turn) while the converger launches and deletes servers for the same groups
//!   (`LOAD_CHURN=0` skips it);
//! - memory of servers: the resident set of the `flotilla` binary with `LOAD_SERVERS` (100,000;
//!   0 skips it) active simulated servers, beside the same binary empty;
//! - memory: the resident set of the `flotilla` binary itself (a child process) with N groups, N
//!   policies and N alarms created over HTTP, beside the same binary empty.
//!
//! A figure beside a bare handler (webhooks, ingestion, remote write) is measured in slices
//! that alternate between the two servers (bare, service, service, bare, ...), `LOAD_SECONDS`
//! each side in all, so that both see the same phases of a machine whose speed drifts by the
//! minute (a shared virtual machine's does by 15% and more): the ratio is then of two rates
//! taken over the same stretch of time, not one after the other. The group sizes alternate the
//! same way (0, 1,000, 5,000, 5,000, 1,000, 0, ...).
//!
//! `cargo bench --bench load` prints a table and writes `target/load-report.json`. Settings by
//! environment: `LOAD_SECONDS` (per scenario, default 10), `LOAD_SLICES` (4: the slices of a
//! figure beside a bare handler, each side's), `LOAD_CONNECTIONS` (32),
//! `LOAD_GROUPS` (1000), `LOAD_RECOVERY_EVENTS` (comma-separated, default 1000000),
//! `LOAD_RESIDENT_OBJECTS` (100000 of each kind; 0 skips it), `LOAD_SIZES` (comma-separated
//! servers per group, default 0,1000,5000; empty skips it), `LOAD_BASICS` (0 skips the
//! webhook, ingestion and remote write scenarios), `LOAD_POSTGRES` (0 skips the webhooks on
//! PostgreSQL), and `FLOTILLA_ACTOR_THREADS` as the binary reads it (the actors' threads of
//! each service the harness starts in its own process).
//!
//! - webhooks on PostgreSQL: the webhook scenario with the journal in PostgreSQL (a throwaway
//!   cluster on a Unix socket, writes synced to disk), with one node and with three nodes
//!   sharing the database (the connections spread over them), beside the same on sled.
//!
//! The load generator is a small HTTP/1.1 keep-alive client over `TcpStream`, one thread per
//! connection, with requests signed before the clock starts: on a 2-core machine the client
//! shares the cores with the server, so it must cost as little as possible (and costs the same
//! against the baseline).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpResponse, HttpServer};
use flotilla::settings::Settings;
use flotilla::ticks::Ticks;
use flotilla_actors::clock::SystemClock;
use flotilla_journal::{ExpectedVersion, Journal, NewEvent};
use serde_json::{json, Value};

/// The allocator the `flotilla` binary uses, so the service measured here is the one deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[path = "../../tests/common/serve.rs"]
mod serve;

use serve::Running;

/// The bare baseline server, on its own thread, stopped on drop.
struct Bare {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Bare {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The service on `data_dir` (no rate limits), started as the tests start it, in real time;
/// answers it once ready, and how long that took.
fn start_flotilla(data_dir: &std::path::Path) -> (Running, Duration) {
    start_flotilla_on(data_dir, None)
}

/// [`start_flotilla`], with the journal in the PostgreSQL database at `database_url` if given.
fn start_flotilla_on(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> (Running, Duration) {
    start_flotilla_with(data_dir, database_url, |_| {})
}

/// [`start_flotilla_on`], with its settings adjusted by `adjust`.
fn start_flotilla_with(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
    adjust: impl FnOnce(&mut Settings),
) -> (Running, Duration) {
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_owned(),
        database_url: database_url.map(|url| url.parse().expect("any text parses")),
        webhook_rate_limit: 0,
        source_rate_limit: 0,
        // As the binary reads it, so that one build can be measured with several counts.
        actor_threads: std::env::var("FLOTILLA_ACTOR_THREADS").ok().map(|threads| {
            threads
                .parse()
                .expect("FLOTILLA_ACTOR_THREADS is a number of threads")
        }),
        ..Settings::default()
    };
    adjust(&mut settings);
    let started = Instant::now();
    let running = Running::start(settings, Arc::new(SystemClock), Ticks::Real);
    running.wait_ready(Duration::from_secs(3600));
    (running, started.elapsed())
}

/// The webhook scenario on three nodes (`--cluster`) sharing one new PostgreSQL database, each
/// in this process with its own data directory, the fleet made through the first and the
/// connections spread over all three: each call is decided by the node it reaches, against
/// the shared journal.
/// With `affinity`, each webhook's calls all go through one node (connection `c` goes to node
/// `c % 3` and calls only the webhooks whose index is `c % 3` modulo 3), as a load balancer
/// hashing on the webhook's path would; without, any node gets any webhook's calls.
fn three_nodes(groups: usize, connections: usize, seconds: f64, affinity: bool) -> Run {
    let per_connection = 8_000;
    let url = flotilla_journal::testing::durable_database(if affinity {
        "load_three_nodes_affinity"
    } else {
        "load_three_nodes"
    })
    .expect("PostgreSQL was there for one node");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Running> = dirs
        .iter()
        .enumerate()
        .map(|(n, dir)| {
            let (node, _) = start_flotilla_with(&dir.path().join("data"), Some(&url), |s| {
                s.cluster = true;
                s.node_id = Some(format!("node-{}", n + 1));
            });
            node
        })
        .collect();
    eprintln!(
        "webhooks on PostgreSQL, 3 nodes (affinity: {affinity}): setting up {groups} groups..."
    );
    let mut fleet = fleet(&nodes[0], groups);
    let requests: Vec<Vec<Vec<u8>>> = if affinity {
        let all = std::mem::take(&mut fleet.hooks);
        let mut rows: Vec<Vec<Vec<u8>>> = vec![Vec::new(); connections];
        for node in 0..3 {
            fleet.hooks = all.iter().skip(node).step_by(3).cloned().collect();
            let built = webhook_requests(nodes[0].addr, &fleet, connections, per_connection);
            for c in (node..connections).step_by(3) {
                rows[c].clone_from(&built[c]);
            }
        }
        rows
    } else {
        webhook_requests(nodes[0].addr, &fleet, connections, per_connection).to_vec()
    };
    let pick: Requests = Arc::new(move |c, i| requests[c][i % per_connection].clone());
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    drive_spread(&addrs, connections, seconds, pick)
}

/// A bare actix-web server answering every POST with 202 and a small JSON body, reading the
/// body as the real one does: the baseline.
fn start_bare() -> Bare {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(|| {
                App::new()
                    .app_data(web::PayloadConfig::new(8 << 20))
                    .service(
                        web::resource("/v1/write").to(|body: web::Bytes| async move {
                            match flotilla::api::remote_write::decode(&body) {
                                Ok(request) if !request.timeseries.is_empty() => {
                                    HttpResponse::NoContent().finish()
                                }
                                _ => HttpResponse::BadRequest().finish(),
                            }
                        }),
                    )
                    .default_service(web::to(|body: web::Bytes| async move {
                        HttpResponse::Accepted()
                            .json(json!({"outcome": "executed", "bytes": body.len()}))
                    }))
            })
            .workers(2)
            .bind("127.0.0.1:0")
            .unwrap();
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((addr, server.handle())).unwrap();
            server.await.unwrap();
        });
    });
    let (addr, handle) = rx.recv().unwrap();
    Bare {
        addr,
        handle,
        thread: Some(thread),
    }
}

/// A keep-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Connection {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::with_capacity(64 * 1024, stream),
        }
    }

    /// Sends one request and reads its answer; returns the status.
    fn round_trip(&mut self, request: &[u8]) -> u16 {
        self.exchange(request).0
    }

    /// Sends one request and reads its answer: the status and the body.
    fn exchange(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        self.writer.write_all(request).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, body)
    }

    /// A JSON call on this connection; panics unless it answers 2xx.
    fn call(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> Value {
        let body = serde_json::to_vec(&body).unwrap();
        let request = request(
            method,
            addr,
            path,
            &[
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".into()),
            ],
            &body,
        );
        let (status, answer) = self.exchange(&request);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        serde_json::from_slice(&answer).unwrap_or(Value::Null)
    }
}

fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The figures of one run of one scenario.
#[derive(Debug, Clone)]
struct Run {
    requests: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    /// Every request's latency (µs), sorted.
    latencies: Vec<u64>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The figures of `latencies` (sorted) and `statuses` over `seconds`.
    fn of(
        latencies: Vec<u64>,
        statuses: std::collections::BTreeMap<u16, u64>,
        seconds: f64,
    ) -> Run {
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        Run {
            requests: latencies.len() as u64,
            seconds,
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
            statuses,
            latencies,
        }
    }

    /// The runs of one scenario taken as one: their requests over their time together.
    fn merged(runs: Vec<Run>) -> Run {
        let seconds = runs.iter().map(|run| run.seconds).sum();
        let mut statuses = std::collections::BTreeMap::new();
        let mut latencies = Vec::new();
        for run in runs {
            for (status, n) in run.statuses {
                *statuses.entry(status).or_insert(0) += n;
            }
            latencies.extend(run.latencies);
        }
        latencies.sort_unstable();
        Run::of(latencies, statuses, seconds)
    }
}

/// What connection `c` sends as its `i`-th request.
type Requests = Arc<dyn Fn(usize, usize) -> Vec<u8> + Send + Sync>;

/// How many slices [`beside_bare`] cuts each side's time into (`LOAD_SLICES`, 4 by default).
fn slices() -> usize {
    env("LOAD_SLICES", 4).max(1)
}

/// The same scenario against the bare baseline and against the service, `seconds` each, in
/// [`slices`] alternating slices (baseline, service, service, baseline, ...), so that both see
/// the same phases of a machine whose speed drifts: each side's figures over all its slices,
/// the baseline's first. `requests(addr)` builds a slice's requests for an address.
fn beside_bare(
    bare: SocketAddr,
    service: SocketAddr,
    connections: usize,
    seconds: f64,
    requests: impl Fn(SocketAddr) -> Requests,
) -> (Run, Run) {
    let slices = slices();
    let slice_seconds = seconds / slices as f64;
    let run = |addr| drive(addr, connections, slice_seconds, requests(addr));
    let (mut baseline, mut measured) = (Vec::new(), Vec::new());
    for slice in 0..slices {
        if slice % 2 == 0 {
            baseline.push(run(bare));
            measured.push(run(service));
        } else {
            measured.push(run(service));
            baseline.push(run(bare));
        }
    }
    (Run::merged(baseline), Run::merged(measured))
}

/// Drives `addr` with `connections` threads for `seconds`; connection `c` sends
/// `requests(c, i)` as its `i`-th request.
fn drive(addr: SocketAddr, connections: usize, seconds: f64, requests: Requests) -> Run {
    drive_spread(&[addr], connections, seconds, requests)
}

/// [`drive`] over several addresses: connection `c` goes to `addrs[c % addrs.len()]`.
fn drive_spread(addrs: &[SocketAddr], connections: usize, seconds: f64, requests: Requests) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let (stop, requests) = (stop.clone(), requests.clone());
            let addr = addrs[c % addrs.len()];
            std::thread::spawn(move || {
                let mut connection = Connection::open(addr);
                let mut latencies = Vec::with_capacity(100_000);
                let mut statuses = std::collections::BTreeMap::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let request = requests(c, i);
                    let sent = Instant::now();
                    let status = connection.round_trip(&request);
                    latencies.push(sent.elapsed().as_micros() as u64);
                    *statuses.entry(status).or_insert(0) += 1;
                    i += 1;
                }
                (latencies, statuses)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for thread in threads {
        let (l, s) = thread.join().unwrap();
        latencies.extend(l);
        for (status, n) in s {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Run::of(latencies, statuses, elapsed)
}

/// The latencies (µs, sorted) and the statuses of a signed caller from 127.0.0.2 calling
/// `path` at 40 calls a second (under the default per-webhook limit of 50) for `seconds`,
/// nonces numbered from `first`.
fn paced_signed_calls(
    addr: SocketAddr,
    (path, key): &(String, Vec<u8>),
    first: usize,
    seconds: f64,
) -> (Vec<u64>, std::collections::BTreeMap<u16, u64>) {
    let client = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let body = br#"{"alarm":"cpu-high","value":0.93}"#;
    let (mut latencies, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
    let every = Duration::from_millis(25);
    let started = Instant::now();
    let mut next = started;
    let mut n = first;
    while started.elapsed().as_secs_f64() < seconds {
        let (now, nonce) = (unix_now(), format!("msg_signed_{n}"));
        let signature = flotilla::signature::sign(key, &nonce, now, body);
        let sent = Instant::now();
        let response = client
            .post(format!("http://{addr}{path}"))
            .header("webhook-id", nonce)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let _ = response.bytes();
        latencies.push(sent.elapsed().as_micros() as u64);
        *statuses.entry(status).or_insert(0) += 1;
        n += 1;
        // Pacing the caller, not waiting for the service.
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    latencies.sort_unstable();
    (latencies, statuses)
}

/// The flood scenario: on a service with the default rate limits, the signed caller alone,
/// then beside four connections from 127.0.0.1 sending calls with a bad signature to the same
/// webhook. Answers the caller's runs (alone, flooded) and the flood's run.
#[allow(clippy::type_complexity)]
fn flood(
    seconds: f64,
) -> (
    (Vec<u64>, std::collections::BTreeMap<u16, u64>),
    (Vec<u64>, std::collections::BTreeMap<u16, u64>),
    Run,
) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data"),
        ..Settings::default()
    };
    let service = Running::start(settings, Arc::new(SystemClock), Ticks::Real);
    service.wait_ready(Duration::from_secs(60));
    let hook = fleet(&service, 1).hooks[0].clone();
    let alone = paced_signed_calls(service.addr, &hook, 0, seconds);
    let body = br#"{"alarm":"cpu-high","value":0.93}"#;
    let (addr, path) = (service.addr, hook.0.clone());
    let bad = Arc::new(move |c: usize, i: usize| {
        request(
            "POST",
            addr,
            &path,
            &[
                ("webhook-id", format!("msg_bad_{c}_{i}")),
                ("webhook-timestamp", unix_now().to_string()),
                ("webhook-signature", format!("v1,{}", "A".repeat(44))),
                ("content-type", "application/json".into()),
            ],
            body,
        )
    });
    let flooding = std::thread::spawn(move || drive(addr, 4, seconds, bad));
    let flooded = paced_signed_calls(service.addr, &hook, 1_000_000, seconds);
    let flood = flooding.join().unwrap();
    (alone, flooded, flood)
}

/// A small blocking JSON client for setting the service up.
fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: Value) -> Value {
    Connection::open(addr).call(addr, method, path, token, body)
}

/// A new tenant's token.
fn new_tenant(addr: SocketAddr, operator_token: &str, name: &str) -> String {
    let tenant = call(
        addr,
        "POST",
        "/v1/tenants",
        operator_token,
        json!({"name": name}),
    );
    tenant["token"].as_str().unwrap().to_owned()
}

/// A change policy of `adjustment` on group `gid` with a webhook: the policy's id, and the
/// webhook's path and signing key.
fn policy_with_webhook(
    addr: SocketAddr,
    token: &str,
    gid: &str,
    adjustment: i64,
) -> (String, (String, Vec<u8>)) {
    let policy = call(
        addr,
        "POST",
        &format!("/v1/groups/{gid}/policies"),
        token,
        json!({"name": "step", "adjustment_type": "change", "adjustment": adjustment}),
    );
    let pid = policy["id"].as_str().unwrap().to_owned();
    let hook = webhook_of(addr, token, gid, &pid);
    (pid, hook)
}

/// A new webhook for policy `pid` of group `gid`: its path and signing key.
fn webhook_of(addr: SocketAddr, token: &str, gid: &str, pid: &str) -> (String, Vec<u8>) {
    let hook = call(
        addr,
        "POST",
        &format!("/v1/groups/{gid}/policies/{pid}/webhooks"),
        token,
        json!({"name": "h"}),
    );
    let key = flotilla::signature::key_of(hook["secret"].as_str().unwrap()).unwrap();
    (format!("/v1/hooks/{}", hook["id"].as_str().unwrap()), key)
}

/// Waits until group `gid` has `size` active servers (polling, for at most 30 minutes from
/// `started`).
fn wait_active(addr: SocketAddr, token: &str, gid: &str, size: usize, started: Instant) {
    loop {
        let group = call(
            addr,
            "GET",
            &format!("/v1/groups/{gid}"),
            token,
            Value::Null,
        );
        if group["active"].as_u64() == Some(size as u64) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{gid} never reached {size} active servers: {group}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Fleet {
    hooks: Vec<(String, Vec<u8>)>,
    metrics_tokens: Vec<String>,
    token: String,
    groups: Vec<String>,
}

/// A tenant and `groups` groups, each with a policy (cooldown 0), a webhook and an alarm. The
/// groups' max_size is 1: every call executes its policy and is journaled, but after the first
/// the outcome is `no_change`, so the converger (benched on its own) stays out of the figure.
fn fleet(service: &Running, groups: usize) -> Fleet {
    let addr = service.addr;
    let token = new_tenant(addr, &service.operator_token, "load");
    let mut hooks = Vec::new();
    let mut metrics_tokens = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..groups {
        let group = call(
            addr,
            "POST",
            "/v1/groups",
            &token,
            json!({"name": "g", "min_size": 0, "max_size": 1,
            "cooldown_seconds": 0, "launch": {"provider": "simulated"}}),
        );
        let gid = group["id"].as_str().unwrap().to_owned();
        ids.push(gid.clone());
        metrics_tokens.push(group["metrics_token"].as_str().unwrap().to_owned());
        let (pid, hook) = policy_with_webhook(addr, &token, &gid, 1);
        hooks.push(hook);
        call(
            addr,
            "POST",
            "/v1/alarms",
            &token,
            json!({"name": "cpu", "group_id": gid, "metric": "cpu",
            "statistic": "avg", "period_seconds": 60, "evaluation_periods": 3, "comparison": "gt", "threshold": 0.8,
            "alarm_actions": [pid]}),
        );
    }
    Fleet {
        hooks,
        metrics_tokens,
        token,
        groups: ids,
    }
}

/// Remote write bodies of 500 samples: one series per sample, `cpu` of the fleet's groups in
/// turn (`flotilla_group`), each body starting at another group.
fn remote_write_bodies(groups: &[String], now_ms: i64, count: usize) -> Vec<Vec<u8>> {
    use flotilla::api::remote_write::{Label, RemoteSample, TimeSeries, WriteRequest};
    use prost::Message;
    (0..count)
        .map(|b| {
            let timeseries = (0..500)
                .map(|i| TimeSeries {
                    labels: vec![
                        Label {
                            name: "__name__".into(),
                            value: "cpu".into(),
                        },
                        Label {
                            name: "flotilla_group".into(),
                            value: groups[(b * 500 + i) % groups.len()].clone(),
                        },
                        Label {
                            name: "instance".into(),
                            value: format!("10.0.0.{}:9100", i % 250),
                        },
                    ],
                    samples: vec![RemoteSample {
                        value: 0.1 + (i % 50) as f64 / 100.0,
                        timestamp: now_ms,
                    }],
                })
                .collect();
            let request = WriteRequest { timeseries };
            snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .unwrap()
        })
        .collect()
}

/// `groups` groups of `size` active simulated servers each, on a fresh service, and webhooks
/// to call them. Without `churn` each group's policy is at its bound (min = max = desired =
/// `size`), so every call is a durable `no_change` and the converger has nothing to do while
/// they run. With `churn` each group has two policies, +10 and -10 (bounds 0 and 10,000),
/// whose webhooks are called in turn: every call changes capacity, and the converger launches
/// and deletes servers for the same groups while the calls run. Each policy has enough webhooks
/// that none remembers as many nonces as its window holds before `seconds` of calls end: a
/// full window answers 429, far cheaper than a durable call, and those answers would count in
/// the rate.
struct Sized {
    service: Running,
    _dir: tempfile::TempDir,
    churn: bool,
    fleet: Fleet,
    /// How long the servers took to become active.
    converged: Duration,
}

impl Sized {
    fn start(size: usize, groups: usize, churn: bool, seconds: f64) -> Sized {
        let dir = tempfile::tempdir().unwrap();
        let (service, _) = start_flotilla(&dir.path().join("data"));
        let addr = service.addr;
        let token = new_tenant(addr, &service.operator_token, "sized");
        let mut hooks = Vec::new();
        let mut ids = Vec::new();
        let (min, max) = if churn { (0, 10_000) } else { (size, size) };
        let steps: &[i64] = if churn { &[10, -10] } else { &[1] };
        // Room for 40,000 calls a second, twice the most seen here.
        let window = Settings::default().webhook_nonce_window as f64;
        let policy_count = (groups * steps.len()) as f64;
        let hooks_per_policy = (seconds * 40_000.0 / (policy_count * window))
            .ceil()
            .max(1.0) as usize;
        for _ in 0..groups {
            let group = call(
                addr,
                "POST",
                "/v1/groups",
                &token,
                json!({"name": "g", "min_size": min, "max_size": max, "desired_capacity": size,
                "cooldown_seconds": 0, "launch": {"provider": "simulated"}}),
            );
            let gid = group["id"].as_str().unwrap().to_owned();
            let mut policies = Vec::new();
            for step in steps {
                let (pid, hook) = policy_with_webhook(addr, &token, &gid, *step);
                hooks.push(hook);
                policies.push(pid);
            }
            // In turn, as the first ones: with churn, +10 then -10.
            for _ in 1..hooks_per_policy {
                for pid in &policies {
                    hooks.push(webhook_of(addr, &token, &gid, pid));
                }
            }
            ids.push(gid);
        }
        let started = Instant::now();
        for gid in &ids {
            wait_active(addr, &token, gid, size, started);
        }
        let converged = started.elapsed();
        let fleet = Fleet {
            hooks,
            metrics_tokens: Vec::new(),
            token,
            groups: ids,
        };
        Sized {
            service,
            _dir: dir,
            churn,
            fleet,
            converged,
        }
    }

    /// `seconds` of calls from `connections` connections, signed now, with nonces of their own
    /// for `slice`: room for 40,000 calls a second, a nonce sent twice would be refused.
    fn drive(&self, slice: usize, connections: usize, seconds: f64) -> Run {
        let per_connection = ((seconds * 40_000.0 / connections as f64).ceil() as usize).max(1);
        let requests = signed_requests(
            self.service.addr,
            &self.fleet,
            connections,
            per_connection,
            &format!("slice{slice}"),
        );
        let pick: Requests = Arc::new(move |c, i| requests[c][i % per_connection].clone());
        drive(self.service.addr, connections, seconds, pick)
    }

    /// Checks that every call of `run` was answered 202 and, by the service's own count, had
    /// the outcome meant: with churn every one must have changed capacity, else the row would
    /// measure something else.
    fn check(&self, run: &Run) {
        let answered = run.statuses.get(&202).copied().unwrap_or(0);
        assert_eq!(
            answered,
            run.statuses.values().sum::<u64>(),
            "every call should be answered 202: {:?}",
            run.statuses
        );
        let outcomes = webhook_outcomes(self.service.addr, &self.service.operator_token);
        let expected = if self.churn { "executed" } else { "no_change" };
        assert_eq!(
            outcomes.get(expected).copied().unwrap_or(0),
            answered,
            "every answered call should be {expected}: {outcomes:?}"
        );
    }
}

/// Webhook calls on `groups` groups of each of `sizes` servers (without churn, see [`Sized`]),
/// every size on its own service, all set up first, then driven `seconds` each in [`slices`]
/// alternating slices (the sizes in order, then in reverse, ...), so that every size sees the
/// same phases of a machine whose speed drifts. All the services run through every slice, so
/// each slice also carries every size's background work (the converger's pass over each
/// group's servers once a second): the rates compare what the calls themselves cost. Answers
/// each size's run and how long its servers took to become active.
fn by_size(
    sizes: &[usize],
    groups: usize,
    connections: usize,
    seconds: f64,
) -> Vec<(usize, Run, Duration)> {
    let fleets: Vec<Sized> = sizes
        .iter()
        .map(|&size| {
            eprintln!("{groups} groups of {size} servers...");
            Sized::start(size, groups, false, seconds)
        })
        .collect();
    let slices = slices();
    let mut runs: Vec<Vec<Run>> = fleets.iter().map(|_| Vec::new()).collect();
    for slice in 0..slices {
        let mut order: Vec<usize> = (0..fleets.len()).collect();
        if slice % 2 == 1 {
            order.reverse();
        }
        for k in order {
            runs[k].push(fleets[k].drive(slice, connections, seconds / slices as f64));
        }
    }
    fleets
        .iter()
        .zip(sizes)
        .zip(runs)
        .map(|((fleet, &size), runs)| {
            let run = Run::merged(runs);
            fleet.check(&run);
            (size, run, fleet.converged)
        })
        .collect()
}

/// `flotilla_webhooks_total` from the service's `/metrics`, by outcome.
fn webhook_outcomes(
    addr: SocketAddr,
    operator_token: &str,
) -> std::collections::BTreeMap<String, u64> {
    let probe = request(
        "GET",
        addr,
        "/metrics",
        &[("authorization", format!("Bearer {operator_token}"))],
        b"",
    );
    let (status, body) = Connection::open(addr).exchange(&probe);
    assert_eq!(status, 200, "GET /metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|line| line.strip_prefix("flotilla_webhooks_total{outcome=\""))
        .filter_map(|rest| {
            let (outcome, count) = rest.split_once("\"} ")?;
            Some((outcome.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signed webhook requests, distinct nonces, round-robin over the webhooks.
fn webhook_requests(
    addr: SocketAddr,
    fleet: &Fleet,
    connections: usize,
    per_connection: usize,
) -> Arc<Vec<Vec<Vec<u8>>>> {
    signed_requests(addr, fleet, connections, per_connection, "msg")
}

/// [`webhook_requests`] signed now, their nonces starting with `prefix`.
fn signed_requests(
    addr: SocketAddr,
    fleet: &Fleet,
    connections: usize,
    per_connection: usize,
    prefix: &str,
) -> Arc<Vec<Vec<Vec<u8>>>> {
    let body = br#"{"alarm":"cpu-high","value":0.93}"#;
    let now = unix_now();
    let all = (0..connections)
        .map(|c| {
            (0..per_connection)
                .map(|i| {
                    // Each connection starts at its own webhook: not all in step on one group.
                    let (path, key) = &fleet.hooks[(c + i) % fleet.hooks.len()];
                    let nonce = format!("{prefix}_{c}_{i}");
                    let signature = flotilla::signature::sign(key, &nonce, now, body);
                    request(
                        "POST",
                        addr,
                        path,
                        &[
                            ("webhook-id", nonce),
                            ("webhook-timestamp", now.to_string()),
                            ("webhook-signature", signature),
                            ("content-type", "application/json".into()),
                        ],
                        body,
                    )
                })
                .collect()
        })
        .collect();
    Arc::new(all)
}

fn readdress(
    requests: &[Vec<Vec<u8>>],
    from: SocketAddr,
    to: SocketAddr,
) -> Arc<Vec<Vec<Vec<u8>>>> {
    let (from, to) = (format!("host: {from}"), format!("host: {to}"));
    Arc::new(
        requests
            .iter()
            .map(|c| {
                c.iter()
                    .map(|r| {
                        let text = String::from_utf8_lossy(r).replacen(&from, &to, 1);
                        text.into_bytes()
                    })
                    .collect()
            })
            .collect(),
    )
}

fn samples_body(now: i64) -> Vec<u8> {
    let samples: Vec<Value> = (0..1000)
        .map(|i| json!({"metric": "cpu", "value": 0.1 + f64::from(i % 50) / 100.0, "timestamp": now as f64 + f64::from(i % 10) / 10.0, "server": "srv-1"}))
        .collect();
    serde_json::to_vec(&json!({ "samples": samples })).unwrap()
}

/// A journal of `events` events over 10k streams, written directly (as the service would have).
fn journal_of(dir: &std::path::Path, events: u64) {
    let journal = Journal::open(dir).unwrap();
    let payload = json!({"type": "policy_executed", "policy_id": "pol_x", "cause": {"type": "direct"},
        "outcome": "no_change", "capacity": 3, "computation": {"current": 3, "adjustment": {"kind": "change", "value": 0},
        "raw": 3, "constraints": [], "result": 3}, "at": 0});
    let mut written = 0;
    let mut n = 0;
    while written < events {
        let batch = 1000.min(events - written);
        let records = (0..batch)
            .map(|_| NewEvent::json("policy_executed", 1, 0, &payload).unwrap())
            .collect();
        journal
            .append(
                &format!("grp_r{}", n % 10_000),
                ExpectedVersion::Any,
                records,
            )
            .unwrap();
        written += batch;
        n += 1;
    }
}

/// Waits until no journal holds the sled directory `dir` (sled holds a lock on its `db` file):
/// a journal dropped in this process lets go of it a moment later, once sled's threads have
/// freed its page table, and a binary started before then would wait for it inside its
/// figure.
fn wait_unlocked(dir: &std::path::Path) {
    let db = std::fs::File::open(dir.join("db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.try_lock().is_err() {
        assert!(Instant::now() < deadline, "{} stays locked", dir.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    db.unlock().unwrap();
}

/// The bytes of the files under `dir`, as the journal closed them.
fn bytes_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// The real `flotilla` binary serving a data directory, killed on drop.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
    operator_token: String,
    /// From its spawn to its first ready answer (`/readyz` polled every 2 ms).
    ready_after: Duration,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Child {
    fn start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Child {
        // A free port: bound, read, let go, handed to the child.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let spawned = Instant::now();
        let process = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed on drop from here on, if it never gets ready too.
        let mut child = Child {
            process,
            addr,
            operator_token: String::new(),
            ready_after: Duration::ZERO,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "flotilla did not get ready");
            std::thread::sleep(Duration::from_millis(2));
            let ready = TcpStream::connect(addr).is_ok_and(|_| {
                let mut connection = Connection::open(addr);
                let probe = request("GET", addr, "/readyz", &[], b"");
                connection.exchange(&probe).0 == 200
            });
            if ready {
                break;
            }
        }
        child.ready_after = spawned.elapsed();
        child.operator_token = std::fs::read_to_string(data_dir.join("operator.token"))
            .unwrap()
            .trim()
            .to_owned();
        child
    }

    /// Stops it as an operator would: SIGTERM, then waits for it to exit, cleanly.
    fn stop(mut self) {
        let pid = self.process.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                break status;
            }
            // Killed on drop.
            assert!(
                Instant::now() < deadline,
                "flotilla still runs a minute after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "flotilla exited with {status} after SIGTERM"
        );
    }

    /// Its resident set size in bytes, from `/proc/<pid>/status`.
    fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// Memory of servers: the `flotilla` binary with `n` active simulated servers, in groups of
/// 10,000 (the most a group may have). Answers its RSS empty (ready, nothing created), its RSS
/// once every server is active and the RSS has settled, and how long they took.
fn resident_servers(n: usize) -> (u64, u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let child = Child::start(&dir.path().join("data"), &[]);
    let empty = child.rss_bytes();
    let addr = child.addr;
    let token = new_tenant(addr, &child.operator_token, "servers");
    let started = Instant::now();
    let mut groups = Vec::new();
    let mut left = n;
    while left > 0 {
        let size = left.min(10_000);
        left -= size;
        let group = call(
            addr,
            "POST",
            "/v1/groups",
            &token,
            json!({"name": "g", "min_size": size, "max_size": size, "desired_capacity": size,
            "launch": {"provider": "simulated"}}),
        );
        groups.push((group["id"].as_str().unwrap().to_owned(), size));
    }
    for (gid, size) in &groups {
        wait_active(addr, &token, gid, *size, started);
    }
    let took = started.elapsed();
    // Launching leaves garbage the allocator gives back over the next seconds: read the RSS
    // once it has settled (changed by under 1% in 5 s), or after a minute.
    let mut rss = child.rss_bytes();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_secs(5));
        let now = child.rss_bytes();
        let settled = now.abs_diff(rss) * 100 < rss;
        rss = now;
        if settled {
            break;
        }
    }
    (empty, rss, took)
}

/// Memory: the `flotilla` binary with `n` groups, `n` policies and `n` alarms, all created over
/// HTTP by `connections` keep-alive clients. With `idle_seconds`, its actors stop once idle that
/// long, and the RSS is read once they all have; without, every actor is still resident when
/// it is read. Answers its RSS empty (ready, nothing created), its RSS full, and how long the
/// creation took.
fn resident(n: usize, connections: usize, idle_seconds: Option<u32>) -> (u64, u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let idle = idle_seconds.map_or("0".to_owned(), |s| s.to_string());
    let child = Child::start(
        &dir.path().join("data"),
        &[("FLOTILLA_ACTOR_IDLE_SECONDS", idle.as_str())],
    );
    let empty = child.rss_bytes();
    let addr = child.addr;
    let token = new_tenant(addr, &child.operator_token, "resident");
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let token = token.clone();
            std::thread::spawn(move || {
                let mut connection = Connection::open(addr);
                for _ in (c..n).step_by(connections) {
                    let group = connection.call(addr, "POST", "/v1/groups", &token,
                        json!({"name": "g", "min_size": 0, "max_size": 10, "launch": {"provider": "simulated"}}));
                    let gid = group["id"].as_str().unwrap().to_owned();
                    let policy = connection.call(addr, "POST", &format!("/v1/groups/{gid}/policies"), &token,
                        json!({"name": "up", "adjustment_type": "change", "adjustment": 1}));
                    let pid = policy["id"].as_str().unwrap().to_owned();
                    connection.call(addr, "POST", "/v1/alarms", &token,
                        json!({"name": "cpu", "group_id": gid, "metric": "cpu", "statistic": "avg",
                        "period_seconds": 60, "evaluation_periods": 3, "comparison": "gt", "threshold": 0.8,
                        "alarm_actions": [pid]}));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let took = started.elapsed();
    if idle_seconds.is_some() {
        let deadline = Instant::now() + Duration::from_secs(120);
        while gauge(&child, "flotilla_actors_resident") > 0 {
            assert!(Instant::now() < deadline, "the idle actors never stopped");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    (empty, child.rss_bytes(), took)
}

/// A gauge's value in `child`'s `/metrics`.
fn gauge(child: &Child, name: &str) -> u64 {
    let mut connection = Connection::open(child.addr);
    let (_, body) = connection.exchange(&request("GET", child.addr, "/metrics", &[], b""));
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let seconds: f64 = env("LOAD_SECONDS", 10.0);
    let connections: usize = env("LOAD_CONNECTIONS", 32);
    let groups: usize = env("LOAD_GROUPS", 1000);
    let recovery: String = env("LOAD_RECOVERY_EVENTS", "1000000".to_owned());
    let objects: usize = env("LOAD_RESIDENT_OBJECTS", 100_000);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut report = serde_json::Map::new();
    report.insert("cores".into(), cores.into());
    report.insert("connections".into(), connections.into());
    println!(
        "flotilla load harness: {cores} cores, {connections} connections, {seconds} s a scenario"
    );

    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    if env("LOAD_BASICS", 1) > 0 {
        let dir = tempfile::tempdir().unwrap();
        let (service, _) = start_flotilla(&dir.path().join("data"));
        let bare = start_bare();
        eprintln!("setting up {groups} groups with a policy, a webhook and an alarm each...");
        let fleet = fleet(&service, groups);

        // Webhooks: enough distinct requests that no nonce repeats within the run.
        let per_connection = 20_000;
        // A connection's calls to the service go on from where its last slice stopped.
        let requests = webhook_requests(service.addr, &fleet, connections, per_connection);
        let bare_requests = readdress(&requests, service.addr, bare.addr);
        let sent: Arc<Vec<AtomicUsize>> =
            Arc::new((0..connections).map(|_| AtomicUsize::new(0)).collect());
        let (base, hooks) = beside_bare(
            bare.addr,
            service.addr,
            connections,
            seconds,
            |addr| -> Requests {
                if addr == bare.addr {
                    let requests = bare_requests.clone();
                    Arc::new(move |c, i| requests[c][i % per_connection].clone())
                } else {
                    let (requests, sent) = (requests.clone(), sent.clone());
                    Arc::new(move |c, _| {
                        let i = sent[c].fetch_add(1, Ordering::Relaxed);
                        requests[c][i % per_connection].clone()
                    })
                }
            },
        );

        // Ingestion: batches of 1,000 samples with each group's metrics token.
        let body = Arc::new(samples_body(unix_now()));
        let ingest_requests = |addr: SocketAddr| -> Requests {
            let tokens = fleet.metrics_tokens.clone();
            let body = body.clone();
            Arc::new(move |c, i| {
                let token = &tokens[(c + i) % tokens.len()];
                request(
                    "POST",
                    addr,
                    "/v1/metrics",
                    &[
                        ("authorization", format!("Bearer {token}")),
                        ("content-type", "application/json".into()),
                    ],
                    &body,
                )
            })
        };
        let (bare_ingest, ingest) = beside_bare(
            bare.addr,
            service.addr,
            connections.min(8),
            seconds,
            ingest_requests,
        );

        // Remote write: bodies of 500 samples with the tenant's token.
        let bodies = Arc::new(remote_write_bodies(&fleet.groups, unix_now() * 1000, 64));
        let write_requests = |addr: SocketAddr| -> Requests {
            let bodies = bodies.clone();
            let token = fleet.token.clone();
            Arc::new(move |c, i| {
                request(
                    "POST",
                    addr,
                    "/v1/write",
                    &[
                        ("authorization", format!("Bearer {token}")),
                        ("content-type", "application/x-protobuf".into()),
                        ("content-encoding", "snappy".into()),
                        ("x-prometheus-remote-write-version", "0.1.0".into()),
                    ],
                    &bodies[(c + i) % bodies.len()],
                )
            })
        };
        let (bare_write, write) = beside_bare(
            bare.addr,
            service.addr,
            connections.min(8),
            seconds,
            write_requests,
        );
        drop(service);
        drop(bare);

        rows.push((
            "webhooks/s (signed, journaled)".into(),
            format!("{:.0}", hooks.per_second()),
            format!("{:.0} (bare handler)", base.per_second()),
            ratio(hooks.per_second(), base.per_second()),
        ));
        rows.push((
            "webhook p50 / p99 / p999".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                hooks.p50_us as f64 / 1e3,
                hooks.p99_us as f64 / 1e3,
                hooks.p999_us as f64 / 1e3
            ),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                base.p50_us as f64 / 1e3,
                base.p99_us as f64 / 1e3,
                base.p999_us as f64 / 1e3
            ),
            ratio(hooks.p99_us as f64, base.p99_us as f64),
        ));
        rows.push((
            "samples/s (batches of 1,000)".into(),
            format!("{:.0}", ingest.per_second() * 1000.0),
            format!("{:.0} (bare POST)", bare_ingest.per_second() * 1000.0),
            ratio(ingest.per_second(), bare_ingest.per_second()),
        ));
        rows.push((
            "remote write samples/s (bodies of 500)".into(),
            format!("{:.0}", write.per_second() * 500.0),
            format!("{:.0} (bare decode)", bare_write.per_second() * 500.0),
            ratio(write.per_second(), bare_write.per_second()),
        ));
        report.insert("remote_write".into(), json!({"samples_per_second": write.per_second() * 500.0, "statuses": format!("{:?}", write.statuses),
            "baseline_samples_per_second": bare_write.per_second() * 500.0, "baseline_statuses": format!("{:?}", bare_write.statuses)}));
        report.insert("webhooks".into(), json!({"per_second": hooks.per_second(), "p50_us": hooks.p50_us, "p99_us": hooks.p99_us, "p999_us": hooks.p999_us,
            "statuses": format!("{:?}", hooks.statuses), "baseline_per_second": base.per_second(), "baseline_p99_us": base.p99_us}));
        report.insert("ingestion".into(), json!({"samples_per_second": ingest.per_second() * 1000.0, "statuses": format!("{:?}", ingest.statuses),
            "baseline_samples_per_second": bare_ingest.per_second() * 1000.0}));
        eprintln!(
            "webhook statuses {:?}, ingestion statuses {:?}",
            hooks.statuses, ingest.statuses
        );
    }
    // Webhooks with the journal in PostgreSQL, one node, beside the same on sled in the same
    // run: a local cluster started for the run that syncs its commits like a production one.
    if env("LOAD_POSTGRES", 1) > 0 {
        match flotilla_journal::testing::durable_database("load") {
            None => eprintln!("no PostgreSQL here: skipping the PostgreSQL rows"),
            Some(url) => {
                let per_connection = 20_000;
                let mut runs = Vec::new();
                for database_url in [None, Some(url.as_str())] {
                    let dir = tempfile::tempdir().unwrap();
                    let (service, _) = start_flotilla_on(&dir.path().join("data"), database_url);
                    eprintln!(
                        "webhooks on {}: setting up {groups} groups...",
                        if database_url.is_some() {
                            "PostgreSQL"
                        } else {
                            "sled"
                        }
                    );
                    let fleet = fleet(&service, groups);
                    let requests =
                        webhook_requests(service.addr, &fleet, connections, per_connection);
                    let pick: Requests =
                        Arc::new(move |c, i| requests[c][i % per_connection].clone());
                    runs.push(drive(service.addr, connections, seconds, pick));
                }
                let (sled, postgres) = (&runs[0], &runs[1]);
                rows.push((
                    "webhooks/s, PostgreSQL, 1 node".into(),
                    format!("{:.0}", postgres.per_second()),
                    format!("{:.0} (the same on sled)", sled.per_second()),
                    ratio(postgres.per_second(), sled.per_second()),
                ));
                rows.push((
                    "webhook p50 / p99, PostgreSQL, 1 node".into(),
                    format!(
                        "{:.2} / {:.2} ms",
                        postgres.p50_us as f64 / 1e3,
                        postgres.p99_us as f64 / 1e3
                    ),
                    format!(
                        "{:.2} / {:.2} ms (sled)",
                        sled.p50_us as f64 / 1e3,
                        sled.p99_us as f64 / 1e3
                    ),
                    ratio(postgres.p99_us as f64, sled.p99_us as f64),
                ));
                report.insert("postgres".into(), json!({"per_second": postgres.per_second(), "p50_us": postgres.p50_us, "p99_us": postgres.p99_us,
                    "statuses": format!("{:?}", postgres.statuses), "sled_per_second": sled.per_second(), "sled_p99_us": sled.p99_us,
                    "sled_statuses": format!("{:?}", sled.statuses)}));
                let three = three_nodes(groups, connections, seconds, false);
                let sticky = three_nodes(groups, connections, seconds, true);
                rows.push((
                    "webhooks/s, PostgreSQL, 3 nodes".into(),
                    format!("{:.0}", three.per_second()),
                    format!("{:.0} (the same on sled)", sled.per_second()),
                    ratio(three.per_second(), sled.per_second()),
                ));
                rows.push((
                    "webhook p50 / p99, PostgreSQL, 3 nodes".into(),
                    format!(
                        "{:.2} / {:.2} ms",
                        three.p50_us as f64 / 1e3,
                        three.p99_us as f64 / 1e3
                    ),
                    format!(
                        "{:.2} / {:.2} ms (sled)",
                        sled.p50_us as f64 / 1e3,
                        sled.p99_us as f64 / 1e3
                    ),
                    ratio(three.p99_us as f64, sled.p99_us as f64),
                ));
                rows.push((
                    "webhooks/s, PostgreSQL, 3 nodes, a webhook's calls through one node".into(),
                    format!("{:.0}", sticky.per_second()),
                    format!("{:.0} (the same on sled)", sled.per_second()),
                    ratio(sticky.per_second(), sled.per_second()),
                ));
                rows.push((
                    "webhook p50 / p99, PostgreSQL, 3 nodes, a webhook through one node".into(),
                    format!(
                        "{:.2} / {:.2} ms",
                        sticky.p50_us as f64 / 1e3,
                        sticky.p99_us as f64 / 1e3
                    ),
                    format!(
                        "{:.2} / {:.2} ms (sled)",
                        sled.p50_us as f64 / 1e3,
                        sled.p99_us as f64 / 1e3
                    ),
                    ratio(sticky.p99_us as f64, sled.p99_us as f64),
                ));
                eprintln!(
                    "webhook statuses: sled {:?}, PostgreSQL 1 node {:?}, 3 nodes {:?}, 3 nodes with affinity {:?}",
                    sled.statuses, postgres.statuses, three.statuses, sticky.statuses
                );
                report.insert(
                    "postgres_three_nodes".into(),
                    json!({"per_second": three.per_second(), "p50_us": three.p50_us,
                    "p99_us": three.p99_us, "statuses": format!("{:?}", three.statuses),
                    "affinity_per_second": sticky.per_second(), "affinity_p50_us": sticky.p50_us, "affinity_p99_us": sticky.p99_us,
                    "affinity_statuses": format!("{:?}", sticky.statuses)}),
                );
            }
        }
    }
    let sizes: String = env("LOAD_SIZES", "0,1000,5000".to_owned());
    let sizes: Vec<usize> = sizes
        .split(',')
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .collect();
    let mut by_size = Vec::new();
    for (size, run, converged) in self::by_size(&sizes, 16, connections, seconds) {
        eprintln!(
            "  {size} servers: statuses {:?}, active after {:.1} s",
            run.statuses,
            converged.as_secs_f64()
        );
        by_size.push((size, run));
    }
    if let Some((_, empty)) = by_size.first().cloned() {
        for (size, run) in &by_size {
            rows.push((
                format!("webhooks/s, 16 groups of {size} servers (p50 / p99)"),
                format!(
                    "{:.0} ({:.2} / {:.2} ms)",
                    run.per_second(),
                    run.p50_us as f64 / 1e3,
                    run.p99_us as f64 / 1e3
                ),
                format!(
                    "{:.0} ({:.2} / {:.2} ms) (groups of {})",
                    empty.per_second(),
                    empty.p50_us as f64 / 1e3,
                    empty.p99_us as f64 / 1e3,
                    by_size[0].0
                ),
                ratio(run.per_second(), empty.per_second()),
            ));
        }
        report.insert("sizes".into(), by_size.iter().map(|(size, run)| json!({"servers_per_group": size,
            "per_second": run.per_second(), "p50_us": run.p50_us, "p99_us": run.p99_us, "statuses": format!("{:?}", run.statuses)})).collect::<Vec<_>>().into());
    }
    if env("LOAD_CHURN", 1) > 0 {
        eprintln!("16 groups of 1000 servers, every call changing capacity...");
        let churn = Sized::start(1000, 16, true, seconds);
        let run = churn.drive(0, connections, seconds);
        churn.check(&run);
        eprintln!("  statuses {:?}", run.statuses);
        rows.push((
            "webhook p50 / p99, every call changing capacity, converger working (16 groups of ~1,000)".into(),
            format!("{:.2} / {:.2} ms ({:.0}/s)", run.p50_us as f64 / 1e3, run.p99_us as f64 / 1e3, run.per_second()),
            "p99 10 ms (target)".into(),
            "-".into(),
        ));
        report.insert(
            "churn".into(),
            json!({"per_second": run.per_second(), "p50_us": run.p50_us,
            "p99_us": run.p99_us, "statuses": format!("{:?}", run.statuses)}),
        );
    }

    if env("LOAD_FLOOD", 1) > 0 {
        eprintln!("the bad-signature flood...");
        let ((alone, alone_statuses), (flooded, flooded_statuses), flood) = flood(seconds);
        let at = |latencies: &[u64], q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .map_or(0.0, |us| *us as f64 / 1e3)
        };
        rows.push((
            "signed caller p50 / p99, under a bad-signature flood".into(),
            format!("{:.2} / {:.2} ms", at(&flooded, 0.5), at(&flooded, 0.99)),
            format!(
                "{:.2} / {:.2} ms (no flood)",
                at(&alone, 0.5),
                at(&alone, 0.99)
            ),
            ratio(at(&flooded, 0.99), at(&alone, 0.99)),
        ));
        rows.push((
            "bad-signature calls/s in that flood".into(),
            format!("{:.0}", flood.per_second()),
            format!("{:?}", flood.statuses),
            "-".into(),
        ));
        eprintln!("signed caller statuses: alone {alone_statuses:?}, flooded {flooded_statuses:?}");
        report.insert("flood".into(), json!({"signed_p99_ms": at(&flooded, 0.99), "signed_p99_ms_alone": at(&alone, 0.99),
            "signed_statuses": format!("{flooded_statuses:?}"), "signed_statuses_alone": format!("{alone_statuses:?}"),
            "flood_per_second": flood.per_second(), "flood_statuses": format!("{:?}", flood.statuses)}));
    }

    // Recovery: time to ready on a journal of N events (the raw journal scan as baseline).
    let mut recoveries = Vec::new();
    for events in recovery
        .split(',')
        .filter_map(|n| n.trim().parse::<u64>().ok())
    {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        eprintln!("writing a journal of {events} events...");
        journal_of(&data, events);
        let on_disk = bytes_under(&data);
        let scan = {
            let journal = Journal::open(&data).unwrap();
            let started = Instant::now();
            let n = journal.read_all(1).count();
            assert_eq!(n as u64, events);
            started.elapsed()
        };
        // The first start replays the whole journal and saves a checkpoint at its head; the
        // second starts from that checkpoint. Each is the `flotilla` binary, timed from its
        // spawn to ready and stopped as an operator would: a second start in this process
        // would also wait for the first's sled to let go of the directory (a large page table
        // freed, 0.3 s at 10M events), which a restarted process never does.
        wait_unlocked(&data);
        let first = Child::start(&data, &[]);
        let to_ready = first.ready_after;
        first.stop();
        let second = Child::start(&data, &[]);
        let from_checkpoint = second.ready_after;
        second.stop();
        rows.push((
            format!("ready with {events} events, full replay"),
            format!(
                "{:.2} s ({:.2} M events/s)",
                to_ready.as_secs_f64(),
                events as f64 / to_ready.as_secs_f64() / 1e6
            ),
            format!("{:.2} s (journal scan)", scan.as_secs_f64()),
            ratio(scan.as_secs_f64(), to_ready.as_secs_f64()),
        ));
        rows.push((
            format!("ready with {events} events, from a checkpoint"),
            format!("{:.3} s", from_checkpoint.as_secs_f64()),
            format!("{:.2} s (journal scan)", scan.as_secs_f64()),
            ratio(scan.as_secs_f64(), from_checkpoint.as_secs_f64()),
        ));
        rows.push((
            format!("data directory with {events} events"),
            format!(
                "{:.0} MiB ({:.0} bytes/event)",
                on_disk as f64 / f64::from(1 << 20),
                on_disk as f64 / events as f64
            ),
            "-".into(),
            "-".into(),
        ));
        recoveries.push(json!({"events": events, "ready_seconds": to_ready.as_secs_f64(),
            "ready_from_checkpoint_seconds": from_checkpoint.as_secs_f64(), "scan_seconds": scan.as_secs_f64(),
            "bytes_on_disk": on_disk}));
    }
    report.insert("recovery".into(), recoveries.into());

    let servers: usize = env("LOAD_SERVERS", 100_000);
    if servers > 0 {
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        eprintln!("{servers} simulated servers...");
        let (empty, full, took) = resident_servers(servers);
        eprintln!("  active after {:.1} s", took.as_secs_f64());
        rows.push((
            format!("RSS with {servers} active simulated servers"),
            format!(
                "{:.0} MiB ({:.0} MiB above empty)",
                mib(full),
                mib(full.saturating_sub(empty))
            ),
            format!("{:.0} MiB (the same binary, empty)", mib(empty)),
            format!(
                "{:.2} KiB per server",
                full.saturating_sub(empty) as f64 / 1024.0 / servers as f64
            ),
        ));
        report.insert(
            "servers_memory".into(),
            json!({"servers": servers, "rss_bytes": full,
            "empty_rss_bytes": empty, "active_in_seconds": took.as_secs_f64()}),
        );
    }

    if objects > 0 {
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let mut memory = Vec::new();
        for idle in [None, Some(5)] {
            eprintln!("creating {objects} groups, {objects} policies and {objects} alarms...");
            let (empty, full, took) = resident(objects, connections, idle);
            let when = match idle {
                None => "every actor resident".to_owned(),
                Some(s) => format!("after the idle actors stopped ({s} s)"),
            };
            rows.push((
                format!("RSS with {objects} groups + policies + alarms, {when}"),
                format!("{:.0} MiB", mib(full)),
                format!("{:.0} MiB (the same binary, empty)", mib(empty)),
                format!(
                    "{:.2} KiB per object",
                    (full - empty.min(full)) as f64 / 1024.0 / (3 * objects) as f64
                ),
            ));
            memory.push(
                json!({"objects_each": objects, "actor_idle_seconds": idle, "rss_bytes": full,
                "empty_rss_bytes": empty, "created_in_seconds": took.as_secs_f64()}),
            );
        }
        report.insert("memory".into(), memory.into());
    }

    println!("\n| figure | flotilla | baseline | ratio |\n| --- | --- | --- | --- |");
    for (name, value, baseline, r) in &rows {
        println!("| {name} | {value} | {baseline} | {r} |");
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load-report.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&Value::Object(report)).unwrap(),
    )
    .unwrap();
    println!("\nwritten to {}", path.display());
}
