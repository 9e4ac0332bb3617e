//! The real binary as operators run it: SIGKILL after acknowledged webhooks loses nothing, no
//! secret or signature reaches a log line, `webhook sign --send` drives a live service, and a
//! start after SIGTERM replays nothing.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;
use serde_json::{json, Value};

/// A `flotilla serve` child process; its stderr is collected.
struct Flotilla {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    client: Client,
}

impl Flotilla {
    fn start(data_dir: &Path) -> Flotilla {
        // The converger's first pass comes an hour after the start: the journal moves only by
        // the tests' own calls.
        Self::start_with(data_dir, &["--converge-tick-ms", "3600000"])
    }

    fn start_with(data_dir: &Path, args: &[&str]) -> Flotilla {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            let mut tx = Some(tx);
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line
                    .split("addr=")
                    .nth(1)
                    .filter(|_| line.contains("serving"))
                {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the service did not start");
        let server = Flotilla {
            child,
            base: format!("http://{addr}"),
            log,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .client
            .get(server.url("/readyz"))
            .send()
            .map_or(true, |r| r.status() != 200)
        {
            assert!(Instant::now() < deadline, "not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn hook(
        &self,
        url: &str,
        secret: &str,
        nonce: &str,
        timestamp: i64,
        body: &[u8],
    ) -> (u16, Value) {
        let key = flotilla::signature::key_of(secret).unwrap();
        let response = self
            .client
            .post(url)
            .header("webhook-id", nonce)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                flotilla::signature::sign(&key, nonce, timestamp, body),
            )
            .body(body.to_vec())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// SIGTERM, then waits at most `within` for the process to exit; its exit status.
    fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!(
                    "still running {within:?} after SIGTERM; its log:\n{}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20)); // a real process exiting
        }
    }

    fn kill(mut self) -> String {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // let the reader drain the pipe
        let log = self.log.lock().unwrap().clone();
        log
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Setup {
    token: String,
    group: String,
    policy: String,
    webhook: String,
    url: String,
    secret: String,
}

/// A tenant's token, created with the operator token `serve` wrote into `data_dir`.
fn tenant(server: &Flotilla, data_dir: &Path) -> String {
    let operator = std::fs::read_to_string(data_dir.join("operator.token")).unwrap();
    let (_, tenant) = server.call(
        "POST",
        "/v1/tenants",
        operator.trim(),
        Some(json!({"name": "acme"})),
    );
    tenant["token"].as_str().unwrap().to_owned()
}

fn setup(server: &Flotilla, data_dir: &Path) -> Setup {
    let token = tenant(server, data_dir);
    let (_, group) = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(
            json!({"name": "web", "min_size": 0, "max_size": 50, "cooldown_seconds": 0,
                    "launch": {"provider": "simulated"}}),
        ),
    );
    let group = group["id"].as_str().unwrap().to_owned();
    let (_, policy) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies"),
        &token,
        Some(json!({"name": "up", "adjustment_type": "change", "adjustment": 1})),
    );
    let policy = policy["id"].as_str().unwrap().to_owned();
    let (_, webhook) = server.call(
        "POST",
        &format!("/v1/groups/{group}/policies/{policy}/webhooks"),
        &token,
        Some(json!({"name": "cpu"})),
    );
    Setup {
        token,
        url: webhook["url"].as_str().unwrap().to_owned(),
        secret: webhook["secret"].as_str().unwrap().to_owned(),
        webhook: webhook["id"].as_str().unwrap().to_owned(),
        group,
        policy,
    }
}

#[test]
fn kill_9_after_acknowledged_webhooks_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Flotilla::start(dir.path());
    let s = setup(&server, dir.path());
    let ts = now();
    for n in 0..3 {
        let (status, body) = server.hook(&s.url, &s.secret, &format!("msg_{n}"), ts, b"{}");
        assert_eq!(status, 202, "{body}");
    }
    server.kill();

    let server = Flotilla::start(dir.path());
    let url = server.url(&format!("/v1/hooks/{}", s.webhook)); // a new port
    let (status, group) = server.call("GET", &format!("/v1/groups/{}", s.group), &s.token, None);
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["desired_capacity"], 3);
    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{}/activity", s.group),
        &s.token,
        None,
    );
    let executed = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == "executed")
        .count();
    assert_eq!(executed, 3);
    // The nonce window came back from the journal: a replay is still refused.
    let (status, body) = server.hook(&url, &s.secret, "msg_1", ts, b"{}");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("replayed"))
    );
    let (status, _) = server.hook(&url, &s.secret, "msg_3", ts, b"{}");
    assert_eq!(status, 202);
    server.kill();
}

#[test]
fn no_secret_token_or_signature_reaches_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Flotilla::start(dir.path());
    let s = setup(&server, dir.path());
    let rotate = format!(
        "/v1/groups/{}/policies/{}/webhooks/{}/rotate",
        s.group, s.policy, s.webhook
    );
    let (_, rotated) = server.call("POST", &rotate, &s.token, None);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let ts = now();
    let key = flotilla::signature::key_of(&new_secret).unwrap();
    let signature = flotilla::signature::sign(&key, "msg_logged", ts, b"{}");
    assert_eq!(
        server.hook(&s.url, &new_secret, "msg_logged", ts, b"{}").0,
        202
    );
    assert_eq!(
        server.hook(&s.url, &new_secret, "msg_logged", ts, b"{}").0,
        409
    );
    let forged = server.hook(
        &s.url,
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "msg_x",
        ts,
        b"{}",
    );
    assert_eq!(forged.0, 401);
    let operator = std::fs::read_to_string(dir.path().join("operator.token")).unwrap();
    let log = server.kill();
    assert!(
        log.contains("operator token written"),
        "the log says where the token went"
    );
    assert!(log.lines().count() > 10, "trace logging was on: {log}");
    let secrets = [
        s.secret.as_str(),
        &s.secret["whsec_".len()..],
        new_secret.as_str(),
        &new_secret["whsec_".len()..],
        &signature,
        &signature["v1,".len()..],
        s.token.as_str(),
        operator.trim(),
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
}

#[test]
fn webhook_sign_prints_a_request_and_sends_one_that_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Flotilla::start(dir.path());
    let s = setup(&server, dir.path());
    let printed = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "webhook",
            "sign",
            "--secret",
            &s.secret,
            "--nonce",
            "msg_cli",
            "--timestamp",
            "1700000000",
            "--body",
            r#"{"a":1}"#,
        ])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).unwrap();
    let key = flotilla::signature::key_of(&s.secret).unwrap();
    let expected = flotilla::signature::sign(&key, "msg_cli", 1_700_000_000, br#"{"a":1}"#);
    assert!(
        text.contains(&format!("webhook-signature: {expected}")),
        "{text}"
    );

    let sent = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["webhook", "sign", "--secret", &s.secret, "--send", &s.url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(out.starts_with("202"), "{out}");
    let bad = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["webhook", "sign", "--secret", "not-a-secret"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    server.kill();
}

fn flotilla(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn audit_and_replay_read_through_a_running_service_with_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = Flotilla::start(dir.path());
    let s = setup(&server, dir.path());
    let ts = now();
    assert_eq!(server.hook(&s.url, &s.secret, "msg_a", ts, b"{}").0, 202);
    let operator = std::fs::read_to_string(dir.path().join("operator.token")).unwrap();
    let op = operator.trim();
    let data = dir.path().to_str().unwrap();

    let verify = flotilla(&["audit", "verify", "--url", &server.base, "--token", op]);
    assert!(verify.status.success(), "{verify:?}");
    let remote_verify = String::from_utf8(verify.stdout).unwrap();
    assert!(remote_verify.starts_with("ok: "), "{remote_verify}");
    let log_remote = flotilla(&[
        "audit",
        "log",
        "--url",
        &server.base,
        "--token",
        op,
        "--object",
        &s.group,
    ]);
    assert!(log_remote.status.success(), "{log_remote:?}");
    let replay_remote = flotilla(&["replay", "--url", &server.base, "--token", op]);
    assert!(replay_remote.status.success(), "{replay_remote:?}");
    let export_remote = flotilla(&[
        "journal",
        "export",
        "--url",
        &server.base,
        "--token",
        op,
        "--out",
        "-",
    ]);
    assert!(export_remote.status.success(), "{export_remote:?}");
    let refused = flotilla(&[
        "audit",
        "verify",
        "--url",
        &server.base,
        "--token",
        &s.token,
    ]);
    assert_eq!(refused.status.code(), Some(2));
    // The data directory is locked while the service runs.
    let locked = flotilla(&["audit", "verify", "--data-dir", data]);
    assert_eq!(locked.status.code(), Some(2));
    server.kill();

    let verify = flotilla(&["audit", "verify", "--data-dir", data]);
    assert_eq!(String::from_utf8(verify.stdout).unwrap(), remote_verify);
    let log_local = flotilla(&["audit", "log", "--data-dir", data, "--object", &s.group]);
    assert_eq!(log_local.stdout, log_remote.stdout);
    assert!(String::from_utf8_lossy(&log_local.stdout).contains("policy_executed"));
    let replay_local = flotilla(&["replay", "--data-dir", data]);
    assert_eq!(replay_local.stdout, replay_remote.stdout);
    let export_local = flotilla(&["journal", "export", "--data-dir", data, "--out", "-"]);
    assert_eq!(
        export_local.stdout, export_remote.stdout,
        "export --url is the same export"
    );
    let world: Value = serde_json::from_slice(&replay_local.stdout).unwrap();
    assert_eq!(world["groups"][&s.group]["desired_capacity"], 1);
    assert_eq!(world["webhooks"][&s.webhook]["secret"], "[redacted]");
    let hook_log = flotilla(&["audit", "log", "--data-dir", data, "--object", &s.webhook]);
    let hook_log = String::from_utf8(hook_log.stdout).unwrap();
    assert!(
        hook_log.contains("[redacted]") && !hook_log.contains(&s.secret),
        "{hook_log}"
    );
}

#[test]
fn sigterm_stops_the_service_without_waiting_for_a_provider_call_under_way() {
    // An orchestrator that takes connections and never answers: each launch waits its full
    // timeout, and retries.
    let orchestrator = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/servers", orchestrator.local_addr().unwrap());
    let data_dir = tempfile::tempdir().unwrap();
    let server = Flotilla::start_with(data_dir.path(), &["--converge-tick-ms", "10"]);
    let token = tenant(&server, data_dir.path());
    let (status, body) = server.call(
        "POST",
        "/v1/groups",
        &token,
        Some(json!({"name": "web", "min_size": 1, "max_size": 1,
                    "launch": {"provider": "http", "url": url, "secret": "whsec_QUFBQQ==",
                               "timeout_ms": 60000, "retries": 10}})),
    );
    assert_eq!(status, 201, "{body}");
    // The launch is under way once the orchestrator is called.
    let (_held, _) = orchestrator.accept().unwrap();
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

/// A graceful stop saves a checkpoint at the journal's head and flushes its files, so the next
/// start replays nothing, though the checkpointer's own interval (an hour here) never came.
#[test]
fn a_start_after_sigterm_replays_nothing() {
    let data_dir = tempfile::tempdir().unwrap();
    let args = [
        "--converge-tick-ms",
        "3600000",
        "--checkpoint-interval-ms",
        "3600000",
    ];
    let server = Flotilla::start_with(data_dir.path(), &args);
    let setup = setup(&server, data_dir.path());
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");

    let again = Flotilla::start_with(data_dir.path(), &args);
    let (status, group) = again.call(
        "GET",
        &format!("/v1/groups/{}", setup.group),
        &setup.token,
        None,
    );
    assert_eq!(status, 200, "{group}");
    let log = again.kill();
    let serving = log
        .lines()
        .find(|line| line.contains("journal replayed; serving"))
        .unwrap();
    assert!(serving.contains(" records=0 "), "{serving}");
    assert!(!serving.contains(" checkpoint_seq=0 "), "{serving}");
}
